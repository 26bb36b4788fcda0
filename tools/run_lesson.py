"""Run a lesson notebook headless, top to bottom, the way `make lesson` does.

    python tools/run_lesson.py nbs/lessons/01_pets.ipynb [--out runs/]

Cells marked `#| eval: false` (the Colab setup cell) are skipped, as under the tests. The executed notebook, with
all its outputs and plots, is saved to runs/<lesson>.ipynb. The lesson's final model, which it exports with
`lessonkit.colab.export_final`, goes to runs/<lesson>/export.pth. At the end the runner prints the lesson's key
results (it records them with `lessonkit.colab.record_results`), the exported model's path and the wall time.
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


def _shown(path: Path) -> str:
    "A path relative to the current folder when it is inside it (what `make lesson` users see), else absolute."
    try: return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError: return str(path.resolve())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "runs")
    a = ap.parse_args()
    nb_path, out = a.notebook.resolve(), a.out.resolve()  # absolute: the lesson runs in its own folder
    out.mkdir(parents=True, exist_ok=True)
    dest, results = out / nb_path.name, out / f"{nb_path.stem}.results.json"
    run_dir = out / nb_path.stem  # what the lesson keeps: its final model
    final = run_dir / "export.pth"
    results.unlink(missing_ok=True); final.unlink(missing_ok=True)  # never report a previous run's files
    os.environ["LESSONKIT_RESULTS"] = str(results)
    os.environ["LESSONKIT_RUN_DIR"] = str(run_dir)
    os.environ.setdefault("MPLBACKEND", "Agg")
    nb = NBProcessor(nb_path, process=True).nb
    print(f"Running {_shown(nb_path)} headless (this takes a few minutes on a CPU)...", flush=True)
    start = time.time()
    shell = CaptureShell(nb_path)
    sys.path.insert(0, str(ROOT))
    cwd = Path.cwd()
    os.chdir(nb_path.parent)
    try: shell.run_all(nb, exc_stop=True, preproc=_skip)
    except Exception:
        sys.stderr.write(shell.prettytb(fname=nb_path) + "\n")
        write_nb(nb, dest)
        sys.exit(f"The lesson failed; the notebook as far as it ran is saved to {dest}")
    finally: os.chdir(cwd)
    secs = time.time() - start
    write_nb(nb, dest)
    print(f"\nExecuted notebook saved to {_shown(dest)}")
    if results.exists():
        from lessonkit.colab import results_table
        print("Key results:\n" + results_table(json.loads(results.read_text())).text())
    if final.exists():
        print(f"Final model exported to {_shown(final)} ({final.stat().st_size / 2**20:.1f} MB); load it with "
              f"lessonkit.inference.load_learner({_shown(final)!r})")
    else: print("(This lesson exports no final model: it does not call lessonkit.colab.export_final.)")
    print(f"Wall time: {secs:.0f} s")


if __name__ == "__main__": main()
