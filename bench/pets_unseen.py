"""How good is the Pets lesson's final model on Pets photos it has never seen?

    python bench/pets_unseen.py [--seeds 0 1 2] [--src ../shared/data] [--jobs 1]

`data/build.py` keeps one photo of each of the 37 breeds out of `data/pets` (`pets_split`: 37 photos, listed in
data/README.md). For each seed this script runs the lesson `nbs/lessons/01_pets.ipynb` in sample mode, in a fresh
process (execnb's CaptureShell, as tests/test_full_mode.py runs lessons; `$LESSONKIT_SEED` sets the training seed,
the validation split stays the lesson's own), takes the lesson's final learner (`learn`) from the shell's namespace,
and classifies the held-out originals with the learner's own `dls.test_dl` + `get_preds` path (decoded and resized
as the learner's validation images are). The lesson's hidden claims cell is left out: claims are
tools/check_claims.py's job; this script measures.

It needs the shared originals (`--src`), which CI does not have: it is a benchmark, not a test. The last line
printed is one JSON object (/work/shared/notes/benchmarks.md), also written to bench/results/pets_unseen.json;
"lessonkit" is the median accuracy over the seeds, and the target is >= 0.70 on the median and on every seed.
"""
from __future__ import annotations
import argparse, importlib.util, json, os, re, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, PETS_PAT, load1, median, result, write_result  # noqa: E402

LESSON = ROOT / "nbs" / "lessons" / "01_pets.ipynb"
LEARNING = "# Learning checks"
TARGET = 0.70


def _default_src() -> Path:
    "../shared/data next to the repository (a worktree under /work/wt/<name> has it two levels up)."
    near, far = ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data"
    return near if near.is_dir() or not far.is_dir() else far


def held_out(src: Path) -> list[Path]:
    "The held-out originals, chosen by data/build.py (the one place that decides what data/ holds)."
    spec = importlib.util.spec_from_file_location("data_build", ROOT / "data" / "build.py")
    build = importlib.util.module_from_spec(spec); spec.loader.exec_module(build)
    files = build.pets_split(src)[1]
    bundled = {p.name for p in (ROOT / "data" / "pets" / "images").glob("*.jpg")}
    leaked = sorted(p.name for p in files if p.name in bundled)
    if leaked: sys.exit(f"{len(leaked)} held-out photos are in data/pets/images (e.g. {leaked[:3]}): rebuild data/ with "
                        "`python data/build.py --only pets` before measuring.")
    if not files: sys.exit(f"No held-out photos found under {src}/oxford-iiit-pet/images.")
    return files


def worker(seed: int, src: Path) -> dict:
    "Run the lesson under `seed` in this process and measure its final learner on the held-out photos."
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor

    files = held_out(src)
    work = Path(tempfile.mkdtemp(prefix="pets_unseen_"))
    os.environ.update(LESSONKIT_MODE="sample", LESSONKIT_SEED=str(seed), MPLBACKEND="Agg",
                      LESSONKIT_RESULTS=str(work / "results.json"))
    os.environ.pop("LESSONKIT_CLAIMS", None)
    os.chdir(work)  # the lesson writes runs/... relative to the working directory

    def preproc(cell) -> bool:
        "Skip markdown, `#| eval: false` cells (the Colab set-up) and the claims cell; run everything else."
        if cell.cell_type != "code": return True
        if (getattr(cell, "directives_", {}) or {}).get("eval:", [""])[0].lower() == "false": return True
        return LEARNING in cell.source

    nb = NBProcessor(LESSON, process=True).nb
    shell = CaptureShell(LESSON)
    t0 = time.time(); c0 = time.process_time()
    try: shell.run_all(nb, exc_stop=True, preproc=preproc)
    except Exception: sys.exit(f"The lesson failed under seed {seed}:\n{shell.prettytb(fname=LESSON)}")
    lesson_s, lesson_cpu = time.time() - t0, time.process_time() - c0
    learn = shell.user_ns["learn"]
    probs = learn.get_preds(dl=learn.dls.test_dl(files))[0]
    predicted = [learn.dls.classes[i] for i in probs.argmax(1).tolist()]
    actual = [re.match(PETS_PAT, p.name).group(1) for p in files]
    wrong = [{"file": p.name, "actual": a, "predicted": b} for p, a, b in zip(files, actual, predicted) if a != b]
    correct = len(files) - len(wrong)
    return {"seed": seed, "accuracy": round(correct / len(files), 4), "correct": correct, "n": len(files),
            "arch": shell.user_ns.get("BIG_ARCH"), "image_size": learn.dls.size[0],
            "valid_accuracy": shell.user_ns.get("final_acc"), "lesson_wall_s": round(lesson_s, 1),
            "lesson_cpu_s": round(lesson_cpu, 1), "wrong": wrong}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--src", type=Path, default=_default_src())
    ap.add_argument("--jobs", type=int, default=1, help="seeds run at once (on a shared machine: its share grows)")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # one seed, in this process
    a = ap.parse_args()
    if not (a.src / "oxford-iiit-pet" / "images").is_dir():
        sys.exit(f"{a.src}/oxford-iiit-pet/images not found: this benchmark needs the shared Pets originals (--src).")
    if a.worker is not None:
        print(json.dumps(worker(a.worker, a.src.resolve())))
        return
    n_held = len(held_out(a.src))
    per_seed, loads = {}, []
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    start = lambda seed: subprocess.Popen([sys.executable, __file__, "--worker", str(seed), "--src", str(a.src.resolve())],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    todo, running = list(a.seeds), []
    while todo or running:  # one fresh process per seed: nothing cached or seeded carries over from another run
        while todo and len(running) < max(1, a.jobs):
            loads.append(load1()); seed = todo.pop(0); running.append((seed, start(seed)))
        seed, proc = running.pop(0)
        out, err = proc.communicate()
        if proc.returncode: sys.exit(f"seed {seed} failed:\n{(out + err)[-4000:]}")
        per_seed[str(seed)] = json.loads(out.strip().splitlines()[-1])
        s = per_seed[str(seed)]
        print(f"seed {seed}: {s['correct']}/{s['n']} = {s['accuracy']:.3f} on unseen photos "
              f"(validation {s['valid_accuracy']}, lesson {s['lesson_wall_s']} s wall, {s['lesson_cpu_s']} s cpu)",
              file=sys.stderr, flush=True)
    accs = [s["accuracy"] for s in per_seed.values()]
    med = median(accs)
    details = {"what": f"accuracy of the Pets lesson's final learner (sample mode) on the {n_held} held-out Pets "
                       "originals (one per breed, never in data/), one lesson run per training seed",
               "target": f">= {TARGET} median and on every seed", "target_met": med >= TARGET and min(accs) >= TARGET,
               "min": min(accs), "max": max(accs), "one_image_is": round(1 / n_held, 4), "seeds": a.seeds, "jobs": a.jobs,
               "load_1min_at_start": loads, "per_seed": per_seed}
    out = result("pets_unseen", "accuracy", False, med, None, None, len(accs), details)
    write_result(out)
    print(json.dumps(out))


if __name__ == "__main__": main()
