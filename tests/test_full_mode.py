"""Full mode, the lessons' Colab path, run on the CPU with stand-ins, so that no full-mode-only line can rot unseen.

Full mode itself needs a GPU, the internet and hours of CPU time; none of that is here. This test runs every lesson
with `LESSONKIT_MODE=full` and changes only three things around it:

- the datasets: a few images per class from the bundled samples, laid out the way the real archives extract
  (`$LESSONKIT_HOME/data/oxford-iiit-pet/images`, `cifar10/{train,test}/<class>`, `caltech_101/<class>`), so the
  lessons' own `untar_data(URLs...)` calls find them as if downloaded; for Vehicles, `DATA_PATH` points to a copy of
  the bundled stand-in in the hackathon's layout;
- the pretrained weights: ResNet-34, ResNet-50 and VGG-16 with random weights, saved in `$TORCH_HOME` under
  torchvision's own file names, so the full-mode architectures load as if downloaded;
- sizes and epochs: a line run right after the parameter cell shrinks them (SHRINK below).

With random weights nothing useful is learnt, so the cells that check learning (they start with
`# Learning checks`) are left out; every other cell runs, including the consistency checks (reloaded predictions
identical, submission format, early stopping's restored epoch, ...). The test then checks that every cell ran
without error and that the lesson recorded full mode with the source's architecture.
"""
import csv, json, shutil
from pathlib import Path

import pytest
import torch
import torchvision
from execnb.shell import CaptureShell
from nbdev.process import NBProcessor

from lessonkit.models import arch_spec

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
LESSONS = ROOT / "nbs" / "lessons"
LEARNING = "# Learning checks"
SHRINK = {
    "01_pets": "SIZE = BIG_SIZE = 64; EPOCHS = FT_EPOCHS = BIG_EPOCHS = BIG_FT_EPOCHS = 1; LR_FIND_STEPS = 4",
    "02_cifar10": "BIG = 48; PLAIN_EPOCHS = EPOCHS = FINE_EPOCHS = 1; FIND_ITERS = FIND_ITERS_UNFROZEN = 4",
    "03_vehicles": "SIZE = 64; EPOCHS = UNFROZEN_EPOCHS = FINE_EPOCHS = 1; LR_FIND_ITERS = 4; "
                   "MAX_EPOCHS, PATIENCE = 2, 1; DATA_PATH = {vehicles!r}",
    "04_caltech101": "SIZE = 64; MAX_EPOCHS, PATIENCE = 2, 1",
}
FULL_ARCH = {"01_pets": "resnet34", "02_cifar10": "resnet50", "03_vehicles": "resnet50", "04_caltech101": "vgg16"}


def _layout(home: Path) -> Path:
    "The bundled samples, a few images per class, where full mode looks for the downloaded datasets."
    d = home / "data"
    pets = d / "oxford-iiit-pet" / "images"; pets.mkdir(parents=True)
    by_breed = {}
    for f in sorted((DATA / "pets" / "images").glob("*.jpg")): by_breed.setdefault(f.name.rsplit("_", 1)[0], []).append(f)
    for fs in by_breed.values():
        for f in fs[:3]: shutil.copy(f, pets / f.name)
    for split, k in (("train", 12), ("test", 4)):
        for cls in sorted((DATA / "cifar10" / split).iterdir()):
            (d / "cifar10" / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:k]: shutil.copy(f, d / "cifar10" / split / cls.name / f.name)
    for cls in sorted((DATA / "caltech101" / "101_ObjectCategories").iterdir()):
        (d / "caltech_101" / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:4]: shutil.copy(f, d / "caltech_101" / cls.name / f.name)
    veh = home / "vehicles"; (veh / "images").mkdir(parents=True)
    with open(DATA / "vehicles" / "train.csv", newline="") as f: rows = list(csv.DictReader(f))
    rows = [r for r in rows if r["emergency_or_not"] == "0"][:30] + [r for r in rows if r["emergency_or_not"] == "1"][:30]
    with open(DATA / "vehicles" / "test.csv", newline="") as f: tests = list(csv.DictReader(f))
    for r in rows + tests: shutil.copy(DATA / "vehicles" / "images" / r["image_names"], veh / "images")
    for name, rs in (("train.csv", rows), ("test.csv", tests)):
        with open(veh / name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rs[0])); w.writeheader(); w.writerows(rs)
    return veh


def _random_weights(torch_home: Path):
    "Randomly initialised ImageNet-shaped weights under torchvision's file names, where torch.hub looks first."
    ckpt = torch_home / "hub" / "checkpoints"; ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    for arch in sorted(set(FULL_ARCH.values())):  # resnet34 and resnet50 (Pets uses both), vgg16
        fname = arch_spec(arch).weights_enum.url.rsplit("/", 1)[-1]
        torch.save(getattr(torchvision.models, arch)().state_dict(), ckpt / fname)


@pytest.fixture(scope="module")
def full_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("full_mode")
    vehicles = _layout(root / "home")
    _random_weights(root / "torch")
    return {"home": root / "home", "torch": root / "torch", "vehicles": vehicles}


@pytest.mark.parametrize("lesson", sorted(SHRINK))
def test_lesson_full_mode(lesson, full_env, tmp_path, monkeypatch):
    for k, v in {"LESSONKIT_MODE": "full", "LESSONKIT_HOME": full_env["home"], "TORCH_HOME": full_env["torch"],
                 "LESSONKIT_RESULTS": tmp_path / "results.json", "MPLBACKEND": "Agg", "IN_TEST": "1"}.items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.chdir(tmp_path)  # the lessons write runs/..., export files and submissions relative to the cwd
    nb_path = LESSONS / f"{lesson}.ipynb"
    nb = NBProcessor(nb_path, process=True).nb
    shrink = SHRINK[lesson].format(vehicles=str(full_env["vehicles"]))
    ran, left_out, shrunk = [], [], []

    def preproc(cell):
        "Skip markdown, `#| eval: false` and learning checks; shrink sizes right after the parameter cell."
        if cell.cell_type != "code": return True
        if (getattr(cell, "directives_", {}) or {}).get("eval:", [""])[0].lower() == "false": return True
        if LEARNING in cell.source: left_out.append(cell.source); return True
        if "lesson_mode()" in cell.source: cell.source += "\n" + shrink; shrunk.append(True)
        ran.append(cell.source)
        return False

    shell = CaptureShell(nb_path)
    try: shell.run_all(nb, exc_stop=True, preproc=preproc)
    except Exception:
        pytest.fail(f"{lesson} failed in full mode:\n{shell.prettytb(fname=nb_path)}")
    assert shrunk == [True], "the parameter cell (the one calling lesson_mode()) was not found exactly once"
    assert len(left_out) >= 1 and len(ran) > 10, (len(left_out), len(ran))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "full", results
    assert results["arch"] == FULL_ARCH[lesson], results
