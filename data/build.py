"""Build the small bundled sample sets in `data/` from the real images in `../shared/data/`.

Run from the repository root:  python data/build.py [--src ../shared/data] [--only pets vehicles ...]

Deterministic: the same source gives byte-identical output (sorted file lists, a fixed seed, fixed JPEG settings).
The project never needs the source to run or test; this script only documents and repeats how `data/` was made.
"""
import argparse, csv, hashlib, random, shutil
from pathlib import Path
from PIL import Image

HERE = Path(__file__).resolve().parent
SEED = 42
QUALITY = 85


def save_small(src: Path, dst: Path, max_side: int | None = None, short_side: int | None = None):
    """Re-encode `src` as JPEG at `dst`, shrunk so its longer side is at most `max_side` (or its shorter side at most
    `short_side`); keeps the image mode's look."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.load()
        w, h = im.size
        scale = min(1.0, max_side / max(w, h) if max_side else 1.0, short_side / min(w, h) if short_side else 1.0)
        if scale < 1:
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        # Keep greyscale images greyscale (real data the loaders must handle); everything else becomes RGB for JPEG.
        if im.mode not in ("L", "RGB"): im = im.convert("RGB")
        im.save(dst, "JPEG", quality=QUALITY, optimize=True)


def stable_int(s: str) -> int: return int(hashlib.sha256(s.encode()).hexdigest()[:8], 16)


PETS_SIDE = 224  # the shorter side of the bundled Pets images: the lesson's final model trains at 224 px
PETS_HELD_OUT = (3,)  # positions (by file name, per breed) of the images kept OUT of data/ for bench/pets_unseen.py


def pets_split(src: Path) -> tuple[list[Path], list[Path]]:
    """The shared Pets images (7 per breed) as (bundled, held out). Held out: the 4th image by file name of each
    breed (37 in all), never copied into data/, so bench/pets_unseen.py can measure the lesson's final model on photos
    it has never seen. A fixed position, not a random draw: the images the package's own tests name (the first by
    name, e.g. `Abyssinian_101.jpg`, and the last three of each breed) stay bundled."""
    by_breed: dict[str, list[Path]] = {}
    for p in sorted((src / "oxford-iiit-pet/images").glob("*.jpg")): by_breed.setdefault(p.name.rsplit("_", 1)[0], []).append(p)
    kept, held = [], []
    for breed in sorted(by_breed):
        for i, p in enumerate(by_breed[breed]): (held if i in PETS_HELD_OUT else kept).append(p)
    return kept, held


def build_pets(src: Path, out: Path):
    """6 images per breed (222 of the shared 259; see `pets_split` for the 37 held out), names unchanged so the regex
    labelling is the real one, the shorter side shrunk to `PETS_SIDE` so the lesson can train at 224 px."""
    for p in pets_split(src)[0]:
        save_small(p, out / "pets/images" / p.name, short_side=PETS_SIDE)


def build_cifar(src: Path, out: Path, n_train=150, n_test=50):
    """The first `n_train` train and `n_test` test images of each class (sorted names), 32x32 as in CIFAR-10: 500 test
    images, so that one image is worth 0.2 points of accuracy. The vehicles stand-in takes the last 150 train images of
    two classes, which stay unused here as long as n_train <= 250."""
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in sorted(d.name for d in (src / "cifar10" / split).iterdir()):
            for p in sorted((src / "cifar10" / split / cls).glob("*.jpg"))[:n]:
                dst = out / "cifar10" / split / cls / p.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, dst)  # already tiny JPEGs; copy bytes unchanged


def build_vehicles(src: Path, out: Path, n_per_class=250):
    """A stand-in in the hackathon's exact format: real `train.csv` names and labels, with CIFAR-10 `truck` images
    standing in for emergency vehicles (1) and `automobile` images for the rest (0): the last `n_per_class` of the
    400 CIFAR train images of each class, which the CIFAR sample (the first 150 or fewer) does not use. 500 rows, so
    that the lesson's 20% validation split has 100 images (one image = one point of accuracy). `test.csv` lists the 10
    real hackathon test images, copied into `images/`."""
    ev = src / "emergency-vehicles"
    rows = list(csv.DictReader(open(ev / "train.csv")))
    rng = random.Random(SEED)
    chosen = []
    for label in ("1", "0"):
        rs = [r for r in rows if r["emergency_or_not"] == label]
        chosen += rng.sample(rs, n_per_class)
    rng.shuffle(chosen)
    pools = {"1": sorted((src / "cifar10/train/truck").glob("*.jpg"))[-n_per_class:],
             "0": sorted((src / "cifar10/train/automobile").glob("*.jpg"))[-n_per_class:]}
    used = {"1": 0, "0": 0}
    img_dir = out / "vehicles/images"
    for r in chosen:
        lab = r["emergency_or_not"]
        save_small(pools[lab][used[lab]], img_dir / r["image_names"], None)
        used[lab] += 1
    write_csv(out / "vehicles/train.csv", ["image_names", "emergency_or_not"],
              [[r["image_names"], r["emergency_or_not"]] for r in chosen])
    tests = sorted((ev / "test_images").glob("*.jpg"), key=lambda p: int(p.stem))
    for p in tests: save_small(p, img_dir / p.name, 96)
    write_csv(out / "vehicles/test.csv", ["image_names"], [[p.name] for p in tests])


def build_caltech(src: Path, out: Path, max_side=128):
    """All 102 folders (101 classes + BACKGROUND_Google). Each class keeps between 8 and 20 of its 20 images, a
    count fixed by a hash of its name, so per-class accuracy can be set against training-set size."""
    root = src / "caltech101/101_ObjectCategories"
    for d in sorted(root.iterdir()):
        n = 8 + stable_int(d.name) % 13
        for p in sorted(d.glob("*.jpg"))[:n]:
            save_small(p, out / "caltech101/101_ObjectCategories" / d.name / p.name, max_side)


def write_csv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header); w.writerows(rows)


BUILDERS = {"pets": build_pets, "cifar10": build_cifar, "vehicles": build_vehicles, "caltech101": build_caltech}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=HERE.parent.parent / "shared/data")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--only", nargs="+", choices=list(BUILDERS), default=list(BUILDERS),
                    help="rebuild only these folders (default: all four)")
    a = ap.parse_args()
    for name in a.only:
        shutil.rmtree(a.out / name, ignore_errors=True)
        BUILDERS[name](a.src, a.out)
    total = sum(p.stat().st_size for p in a.out.rglob("*") if p.is_file())
    print(f"data/ is {total / 1e6:.1f} MB")


if __name__ == "__main__": main()
