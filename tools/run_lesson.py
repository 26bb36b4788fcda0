"""Run a lesson notebook headless, top to bottom, the way `make lesson` does.

    python tools/run_lesson.py nbs/lessons/01_pets.ipynb [--out runs/]

Cells marked `#| eval: false` (the setup cell) are skipped, as under the tests. The executed notebook, with all its
outputs and plots, is saved to runs/<lesson>.ipynb. The lesson's final model, which it exports with
`lessonkit.colab.export_final`, goes to runs/<lesson>/export.pth. At the end the runner prints the lesson's key
results (it records them with `lessonkit.colab.record_results`), the exported model's path and the wall time.

The functions here are shared with tests/test_notebooks.py (which saves the lessons it runs to runs/ the same way)
and, through tools/executed.py, tools/build_site.py (which shows those copies on the course website while fresh).
"""
import argparse, json, os, sys, time
from pathlib import Path

from execnb.nbio import write_nb
from execnb.shell import CaptureShell
from fastcore.basics import AttrDict
from fastcore.xtras import working_directory
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from nbdev.process import NBProcessor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from executed import RUNS, source_digest  # noqa: E402  (which executed copies are fresh: tools/executed.py)


class HeadlessShell(CaptureShell):
    """execnb's headless shell, except that a cell ending in `;` keeps what it printed: like Jupyter, the `;` only
    hides the cell's value (execnb 0.1 drops the printed text too, e.g. a results table printed by `record_results`).
    Not named `Shell`: `lessonkit.core.in_notebook` takes a shell of that name for Colab's, where widgets render."""
    def _run(self, raw_cell, store_history=False, silent=False, shell_futures=True, cell_id=None,
             stdout=True, stderr=True, display=True, verbose=False):
        with capture_output(display=display, stdout=stdout and not verbose, stderr=stderr and not verbose) as c:
            result = InteractiveShell.run_cell(self, raw_cell, store_history, silent, shell_futures=shell_futures,
                                               cell_id=cell_id)
        return AttrDict(result=result, stdout=c.stdout, stderr=c.stderr, display_objects=c.outputs,
                        exception=result.error_in_exec or result.error_before_exec,
                        quiet=raw_cell.rstrip().endswith(";"))


def execute(nb_path: Path, skip_flags=(), force_flags=()) -> tuple[bool, float, object, str]:
    """Run `nb_path` top to bottom in this process by nbdev's test runner's rules (`#| eval: false` cells, cells
    calling `nbdev_export(` and cells flagged with one of `skip_flags` but not `force_flags` are skipped), keeping
    the outputs: returns (ok, seconds, the executed notebook, the traceback text if it failed). Unlike nbdev's
    runner it keeps the title cell (nbdev's frontmatter processor would take it out); no notebook here uses
    nbdev's `skip_exec` frontmatter."""
    nb_path = Path(nb_path).resolve()
    flags = set(skip_flags) - set(force_flags)
    digest = source_digest(nb_path)
    nb = NBProcessor(nb_path, process=True).nb
    nb.metadata["lessonkit"] = {"source_digest": digest, "complete": False}

    def skip(cell) -> bool:
        if cell.cell_type != "code" or "nbdev_export" + "(" in cell.source: return True
        direc = getattr(cell, "directives_", {}) or {}
        return direc.get("eval:", [""])[0].lower() == "false" or bool(flags & direc.keys())

    shell, start, err = HeadlessShell(nb_path), time.time(), ""
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
    try:
        with working_directory(nb_path.parent): shell.run_all(nb, exc_stop=True, preproc=skip)
    except Exception: err = shell.prettytb(fname=nb_path) or "failed"
    secs = time.time() - start
    nb.metadata["lessonkit"].update(complete=not err, seconds=round(secs, 1))
    return not err, secs, nb, err


def save_executed(nb, dest: Path) -> Path:
    "Write an executed notebook (atomically: a reader never sees half a file)."
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    write_nb(nb, tmp)
    os.replace(tmp, dest)
    return dest


def _shown(path: Path) -> str:
    "A path relative to the current folder when it is inside it (what `make lesson` users see), else absolute."
    try: return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError: return str(path.resolve())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--out", type=Path, default=RUNS)
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
    print(f"Running {_shown(nb_path)} headless (this takes a few minutes on a CPU)...", flush=True)
    ok, secs, nb, err = execute(nb_path)
    save_executed(nb, dest)
    if not ok:
        sys.stderr.write(err + "\n")
        sys.exit(f"The lesson failed; the notebook as far as it ran is saved to {_shown(dest)}")
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
