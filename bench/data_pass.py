"""data_pass: images per second of one full pass (train + valid) over the Pets images at 128 px, batch 64, with the
standard augmentation on the training batches, on the CPU: lessonkit's DataLoaders against fastai's ImageDataLoaders
doing the same pass in the same run, interleaved, each run in a fresh process (see /work/shared/notes/benchmarks.md).

- cold: from nothing decoded (building the loaders, which lists, labels and splits the files, then the pass);
- warm: a later pass (epochs 2-4, the fastest of the three). lessonkit decodes once and keeps uint8 tensors; fastai decodes every epoch;
- restart: lessonkit only, a new process with disk_cache=True after another process filled the disk cache.

Both sides: the same files, regex labels, valid_pct=0.2 with seed 42, crop-resize to 128 px, aug_transforms(), bs 64,
torch.set_num_threads(<cores>). Each tool runs with num_workers 0 and 2 (fastai: DataLoader worker processes;
lessonkit: decoding threads; lessonkit also 4). The headline compares lessonkit's default setting with fastai's
fastest setting. The operating system's file cache is warmed first so that no run pays for the disk.

fastai lives in its own folder (bench/.fastai, git-ignored), installed with pip --target on first use: its fastcore
pin clashes with nbdev's, so it must never be installed into .venv. Its side runs in a subprocess of .venv's python
with PYTHONPATH=bench/.fastai first, so that fastai's fastcore shadows ours.

Run from the repository root:  .venv/bin/python bench/data_pass.py [--repeats 3] [--path FOLDER]
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FASTAI_DIR = ROOT / "bench" / ".fastai"
# What fastai 2.8 needs beyond .venv (torch, torchvision, numpy, pillow, matplotlib, pyyaml, requests, packaging are
# there). fastprogress 1.0.3: later versions pull in python-fasthtml and a web server. spacy is left out: fastai's
# vision modules do not import it.
FASTAI_PKGS = ["fastai==2.8.12", "fastcore==2.2.39", "fastdownload==0.0.8", "fastprogress==1.0.3", "fasttransform==0.0.5",
               "plum-dispatch==2.9.0", "beartype==0.23.1", "rich==15.0.0", "markdown-it-py==4.3.0", "pandas==3.1.1",
               "scikit-learn==1.9.1", "scipy==1.17.1", "joblib==1.6.0", "threadpoolctl==3.8.0", "cloudpickle==3.1.2",
               "narwhals==2.29.0"]
SIZE, BS, PAT = 128, 64, r"^(.+)_\d+\.jpg$"
SHARED = Path("/work/shared/data/oxford-iiit-pet/images")


def cores() -> int:
    try: return len(os.sched_getaffinity(0))
    except AttributeError: return os.cpu_count() or 1


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration): pass
    return f"{cores()} cores, {cpu}, gpu none (CPU run)"


def ensure_fastai():
    if (FASTAI_DIR / "fastai").is_dir(): return
    print(f"Installing fastai into {FASTAI_DIR} (one time) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(FASTAI_DIR),
                    *FASTAI_PKGS], check=True)


# ---------------------------------------------------------------------------------- one measurement, in a fresh process
def _pass(dls) -> int:
    n = 0
    for x, y in dls.train: n += len(x)
    for x, y in dls.valid: n += len(x)
    return n


def _warm(dls, passes: int = 3) -> dict:
    "The fastest of `passes` further passes (later epochs): the least disturbed by other work on a shared machine."
    times = []
    for _ in range(passes):
        t0 = time.perf_counter(); n = _pass(dls); times.append(time.perf_counter() - t0)
    return {"warm_s": min(times), "n_warm": n}


def worker_lessonkit(path: Path, workers: int, disk_cache: bool) -> dict:
    import torch
    torch.set_num_threads(cores())
    from lessonkit.augment import aug_transforms
    from lessonkit.data import ImageDataLoaders, get_image_files
    t0 = time.perf_counter()
    dls = ImageDataLoaders.from_name_re(path, get_image_files(path), PAT, valid_pct=0.2, seed=42, size=SIZE, bs=BS,
                                        item_resize="crop", batch_tfms=aug_transforms(), device="cpu",
                                        num_workers=workers, disk_cache=disk_cache, progress=False)
    n = _pass(dls); cold = time.perf_counter() - t0
    return {"n": n, "cold_s": cold, **_warm(dls)}


def worker_fastai(path: Path, workers: int) -> dict:
    import warnings; warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(cores())
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, get_image_files
    t0 = time.perf_counter()
    dls = ImageDataLoaders.from_name_re(path, get_image_files(path), PAT, valid_pct=0.2, seed=42,
                                        item_tfms=Resize(SIZE), batch_tfms=aug_transforms(), bs=BS,
                                        num_workers=workers, device=torch.device("cpu"))
    n = _pass(dls); cold = time.perf_counter() - t0
    return {"n": n, "cold_s": cold, **_warm(dls)}


def run_worker(tool: str, path: Path, workers: int, disk_cache: bool = False, home: str | None = None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if tool == "fastai": env["PYTHONPATH"] = os.pathsep.join([str(FASTAI_DIR), str(ROOT)])
    else: env["PYTHONPATH"] = str(ROOT)
    if home: env["LESSONKIT_HOME"] = home
    cmd = [sys.executable, __file__, "--worker", tool, "--path", str(path), "--workers", str(workers)]
    if disk_cache: cmd.append("--disk-cache")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if r.returncode: raise RuntimeError(f"{tool} worker failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------------ driver
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--path", type=Path, default=None)
    ap.add_argument("--worker", choices=["lessonkit", "fastai"])
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--disk-cache", action="store_true")
    ap.add_argument("--max-load", type=float, default=1.0, help="before each repeat, wait (up to 120 s) until the "
                    "1-minute load average is below this: the machines are shared")
    a = ap.parse_args()
    path = a.path or (SHARED if SHARED.is_dir() else ROOT / "data/pets/images")
    if a.worker == "lessonkit": print(json.dumps(worker_lessonkit(path, a.workers, a.disk_cache))); return
    if a.worker == "fastai": print(json.dumps(worker_fastai(path, a.workers))); return

    ensure_fastai()
    files = sorted(path.glob("*.jpg"))
    for f in files: f.read_bytes()                       # warm the OS file cache for everyone
    sys.path.insert(0, str(ROOT))
    from lessonkit.data import default_num_workers
    lk_default = default_num_workers()
    configs = [("lessonkit", 0), ("fastai", 0), ("lessonkit", 2), ("fastai", 2), ("lessonkit", 4)]
    res: dict[str, list[dict]] = {f"{t}_w{w}": [] for t, w in configs}
    res["lessonkit_restart"] = []
    loads = []
    for rep in range(a.repeats):
        t_wait = time.time()
        while os.getloadavg()[0] > a.max_load and time.time() - t_wait < 120: time.sleep(5)
        loads.append(round(os.getloadavg()[0], 2))
        for tool, w in configs:                            # interleaved: A B A B ...
            r = run_worker(tool, path, w); res[f"{tool}_w{w}"].append(r)
            print(f"rep {rep + 1}: {tool:9} workers={w}: cold {r['n'] / r['cold_s']:6.0f} img/s, "
                  f"warm {r['n_warm'] / r['warm_s']:6.0f} img/s", file=sys.stderr)
        with tempfile.TemporaryDirectory() as home:        # disk cache filled by one process, used by the next
            run_worker("lessonkit", path, lk_default, disk_cache=True, home=home)
            r = run_worker("lessonkit", path, lk_default, disk_cache=True, home=home)
            res["lessonkit_restart"].append(r)
            print(f"rep {rep + 1}: lessonkit restart with disk cache: {r['n'] / r['cold_s']:6.0f} img/s", file=sys.stderr)

    speeds = lambda rs, k: [r["n" if k == "cold" else "n_warm"] / r[f"{k}_s"] for r in rs]
    table = {name: {"cold_img_s": round(statistics.median(speeds(rs, "cold")), 1),
                    "warm_img_s": round(statistics.median(speeds(rs, "warm")), 1),
                    "cold_best": round(max(speeds(rs, "cold")), 1), "warm_best": round(max(speeds(rs, "warm")), 1)}
             for name, rs in res.items() if rs}
    best_fastai = max((n for n in table if n.startswith("fastai")), key=lambda n: table[n]["cold_img_s"])
    lk_key = f"lessonkit_w{lk_default}" if f"lessonkit_w{lk_default}" in table else "lessonkit_w2"
    lk, fa = table[lk_key]["cold_img_s"], table[best_fastai]["cold_img_s"]
    out = {
        "bench": "data_pass", "unit": "img/s", "lower_is_better": False,
        "lessonkit": lk, "fastai": fa, "floor": None,
        "ratio_vs_fastai": round(lk / fa, 2), "ratio_vs_floor": None,
        "n": a.repeats, "machine": machine(),
        "details": {
            "what": "one full pass (train+valid) from nothing decoded: build the loaders, then iterate; CPU",
            "data": str(path), "images": len(files), "size": SIZE, "bs": BS, "torch_threads": cores(),
            "headline": f"lessonkit default ({lk_key}) vs fastai's fastest setting ({best_fastai}), cold pass",
            "warm_ratio_vs_fastai": round(table[lk_key]["warm_img_s"] / table[best_fastai]["warm_img_s"], 2),
            "medians": table,
            "lessonkit_default_num_workers": lk_default,
            "floor": "none: a data pass has no model; 'warm' is lessonkit's steady state (augmenting cached tensors)",
            "fastai_version": "2.8.12",
            "load_avg_1min_at_each_repeat": loads,
            "note": "medians of interleaved runs on a shared 2-core machine; *_best is the fastest run of each",
        },
    }
    (ROOT / "bench/results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench/results/data_pass.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
