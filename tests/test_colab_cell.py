"""The Colab setup cell at the top of each lesson: the same in all four, skipped by the tests, and in a (simulated)
Colab it clones the course's repository, installs that folder without touching torch, and points lessonkit at the
clone's sample data, so that sample mode works in a CPU-only Colab runtime too.

The simulation: a stand-in `google.colab` module, `/content` replaced by a temporary folder, the GitHub URL by this
repository's own path (git clones it for real), and pip's install recorded instead of run (it would replace this
environment's editable lessonkit).
"""
import json, os, subprocess, sys, types
from pathlib import Path
from unittest import mock

from lessonkit.datasets import sample_path

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "nbs" / "lessons").glob("*.ipynb"))
REPO_URL = "https://github.com/lessonkit/lessonkit"


def _setup_cell(nb: Path) -> dict:
    cells = [c for c in json.loads(nb.read_text())["cells"]
             if c["cell_type"] == "code" and "Colab setup:" in "".join(c["source"])]
    assert len(cells) == 1, f"{nb.name}: expected one Colab setup cell, found {len(cells)}"
    return cells[0]


def test_setup_cell_is_first_identical_and_skipped():
    sources = []
    for nb in LESSONS:
        cells = json.loads(nb.read_text())["cells"]
        first_code = next(c for c in cells if c["cell_type"] == "code"   # nbdev's `#| default_exp` cell may come first
                          and not "".join(c["source"]).startswith("#| default_exp"))
        cell = _setup_cell(nb)
        assert cell == first_code, f"{nb.name}: the Colab setup cell must be the first code cell"
        src = "".join(cell["source"])
        assert src.startswith("#| eval: false\n"), f"{nb.name}: the setup cell must not run under the tests"
        assert "skip-execution" in cell["metadata"].get("tags", []), nb.name
        sources.append(src)
    assert len(LESSONS) == 4 and len(set(sources)) == 1, "the four lessons' Colab setup cells differ"
    assert REPO_URL in sources[0]


def test_setup_cell_in_simulated_colab(tmp_path, monkeypatch, capsys):
    src = "".join(_setup_cell(LESSONS[0])["source"])
    content = tmp_path / "content"; content.mkdir()
    src = src.replace(REPO_URL, ROOT.as_uri()).replace("/content", str(content))
    real_run, calls = subprocess.run, []

    def run(cmd, *a, **k):
        calls.append(list(map(str, cmd)))
        if cmd[0] == "git": return real_run(cmd, *a, **k)   # a real clone of this repository
        return subprocess.CompletedProcess(cmd, 0)             # pip: recorded, not run

    monkeypatch.setenv("LESSONKIT_SAMPLES", "")   # unset for the cell to set; restored after the test
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))  # only this key is undone
    with mock.patch("subprocess.run", run):
        exec(compile(src, "colab_setup_cell", "exec"), {})
        clone = content / "lessonkit"
        assert [c[0] for c in calls] == ["git", sys.executable], calls
        assert calls[1][1:] == ["-m", "pip", "install", "-q", str(clone)], calls[1]   # the folder; no torch named
        assert (clone / "pyproject.toml").is_file() and (clone / "lessonkit" / "__init__.py").is_file()
        assert os.environ["LESSONKIT_SAMPLES"] == f"{clone}/data"
        assert sample_path("pets") == clone / "data" / "pets"   # sample mode finds the clone's data
        calls.clear()
        exec(compile(src, "colab_setup_cell", "exec"), {})      # run again: no second clone
        assert [c[0] for c in calls] == [sys.executable], calls
    out = capsys.readouterr().out
    assert "torch" in out and "GPU" in out   # setup_notebook printed the versions and the GPU line
