"""Run a lesson notebook headless, top to bottom, the way `make lesson` does.

    python tools/run_lesson.py nbs/lessons/01_pets.ipynb [--out runs/]

Cells marked `#| eval: false` (the Colab setup cell) are skipped, as under the tests. The executed notebook, with
all its outputs and plots, is saved to runs/<lesson>.ipynb; the lesson's key results (it records them with
`lessonkit.colab.record_results`) and the wall time are printed at the end.
"""
import argparse, json, os, sys, time
from pathlib import Path

from execnb.nbio import write_nb
from execnb.shell import CaptureShell
from nbdev.process import NBProcessor

ROOT = Path(__file__).resolve().parents[1]


def _skip(cell) -> bool:
    "Skip markdown, and code cells the lesson marks `#| eval: false` (nbdev's own rule)."
    if cell.cell_type != "code": return True
    direc = getattr(cell, "directives_", {}) or {}
    return direc.get("eval:", [""])[0].lower() == "false"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "runs")
    a = ap.parse_args()
    nb_path = a.notebook.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    dest, results = a.out / nb_path.name, a.out / f"{nb_path.stem}.results.json"
    results.unlink(missing_ok=True)
    os.environ["LESSONKIT_RESULTS"] = str(results)
    os.environ.setdefault("MPLBACKEND", "Agg")
    nb = NBProcessor(nb_path, process=True).nb
    print(f"Running {nb_path.relative_to(ROOT)} headless (this takes a few minutes on a CPU)...", flush=True)
    start = time.time()
    shell = CaptureShell(nb_path)
    sys.path.insert(0, str(ROOT))
    os.chdir(nb_path.parent)
    try: shell.run_all(nb, exc_stop=True, preproc=_skip)
    except Exception:
        sys.stderr.write(shell.prettytb(fname=nb_path) + "\n")
        write_nb(nb, dest)
        sys.exit(f"The lesson failed; the notebook as far as it ran is saved to {dest}")
    secs = time.time() - start
    write_nb(nb, dest)
    print(f"\nExecuted notebook saved to {dest}")
    if results.exists():
        print("Key results:")
        for k, v in json.loads(results.read_text()).items(): print(f"  {k}: {v}")
    print(f"  wall time: {secs:.0f} s")


if __name__ == "__main__": main()
