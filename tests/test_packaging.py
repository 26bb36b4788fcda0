"""`pip install lessonkit` for practitioners: the wheel built from this repository holds every module and nothing
else, asks for torch/torchvision with lower bounds only (never a pin that would replace Colab's or a user's torch),
keeps the notebook tooling out of its requirements, and works on its own: imported from the wheel (not this
checkout), with no nbdev, fastcore or Jupyter kernel, it trains a learner on a few real images and predicts."""
import email, os, shutil, subprocess, sys, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("src") / "lessonkit"
    # from a copy of the sources, so that setuptools' build/ and egg-info folders never land in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "data", "runs", "build", "*.egg-info",
                                                                  "__pycache__", ".fastai", ".gpu_wheels", "artifacts"))
    # --no-build-isolation: use the setuptools already installed (this machine has no general internet)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, cwd=out)
    (whl,) = out.glob("lessonkit-*.whl")
    return whl


def test_wheel_contents_and_requirements(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = email.message_from_bytes(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    modules = {n for n in names if n.endswith(".py")}
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "lessonkit").rglob("*.py")}
    assert modules == expected, (sorted(modules ^ expected))
    assert not [n for n in names if n.startswith(("nbs/", "tests/", "data/", "bench/", "tools/"))]
    import lessonkit
    assert meta["Version"] == lessonkit.__version__
    base = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    names_ = {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in base}
    assert {"torch", "torchvision"} <= names_ and not names_ & {"nbdev", "fastcore", "execnb", "pytest", "voila"}, base
    for r in base:
        assert "==" not in r and "<" not in r, f"runtime requirement with an upper bound or pin: {r}"


def test_wheel_works_without_the_notebook_tooling(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site),
                    str(wheel)], check=True)
    pets = sorted((ROOT / "data" / "pets" / "images").glob("*.jpg"))
    cats = [p for p in pets if p.name[0].isupper()][:24]
    dogs = [p for p in pets if p.name[0].islower()][:24]
    code = f"""
import sys
sys.modules['nbdev'] = sys.modules['fastcore'] = sys.modules['execnb'] = None   # importing any of them now fails
import lessonkit, torch
from lessonkit.data import DataLoaders
from lessonkit.learner import vision_learner
from lessonkit.metrics import accuracy
from lessonkit.core import set_seed
import lessonkit.augment, lessonkit.inference, lessonkit.interpret, lessonkit.widgets, lessonkit.colab, lessonkit.datasets
import lessonkit.lessons.vehicles, lessonkit.lessons.caltech101
assert lessonkit.__file__.startswith({str(site)!r}), lessonkit.__file__
set_seed(0)
files = {[str(p) for p in cats + dogs]!r}
labels = ['cat'] * {len(cats)} + ['dog'] * {len(dogs)}
dls = DataLoaders.from_lists('/', files, labels, valid_pct=0.25, seed=0, size=64, bs=12, device='cpu')
learn = vision_learner(dls, 'mobilenet_v2', metrics=accuracy)
learn.fit_one_cycle(2, 3e-3)
losses = learn.recorder.losses
assert sum(losses[-3:]) < sum(losses[:3]), losses
label, idx, probs = learn.predict(files[0])
assert label in ('cat', 'dog') and abs(float(probs.sum()) - 1) < 1e-5
print('ok', lessonkit.__file__)
"""
    env = {**os.environ, "PYTHONPATH": str(site), "IN_TEST": "1", "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[-1].startswith("ok " + str(site)), r.stdout   # after the epoch table
