"""Every notebook in nbs/ is a test, run by nbdev's test runner's rules (so `#| eval: false` and `tst_flags` are
honoured), one pytest test per notebook so CI lists each one. Plus: notebooks and the exported package agree, notebooks
are clean. Each lesson that passes is saved, executed, to runs/ (as `make lesson` saves it): the course website
(tools/build_site.py, tests/test_site.py) shows those copies instead of running the lessons a second time."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
from nbdev.config import get_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from run_lesson import RUNS, execute, save_executed  # noqa: E402  (nbdev.test.test_nb's rules, keeping the outputs)
NBS = sorted(p for p in (ROOT / "nbs").rglob("*.ipynb")
             if ".ipynb_checkpoints" not in p.parts and not p.name.startswith(("_", ".")))


@pytest.mark.parametrize("nb", NBS, ids=[str(p.relative_to(ROOT / "nbs")) for p in NBS])
def test_notebook(nb, monkeypatch):
    cfg = get_config(path=ROOT)  # by keyword: positional use silently drops tst_flags
    monkeypatch.setenv("IN_TEST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # Cells flagged with a tst_flag (e.g. `#| slow`) are skipped unless named in $LESSONKIT_NB_FLAGS.
    ok, secs, executed, err = execute(nb, skip_flags=cfg.tst_flags.split(),
                                      force_flags=os.environ.get("LESSONKIT_NB_FLAGS", "").split())
    print(f"{nb.name}: {secs:.1f}s")
    assert ok, f"{nb.relative_to(ROOT)} failed:\n{err}"
    if nb.parent.name == "lessons": save_executed(executed, RUNS / nb.name)


def _copy_repo(tmp_path):
    dst = tmp_path / "repo"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".venv", ".git", "data", "__pycache__", "runs", "*.egg-info"))
    return dst


def test_package_matches_notebooks(tmp_path):
    "nbdev_export on the notebooks must reproduce lessonkit/ exactly: the package is never edited by hand."
    repo = _copy_repo(tmp_path)
    shutil.rmtree(repo / "lessonkit")
    subprocess.run([Path(sys.executable).with_name("nbdev_export")], cwd=repo, check=True)
    exported = {p.relative_to(repo / "lessonkit"): p.read_text() for p in (repo / "lessonkit").rglob("*.py")}
    committed = {p.relative_to(ROOT / "lessonkit"): p.read_text() for p in (ROOT / "lessonkit").rglob("*.py")}
    assert exported.keys() == committed.keys(), "run nbdev_export: modules differ " \
        f"(only in notebooks: {sorted(map(str, exported.keys() - committed.keys()))}, " \
        f"only in lessonkit/: {sorted(map(str, committed.keys() - exported.keys()))})"
    stale = sorted(str(k) for k in exported if exported[k] != committed[k])
    assert not stale, f"lessonkit/ is out of sync with nbs/ in {stale}: edit the notebook, then run nbdev_export"


def test_notebooks_are_clean(tmp_path):
    "nbdev_clean must change nothing: no outputs, execution counts or stray metadata are committed."
    repo = _copy_repo(tmp_path)
    subprocess.run([Path(sys.executable).with_name("nbdev_clean")], cwd=repo, check=True)
    dirty = [str(p.relative_to(repo)) for p in (repo / "nbs").rglob("*.ipynb")
             if p.read_bytes() != (ROOT / p.relative_to(repo)).read_bytes()]
    assert not dirty, f"run nbdev_clean, then commit: {dirty}"
