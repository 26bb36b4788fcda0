"""Full mode, the lessons' Colab path, run on the CPU with stand-ins, so that no full-mode-only line can rot unseen.

Full mode itself needs a GPU, the internet and hours of CPU time; none of that is here. This test runs every lesson
with `LESSONKIT_MODE=full` around the stand-ins of tools/full_mode.py (shared with bench/gpu_check.py, which runs the
same lessons on a GPU): a few bundled images per class laid out as the real archives extract, random weights under
torchvision's file names, and a line after the parameter cell that shrinks sizes and epochs.

With random weights nothing useful is learnt, so the cells that check learning (they start with
`# Learning checks`) are left out; every other cell runs, including the consistency checks (reloaded predictions
identical, submission format, early stopping's restored epoch, ...). The test then checks that every cell ran
without error and that the lesson recorded full mode with the source's architecture.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from full_mode import FULL_ARCH, LESSONS, LessonFailed, assigned, layout, random_weights, run_full_mode, unknown_names  # noqa: E402


@pytest.mark.parametrize("lesson", sorted(FULL_ARCH))
def test_shrink_sets_only_the_lessons_parameters(lesson):
    "Fast, and run first: a name the shrink line sets that the parameter cell does not would shrink nothing."
    from nbdev.process import NBProcessor
    unknown = unknown_names(lesson, NBProcessor(LESSONS / f"{lesson}.ipynb", process=True).nb)
    assert not unknown, (f"the shrink line of {lesson} sets {unknown}, which the lesson's parameter cell does not: the "
                         "lesson renamed or dropped them. Update SHRINK_SIZES / SHRINK_EPOCHS in tools/full_mode.py.")
    assert assigned("%time X = 1\nA = B = 1; C, D = 2, 3\nE: int = 4") == {"A", "B", "C", "D", "E"}


@pytest.fixture(scope="module")
def full_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("full_mode")
    vehicles = layout(root / "home")
    random_weights(root / "torch")
    return {"home": root / "home", "torch": root / "torch", "vehicles": vehicles}


@pytest.mark.parametrize("lesson", sorted(FULL_ARCH))
def test_lesson_full_mode(lesson, full_env, tmp_path):
    try: run = run_full_mode(lesson, full_env["home"], full_env["torch"], full_env["vehicles"], tmp_path)
    except LessonFailed as e: pytest.fail(str(e))
    assert run["shrunk"] == 1, "the parameter cell (the one calling lesson_mode()) was not found exactly once"
    assert run["left_out"] >= 1 and run["ran"] > 10, run
    results = run["results"]
    assert results is not None, "the lesson recorded no results (record_results was not reached)"
    assert results["mode"] == "full", results
    assert results["arch"] == FULL_ARCH[lesson], results
