"""What the benchmarks in bench/ share: where fastai lives and how it is installed, the machine description, the
cores, running one measurement in a fresh subprocess (with fastai's folder first on PYTHONPATH for fastai's side),
the load average, and writing a result (see /work/shared/notes/benchmarks.md).

The fastai pins are the ones bench/data_pass.py uses (keep the two lists the same).
"""
from __future__ import annotations
import json, os, platform, statistics, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FASTAI_DIR = ROOT / "bench" / ".fastai"
RESULTS = ROOT / "bench" / "results"
FASTAI_VERSION = "2.8.12"
# What fastai 2.8 needs beyond .venv (torch, torchvision, numpy, pillow, matplotlib, pyyaml, requests, packaging are
# there). fastprogress 1.0.3: later versions pull in python-fasthtml and a web server. spacy is left out: fastai's
# vision modules do not import it. Installed with --no-deps into bench/.fastai, never into .venv (fastcore clash).
FASTAI_PKGS = [f"fastai=={FASTAI_VERSION}", "fastcore==2.2.39", "fastdownload==0.0.8", "fastprogress==1.0.3",
               "fasttransform==0.0.5", "plum-dispatch==2.9.0", "beartype==0.23.1", "rich==15.0.0",
               "markdown-it-py==4.3.0", "pandas==3.1.1", "scikit-learn==1.9.1", "scipy==1.17.1", "joblib==1.6.0",
               "threadpoolctl==3.8.0", "cloudpickle==3.1.2", "narwhals==2.29.0"]
PETS_PAT = r"^(.+)_\d+\.jpg$"
SHARED_PETS = Path("/work/shared/data/oxford-iiit-pet/images")


def cores() -> int:
    "CPU cores this process may use."
    try: return len(os.sched_getaffinity(0))
    except AttributeError: return os.cpu_count() or 1


def machine() -> str:
    "'<cores> cores, <cpu model>, gpu none (CPU run)'."
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration): pass
    return f"{cores()} cores, {cpu}, gpu none (CPU run)"


def pets_path(path: Path | None = None) -> Path:
    "The full Pets images if this machine has them, else the bundled sample."
    return Path(path) if path else (SHARED_PETS if SHARED_PETS.is_dir() else ROOT / "data/pets/images")


def ensure_fastai():
    "Install the pinned fastai into bench/.fastai on first use."
    if (FASTAI_DIR / "fastai").is_dir(): return
    print(f"Installing fastai into {FASTAI_DIR} (one time) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(FASTAI_DIR),
                    *FASTAI_PKGS], check=True)


def load1() -> float:
    "The 1-minute load average."
    return round(os.getloadavg()[0], 2)


def run_worker(script: str | Path, tool: str, args: list[str], env_extra: dict | None = None) -> dict:
    """Run `script --worker tool *args` in a fresh process of this Python and return the JSON of its last stdout line.
    fastai's side gets bench/.fastai first on PYTHONPATH, so that fastai's fastcore shadows the one nbdev needs."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(FASTAI_DIR), str(ROOT)] if tool == "fastai" else [str(ROOT)])
    r = subprocess.run([sys.executable, str(script), "--worker", tool, *args], env=env, capture_output=True, text=True,
                       cwd=ROOT)
    if r.returncode: raise RuntimeError(f"{tool} worker {args} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rnd(x, nd: int = 3):
    return None if x is None else round(x, nd)


def result(bench: str, unit: str, lower_is_better: bool, lessonkit, fastai, floor, n: int, details: dict) -> dict:
    "The result object of benchmarks.md (ratios computed here)."
    ratio = lambda a, b: None if a is None or not b else round(a / b, 3)
    return {"bench": bench, "unit": unit, "lower_is_better": lower_is_better,
            "lessonkit": rnd(lessonkit), "fastai": rnd(fastai), "floor": rnd(floor),
            "ratio_vs_fastai": ratio(lessonkit, fastai), "ratio_vs_floor": ratio(lessonkit, floor),
            "n": n, "machine": machine(), "details": details}


def write_result(out: dict, folder: Path = RESULTS) -> Path:
    "Write `out` to `folder/<bench>.json` (through a temporary file, so a killed run leaves the old result)."
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / f"{out['bench']}.json"
    tmp = f.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, f)
    return f
