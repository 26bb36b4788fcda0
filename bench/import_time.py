"""import_time: seconds to import lessonkit with all its modules, against the floor `import torch, torchvision` (which
lessonkit needs anyway) and fastai's `from fastai.vision.all import *`, each in a fresh Python process, interleaved
(floor, lessonkit, fastai, floor, ...), medians of --repeats runs (see /work/shared/notes/benchmarks.md).

The time is measured inside the fresh process around the import statement, so the interpreter's own start-up is left
out. The headline numbers are the importing process's CPU time (user + system, `time.process_time`): on a shared,
busy machine the wall-clock time of an import swings by a factor of two between runs (waiting for a core and for the
disk), while its CPU time stays put; on a quiet machine the two agree. Wall-clock medians are in `details` too
(`--clock wall` makes them the headline). "All modules" means every module of the package (found with pkgutil, so new modules count too). The worker also
reports whether timm or huggingface_hub got imported: they must not be (timm is imported only when a timm model is
asked for). Issue 16 asks for lessonkit to stay within 0.5 s of the floor: `details.lessonkit_minus_floor_s`.

fastai lives in bench/.fastai (installed there on first use, never into .venv); --no-fastai skips it.

Run from the repository root:  .venv/bin/python bench/import_time.py [--repeats 7] [--no-fastai] [--clock cpu|wall]
"""
import argparse, json, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, ensure_fastai, load1, median, result, rnd, run_worker, write_result

IMPORTS = {  # what each side imports, timed in the worker
    "floor": "import torch, torchvision",
    "lessonkit": "import importlib, pkgutil, lessonkit\n"
                 "for m in pkgutil.walk_packages(lessonkit.__path__, 'lessonkit.'): importlib.import_module(m.name)",
    "fastai": "from fastai.vision.all import *",
}


def worker(tool: str):
    t, c = time.perf_counter(), time.process_time()
    exec(IMPORTS[tool], {})
    secs, cpu = time.perf_counter() - t, time.process_time() - c
    mods = sorted(m for m in sys.modules if m == "lessonkit" or m.startswith("lessonkit."))
    print(json.dumps({"secs": secs, "cpu": cpu, "timm": "timm" in sys.modules, "huggingface_hub": "huggingface_hub" in sys.modules,
                      "lessonkit_modules": len(mods)}))


def main(a):
    tools = ["floor", "lessonkit"] + ([] if a.no_fastai else ["fastai"])
    if not a.no_fastai: ensure_fastai()
    for tool in tools: run_worker(__file__, tool, [])  # warm the file cache: the first import reads everything from disk
    runs, loads = {t: [] for t in tools}, []
    for i in range(a.repeats):
        for tool in tools[i % len(tools):] + tools[:i % len(tools)]:  # interleaved, starting with another tool each round
            runs[tool].append(run_worker(__file__, tool, []))
        loads.append(load1())
    wall = {t: [r["secs"] for r in runs[t]] for t in tools}
    cpu = {t: [r["cpu"] for r in runs[t]] for t in tools}
    secs = cpu if a.clock == "cpu" else wall
    lk, floor = median(secs["lessonkit"]), median(secs["floor"])
    diffs = [a_ - b_ for a_, b_ in zip(secs["lessonkit"], secs["floor"])]  # paired by round
    out = result("import_time", "s", True, lk, median(secs.get("fastai", [])), floor, a.repeats, {
        "clock": "process CPU time" if a.clock == "cpu" else "wall clock",
        "lessonkit_minus_floor_s": rnd(lk - floor), "paired_difference_median_s": rnd(median(diffs)),
        "limit_s": 0.5, "within_limit": lk - floor <= 0.5,
        "wall_median_s": {t: rnd(median(v)) for t, v in wall.items()},
        "cpu_median_s": {t: rnd(median(v)) for t, v in cpu.items()},
        "timm_imported": any(r["timm"] for r in runs["lessonkit"]),
        "huggingface_hub_imported": any(r["huggingface_hub"] for r in runs["lessonkit"]),
        "lessonkit_modules": runs["lessonkit"][0]["lessonkit_modules"],
        "runs_wall_s": {t: [rnd(x) for x in v] for t, v in wall.items()},
        "runs_cpu_s": {t: [rnd(x) for x in v] for t, v in cpu.items()},
        "imports": IMPORTS, "load_1min": loads, "python": sys.version.split()[0]})
    write_result(out)
    print(json.dumps(out))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-fastai", action="store_true", help="leave fastai out")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="the headline numbers' clock")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker: worker(a.worker)
    else: main(a)
