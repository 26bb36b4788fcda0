"""The setup cell at the top of each lesson: the same in all four, skipped by the tests, and in a (simulated) Colab it
clones the course's repository, installs that folder without touching torch, and points lessonkit at the clone's
sample data, so that sample mode works in a CPU-only Colab runtime too. A failed clone stops with what happened and
what to do; a lessonkit that is already installed (e.g. from a wheel) is used as it is; outside Colab and Kaggle the
cell prints one line.

The simulation: a stand-in `google.colab` module, the working directory (Colab's /content) a temporary folder,
`LESSONKIT_REPO` pointing at this repository's own path (git clones it for real), "lessonkit is not installed" by
hiding its distribution from importlib.metadata, and pip's install recorded instead of run (it would replace this
environment's editable lessonkit).
"""
import importlib.metadata, json, os, subprocess, sys, types
from pathlib import Path
from unittest import mock

import pytest

import lessonkit.colab
from lessonkit.datasets import sample_path

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "nbs" / "lessons").glob("*.ipynb"))
MARK = "Colab/Kaggle setup:"


def _setup_cell(nb: Path) -> dict:
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code" and MARK in "".join(c["source"])]
    assert len(cells) == 1, f"{nb.name}: expected one setup cell, found {len(cells)}"
    return cells[0]


def _code_cells(nb: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]


def test_setup_cell_is_first_identical_and_skipped():
    sources = []
    for nb in LESSONS:
        cells = json.loads(nb.read_text())["cells"]
        first_code = next(c for c in cells if c["cell_type"] == "code"   # nbdev's `#| default_exp` cell may come first
                          and not "".join(c["source"]).startswith("#| default_exp"))
        cell = _setup_cell(nb)
        assert cell == first_code, f"{nb.name}: the setup cell must be the first code cell"
        src = "".join(cell["source"])
        assert src.startswith("#| eval: false\n"), f"{nb.name}: the setup cell must not run under the tests"
        assert "skip-execution" in cell["metadata"].get("tags", []), nb.name
        sources.append(src)
    assert len(LESSONS) == 4 and len(set(sources)) == 1, "the four lessons' setup cells differ"
    assert "import lessonkit" not in sources[0].split("from lessonkit.colab")[0], "lessonkit is imported before it is installed"


@pytest.fixture
def colab(tmp_path, monkeypatch):
    "A simulated Colab: run the setup cell with `cell(installed=...)`; returns the commands it ran."
    content = tmp_path / "content"; content.mkdir()
    monkeypatch.chdir(content)
    monkeypatch.setenv("LESSONKIT_REPO", ROOT.as_uri())
    monkeypatch.setenv("LESSONKIT_SAMPLES", "")   # unset for the cell to set; restored after the test
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))  # only this key is undone
    src = "".join(_setup_cell(LESSONS[0])["source"])
    real_run, real_dists, calls = subprocess.run, importlib.metadata.distributions, []

    def run(cmd, *a, **k):
        calls.append(list(map(str, cmd)))
        if cmd[0] == "git": return real_run(cmd, *a, **k)   # a real clone
        return subprocess.CompletedProcess(cmd, 0)             # pip: recorded, not run

    def cell(installed: bool):
        dists = real_dists if installed else lambda **k: iter(()) if k.get("name") == "lessonkit" else real_dists(**k)
        calls.clear()
        with mock.patch("subprocess.run", run), mock.patch("importlib.metadata.distributions", dists):
            exec(compile(src, "setup_cell", "exec"), {})
        return calls

    cell.clone = content / "lessonkit"
    return cell


def test_setup_cell_in_simulated_colab(colab, capsys):
    clone = colab.clone
    calls = colab(installed=False)
    assert [c[0] for c in calls] == ["git", sys.executable], calls
    assert calls[0][-2:] == [ROOT.as_uri(), str(clone)], calls[0]                    # LESSONKIT_REPO names the repository
    assert calls[1][1:] == ["-m", "pip", "install", "-q", str(clone)], calls[1]   # the folder; no torch named
    assert (clone / "pyproject.toml").is_file() and (clone / "lessonkit" / "__init__.py").is_file()
    assert os.environ["LESSONKIT_SAMPLES"] == f"{clone}/data"
    assert sample_path("pets") == clone / "data" / "pets"   # sample mode finds the clone's data
    assert [c[0] for c in colab(installed=False)] == [sys.executable]   # run again: no second clone
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(l.startswith("lessonkit ") and "in Colab" in l for l in out), out   # one line a run


@pytest.mark.parametrize("runtime", ["colab", "kaggle"])
def test_failed_clone_says_what_to_do(colab, monkeypatch, runtime):
    if runtime == "kaggle":   # Kaggle: no google.colab module, its own environment variable
        monkeypatch.delitem(sys.modules, "google.colab")
        monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("LESSONKIT_REPO", (ROOT / "no-such-repository").as_uri())
    with pytest.raises(RuntimeError) as e: colab(installed=False)
    msg = str(e.value)
    assert "git clone" in msg and "no-such-repository" in msg    # what happened, with git's own reason
    assert "does not exist" in msg or "not found" in msg.lower() or "not appear" in msg, msg
    assert "LESSONKIT_REPO" in msg and "zip" in msg and "internet" in msg and str(colab.clone) in msg   # what to do
    assert not colab.clone.exists()


def test_installed_lessonkit_is_used_as_it_is(colab, capsys):
    calls = colab(installed=True)   # this environment's lessonkit counts as installed, as a wheel would
    assert calls == [], calls          # no clone, no pip
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(f"lessonkit {lessonkit.__version__} · torch"), out


def test_installed_without_sample_data_says_where_to_get_it(colab, capsys, monkeypatch):
    monkeypatch.setattr(lessonkit.colab, "_has_samples", lambda: False)   # as from a wheel, with no repository around
    colab(installed=True)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "LESSONKIT_SAMPLES" in out[1] and ROOT.as_uri() in out[1], out


def test_outside_colab_one_line(monkeypatch, tmp_path):
    "In a local Jupyter the setup cell and Vehicles' Drive cell show one short line each, and nothing else (no dict)."
    from execnb.shell import CaptureShell   # runs code as a notebook does: the last expression's value is shown
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.chdir(tmp_path)
    drive = [s for s in _code_cells(ROOT / "nbs" / "lessons" / "03_vehicles.ipynb") if "mount_drive" in s]
    assert len(drive) == 1 and drive[0].startswith("#| eval: false\n"), drive
    shell = CaptureShell()
    with mock.patch("subprocess.run", side_effect=AssertionError("no command runs outside Colab")):
        setup_out = shell.run("".join(_setup_cell(LESSONS[0])["source"]))
    shell.run("FULL = True")
    for outs in (setup_out, shell.run(drive[0])):
        assert [o["output_type"] for o in outs] == ["stream"], outs
        text = "".join(outs[0]["text"])
        assert text.count("\n") == 1 and len(text) < 140, text
    assert "".join(setup_out[0]["text"]).startswith(f"lessonkit {lessonkit.__version__} · torch"), setup_out
    assert "".join(outs[0]["text"]).startswith("Google Drive: not mounted (not in Colab"), outs
