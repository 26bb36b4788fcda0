"""Full mode, the lessons' Colab path, on a machine that has neither the full datasets nor the pretrained weights.

Shared by tests/test_full_mode.py (every lesson on the CPU, in CI) and bench/gpu_check.py (every lesson on a GPU).
A lesson runs with `LESSONKIT_MODE=full`; three things around it change:

- the datasets: a few images per class from the bundled samples, laid out the way the real archives extract
  (`$LESSONKIT_HOME/data/oxford-iiit-pet/images`, `cifar10/{train,test}/<class>`, `caltech_101/<class>`), so the
  lessons' own `untar_data(URLs...)` calls find them as if downloaded; for Vehicles, `DATA_PATH` points to a copy of
  the bundled stand-in in the hackathon's layout (`layout`);
- the pretrained weights: ResNet-34, ResNet-50 and VGG-16 with random weights, saved in `$TORCH_HOME` under
  torchvision's own file names, so the full-mode architectures load as if downloaded (`random_weights`);
- sizes and epochs: a line run right after the parameter cell shrinks them (`shrink_line`). On the CPU both shrink;
  on a GPU the lessons can keep their own image sizes and batch sizes, and only the epochs shrink.

With random weights nothing useful is learnt, so the cells that check learning (they start with `# Learning checks`)
are left out; every other cell runs, including the consistency checks (reloaded predictions identical, submission
format, early stopping's restored epoch, ...).
"""
from __future__ import annotations
import ast, contextlib, csv, json, os, shutil, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
LESSONS = ROOT / "nbs" / "lessons"
LEARNING = "# Learning checks"
FULL_ARCH = {"01_pets": "resnet34", "02_cifar10": "resnet50", "03_vehicles": "resnet50", "04_caltech101": "vgg16"}
# the weights each lesson loads in full mode (Pets trains a ResNet-50 too, for its bigger-model section)
WEIGHTS = {"01_pets": ("resnet34", "resnet50"), "02_cifar10": ("resnet50",), "03_vehicles": ("resnet50",),
           "04_caltech101": ("vgg16",)}
SHRINK_SIZES = {"01_pets": "SIZE = BIG_SIZE = 64", "02_cifar10": "BIG = 48", "03_vehicles": "SIZE = 64",
                "04_caltech101": "SIZE = 64"}
SHRINK_EPOCHS = {
    "01_pets": "EPOCHS = FT_EPOCHS = BIG_EPOCHS = BIG_FT_EPOCHS = 1; LR_FIND_STEPS = 4",
    "02_cifar10": "PLAIN_EPOCHS = EPOCHS = FINE_EPOCHS = 1; LR_FIND_ITERS = 4",
    "03_vehicles": "EPOCHS = UNFROZEN_EPOCHS = FINE_EPOCHS = 1; LR_FIND_ITERS = 4; MAX_EPOCHS, PATIENCE = 2, 1",
    "04_caltech101": "MAX_EPOCHS, PATIENCE = 2, 1",
}
REDIRECT = {"03_vehicles": "DATA_PATH = {vehicles!r}"}  # not a shrink: where the stand-in of the user's own data is


def shrink_line(lesson: str, vehicles: Path, sizes: bool = True) -> str:
    "The line run after the parameter cell: fewer epochs, smaller images (if `sizes`), the Vehicles data's place."
    parts = ([SHRINK_SIZES[lesson]] if sizes else []) + [SHRINK_EPOCHS[lesson]]
    if lesson in REDIRECT: parts.append(REDIRECT[lesson].format(vehicles=str(vehicles)))
    return "; ".join(parts)


def assigned(code: str) -> set[str]:
    "The names `code` assigns to (`A = B = 1; C, D = 2, 3` -> A, B, C, D); IPython's `%` and `!` lines are left out."
    tree = ast.parse("\n".join(l for l in code.splitlines() if not l.lstrip().startswith(("%", "!"))))
    targets = [t for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets]
    targets += [n.target for n in ast.walk(tree) if isinstance(n, (ast.AnnAssign, ast.AugAssign))]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def parameter_cell(nb) -> str:
    "The source of the lesson's parameter cell: the one code cell calling lesson_mode()."
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "lesson_mode()" in c.source]
    if len(cells) != 1: raise LessonFailed(f"expected one parameter cell (calling lesson_mode()), found {len(cells)}")
    return cells[0]


def unknown_names(lesson: str, nb) -> list[str]:
    "Names the shrink line sets that the lesson's parameter cell does not: a renamed parameter would shrink nothing."
    return sorted(assigned(shrink_line(lesson, Path("v"))) - assigned(parameter_cell(nb)))


def layout(home: Path) -> Path:
    "The bundled samples, a few images per class, where full mode looks for the downloaded datasets; returns Vehicles' folder."
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


def random_weights(torch_home: Path, archs=None):
    "Randomly initialised ImageNet-shaped weights under torchvision's file names, where torch.hub looks first."
    import torch, torchvision
    from lessonkit.backbones import torchvision_weights
    ckpt = torch_home / "hub" / "checkpoints"; ckpt.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for arch in sorted(set(archs or FULL_ARCH.values())):
        fname = torchvision_weights(arch).url.rsplit("/", 1)[-1]   # what pretrained=True loads
        torch.save(getattr(torchvision.models, arch)().state_dict(), ckpt / fname)


def weights_for(lessons) -> set[str]:
    "The architectures whose stand-in weights `lessons` need."
    return {a for l in lessons for a in WEIGHTS[l]}


class LessonFailed(Exception):
    "A cell of the lesson raised; the message is the notebook traceback."


@contextlib.contextmanager
def _env(values: dict, cwd: Path):
    "Set environment variables and the working folder for a `with` block, then put both back."
    old = {k: os.environ.get(k) for k in values}
    here = os.getcwd()
    os.environ.update({k: str(v) for k, v in values.items()})
    os.chdir(cwd)
    try: yield
    finally:
        os.chdir(here)
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v


def run_full_mode(lesson: str, # e.g. "01_pets"
                  home: Path, torch_home: Path, vehicles: Path, # from `layout` and `random_weights`
                  workdir: Path, # the lesson's working folder (it writes runs/, exports and submissions there)
                  sizes: bool = True) -> dict: # shrink the image sizes too (see `shrink_line`)
    """Run `lesson` in full mode on the stand-ins, every cell but `#| eval: false` ones and the learning checks.
    Returns what ran, what was left out, the lesson's recorded results and the seconds; raises `LessonFailed`."""
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    results_file = workdir / "results.json"
    nb_path = LESSONS / f"{lesson}.ipynb"
    nb = NBProcessor(nb_path, process=True).nb
    if unknown := unknown_names(lesson, nb):
        raise LessonFailed(f"The shrink line sets {unknown}, which {lesson}'s parameter cell does not set: the lesson "
                           "renamed or dropped them. Update SHRINK_SIZES / SHRINK_EPOCHS in tools/full_mode.py.")
    shrink = shrink_line(lesson, vehicles, sizes)
    ran, left_out, shrunk = [], [], []

    def preproc(cell):
        "Skip markdown, `#| eval: false` and learning checks; shrink sizes right after the parameter cell."
        if cell.cell_type != "code": return True
        if (getattr(cell, "directives_", {}) or {}).get("eval:", [""])[0].lower() == "false": return True
        if LEARNING in cell.source: left_out.append(cell.source); return True
        if "lesson_mode()" in cell.source: cell.source += "\n" + shrink; shrunk.append(True)
        ran.append(cell.source)
        return False

    env = {"LESSONKIT_MODE": "full", "LESSONKIT_HOME": home, "TORCH_HOME": torch_home,
           "LESSONKIT_RESULTS": results_file, "MPLBACKEND": "Agg", "IN_TEST": "1"}
    with _env(env, workdir):
        shell = CaptureShell(nb_path)
        start = time.perf_counter()
        try: shell.run_all(nb, exc_stop=True, preproc=preproc)
        except Exception as e:
            raise LessonFailed(f"{lesson} failed in full mode:\n{shell.prettytb(fname=nb_path)}") from e
        seconds = time.perf_counter() - start
    results = json.loads(results_file.read_text()) if results_file.exists() else None
    return {"ran": len(ran), "left_out": len(left_out), "shrunk": len(shrunk), "shrink": shrink, "results": results,
            "seconds": seconds}
