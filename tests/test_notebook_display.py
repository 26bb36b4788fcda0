"""What a learner sees: lessonkit's figures, tables and LR-finder results in a real Jupyter kernel, and in a lesson
run headless by `tools/run_lesson.py` (what `make lesson` calls).

The module notebooks run under nbdev's test runner, which is not a Jupyter kernel: it cannot show whether a figure
reaches the page once, twice, or as the text `<Figure size ...>`. The first test runs a notebook through a real
IPython kernel (ipykernel, driven by nbclient: the messages JupyterLab, Notebook, Colab and Voila receive), with
matplotlib's defaults (the inline backend, not yet set up when the first figure is drawn) and without the test
flags, as a user's notebook runs, and counts what each cell shows. The second runs a small lesson through the
headless runner and checks the executed copy and what the runner prints, including the exported final model.
"""
import os, subprocess, sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"

SETUP = f"""
import re
from pathlib import Path
from lessonkit.core import set_seed
from lessonkit.data import DataLoaders
from lessonkit.learner import vision_learner
from lessonkit.interpret import ClassificationInterpretation
from lessonkit.colab import record_results
set_seed(0)
files = sorted(Path({str(ROOT / "data" / "pets" / "images")!r}).glob("[A-B]*.jpg"))
dls = DataLoaders.from_name_re(files[0].parent, files, r"^(.+)_\\d+\\.jpg$", valid_pct=0.25, size=32, bs=8, seed=0)
"""

# (code, PNG pictures the cell must show). Every picture must appear exactly once: a figure drawn by the call and
# shown again as the cell's value, or printed as text, fails.
CELLS = [
    (SETUP, 0),
    ("dls.show_batch(n=4)", 1),                     # the first figure of the notebook (issue #18: it was text)
    ("dls.show_batch(n=4);", 1),                    # `;` hides the value, not the figure
    ("fig = dls.show_batch(n=4)\nprint('assigned')", 1),
    ("learn = vision_learner(dls, 'mobilenet_v2')\nlearn.fit_one_cycle(2)", 1),   # the live loss plot, updated in place
    ("learn.recorder.plot_loss()\nlearn.recorder.plot_metrics()", 2),             # two figures, in this order
    ("fig = learn.recorder.plot_lr()\nfig.axes[0].set_title('changed')\nfig", 1),  # changed, then shown once
    ("fig", 1),                                                                   # shown again when asked again
    ("res = learn.lr_find(num_it=8)", 1),
    ("learn.lr_find(num_it=8)", 1),
    ("interp = ClassificationInterpretation.from_learner(learn)\ninterp.plot_top_losses(4)\ninterp.plot_confusion_matrix()", 2),
    ("record_results({'mode': 'sample', 'frozen': {'image_size': 32, 'accuracy': 0.5, 'train_seconds': 12.34}},\n"
     "               source={'frozen': {'accuracy': 0.9}});", 0),
    ("record_results({'accuracy': 0.5})", 0),
    ("interp.per_class()", 0),
    ("from lessonkit.widgets import mistakes_browser\nb = mistakes_browser(interp)\nb", 0),  # a widget, not a picture
    ("import matplotlib.pyplot as plt\nplt.plot([1, 2]);", 1),  # now pyplot has set up the inline backend ...
    ("dls.show_batch(n=4)", 1),                                 # ... and a lessonkit figure still shows once
]


def _pictures(cell) -> list[dict]:
    "The outputs that show a picture (a widget's bundle carries a fallback picture, but the widget is what shows)."
    return [o for o in cell.outputs if "image/png" in o.get("data", {}) and WIDGET not in o.get("data", {})]


def _text(o) -> str:
    return o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")


def test_figures_and_tables_show_once_in_a_jupyter_kernel():
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code) for code, _ in CELLS]
    env = {k: v for k, v in os.environ.items() if k not in ("IN_TEST", "PYTEST_CURRENT_TEST", "MPLBACKEND")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(ROOT)}}).execute(env=env)

    for cell, (code, n) in zip(nb.cells, CELLS):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{code!r} raised: {errors[0].get('ename')}: {errors[0].get('evalue')}"
        assert len(_pictures(cell)) == n, f"{code!r} shows {len(_pictures(cell))} pictures, not {n}: {cell.outputs}"
        for o in cell.outputs:
            assert "LRFindResult(" not in _text(o), f"{code!r} prints a raw repr: {_text(o)}"
            if "image/png" not in o.get("data", {}):
                assert "<Figure size" not in _text(o), f"{code!r} shows a figure as text: {_text(o)}"

    by_code = {code: cell for cell, (code, _) in zip(nb.cells, CELLS)}
    cell = lambda start: next(c for c, (code, _) in zip(nb.cells, CELLS) if code.startswith(start))
    fit = cell("learn = vision_learner")
    tables = [o for o in fit.outputs if "text/html" in o.get("data", {})]
    assert len(tables) == 1 and "<td>1</td>" in tables[0].data["text/html"], "one epoch table, updated to 2 epochs"
    assert "s</td>" in tables[0].data["text/html"]  # the time column in seconds
    for code in ("res = learn.lr_find(num_it=8)", "learn.lr_find(num_it=8)"):
        shown = [o for o in by_code[code].outputs if WIDGET not in o.get("data", {})]  # not the progress bar
        assert [sorted(o.data)[0] for o in shown] == ["image/png", "text/html"], (code, shown)  # the plot, then the table
        html = shown[1].data["text/html"]
        assert "valley" in html and "steep" in html and "minimum" in html
    for start in ("record_results({'mode'", "record_results({'accuracy'", "interp.per_class()"):
        tables = [o for o in cell(start).outputs if "text/html" in o.get("data", {})]
        assert len(tables) == 1 and tables[0].data["text/html"].startswith("<table"), (start, cell(start).outputs)
    steps = [o for o in cell("record_results({'mode'").outputs if "text/html" in o.get("data", {})][0].data["text/html"]
    assert "<th>accuracy (source)</th>" in steps and "<td>32</td>" in steps and "<td>12.3s</td>" in steps

    # Progress bars: the LR finder's counts its steps and, like every bar here, does not end in the error state.
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()
    bars = [m["state"] for m in state if m["model_name"] == "FloatProgressModel"]
    labels = [m["state"].get("value", "").replace("\u2007", " ") for m in state if m["model_name"] == "HTMLModel"]
    assert bars and not [b for b in bars if b.get("bar_style") == "danger"], [b.get("bar_style") for b in bars]
    assert any(l.startswith("LR finder") for l in labels), labels  # tqdm writes spaces as U+2007


LESSON = SETUP + """
from lessonkit.colab import export_final
learn = vision_learner(dls, 'mobilenet_v2', path='runs/tiny')   # untrained: what is exported does not matter here
"""


def test_run_lesson_keeps_outputs_and_exports_the_final_model(tmp_path):
    lesson = tmp_path / "lessons" / "09_tiny.ipynb"
    lesson.parent.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in [
        LESSON, "dls.show_batch(n=4);",
        "record_results({'mode': 'sample', 'frozen': {'image_size': 32, 'accuracy': 0.5}}, source={'frozen': {'accuracy': 0.9}});",
        "export_final(learn);"]]
    nbformat.write(nb, lesson)
    env = {k: v for k, v in os.environ.items() if k not in ("IN_TEST", "PYTEST_CURRENT_TEST")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = tmp_path / "runs"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "run_lesson.py"), str(lesson), "--out", str(out)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    final = out / "09_tiny" / "export.pth"
    assert final.is_file()
    assert f"Final model exported to {final.relative_to(tmp_path)}" in run.stdout, run.stdout
    assert "Key results:\nmode sample\nstep    image_size  accuracy\n" in run.stdout, run.stdout  # as a table
    assert "frozen          32    0.5000" in run.stdout, run.stdout
    executed = nbformat.read(out / "09_tiny.ipynb", as_version=4)
    show_batch, results, export = executed.cells[1:]
    assert len(_pictures(show_batch)) == 1
    tables = [o for o in results.outputs if "text/html" in o.get("data", {})]
    assert len(tables) == 1 and "<td>0.9000</td>" in tables[0].data["text/html"], results.outputs  # `;` lost it before
    assert "The final model is saved to" in "".join(_text(o) for o in export.outputs)
    from lessonkit.inference import load_learner
    test_files = sorted((ROOT / "data" / "pets" / "images").glob("[A-B]*.jpg"))
    assert load_learner(final).classes == sorted({p.name.rsplit("_", 1)[0] for p in test_files})
