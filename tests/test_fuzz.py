"""Property-based fuzzing (hypothesis) of everything that reads user input: image files of every size, mode and format,
damaged on purpose (truncated, bytes flipped); the batch transforms; file-name labelling (`from_name_re`,
`from_name_func`) over arbitrary names; and tables (`from_csv`, `from_df`) with missing columns, empty cells, quotes,
unicode and bytes that are not text. The rule checked each time: a result, or a `LessonkitError` saying what is wrong;
never another exception, and never a silently wrong label: each loaded file's label is checked against its name or
its table row. Most generated names and tables are well-formed, and each of those tests requires that a good share
of its examples load (so the label checks really run) and that clean input (every name matches, every file has a
label) is never refused.

The examples are derandomized (the same ones on every run, so CI is repeatable) and bounded (`max_examples`) to keep
the whole file under a minute on two cores. To search harder, run with `LESSONKIT_FUZZ_EXAMPLES=2000`, which also
draws new random examples each run."""
import csv, io, math, os, re, shutil, string, tempfile, warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from PIL import Image

from lessonkit.augment import BatchAugment, resize_image
from lessonkit.core import LessonkitError
from lessonkit.data import DataLoaders
from lessonkit.images import BadImageError, check_images, clear_image_cache, decode_images, load_image

ROOT = Path(__file__).resolve().parents[1]
PETS = ROOT / "data" / "pets" / "images"
N = int(os.environ.get("LESSONKIT_FUZZ_EXAMPLES", 0))
FUZZ = settings(max_examples=N or 50, deadline=None, derandomize=not N, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
KW = dict(size=8, bs=2, device="cpu", num_workers=0, progress=False)
# Odd input makes lessonkit warn (files skipped, classes with no training images): expected here, checked elsewhere.
pytestmark = pytest.mark.filterwarnings("ignore::lessonkit.core.LessonkitWarning")


@pytest.fixture(autouse=True)
def _home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LESSONKIT_HOME", str(tmp_path_factory.mktemp("home")))
    clear_image_cache()


# ---------------------------------------------------------------------------------------------------- image files
MODES = ["L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "1", "F"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp",
           "PPM": ".ppm"}


def make_image(mode: str, w: int, h: int, seed: int, scale: float) -> Image.Image:
    "A random image of `mode` and size w x h (`scale` sets the range of I and F values)."
    rng = np.random.default_rng(seed)
    if mode == "F": return Image.fromarray((rng.random((h, w)) * scale).astype(np.float32))
    if mode == "I;16": return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I": return Image.fromarray((rng.random((h, w)) * scale).astype(np.int32))
    rgba = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode in ("P", "PA"):
        p = rgba.convert("RGB").convert("P")
        return p.convert("PA") if mode == "PA" else p
    return rgba.convert(mode)


@st.composite
def image_files(draw) -> bytes:
    "The bytes of an image file of random size, mode and format, maybe damaged; and its extension."
    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(sorted(FORMATS)))
    w, h = draw(st.integers(1, 300)), draw(st.integers(1, 50))
    if draw(st.booleans()): w, h = h, w
    im = make_image(mode, w, h, draw(st.integers(0, 2**16)), draw(st.sampled_from([1.0, 255.0, 4095.0, 1e6])))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.save(buf, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)  # this format cannot store this mode: not an input anyone can have
    data = bytearray(buf.getvalue())
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "both", "garbage"]))
    if damage in ("truncate", "both"): data = data[:draw(st.integers(0, max(len(data) - 1, 0)))]
    if damage in ("flip", "both") and data:
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1)); data[i] ^= draw(st.integers(1, 255))
    if damage == "garbage": data = bytearray(draw(st.binary(max_size=200)))
    ext = draw(st.sampled_from([FORMATS[fmt], FORMATS[fmt], ".jpg", ".png"]))
    return bytes(data), ext


@FUZZ
@given(image_files(), st.integers(1, 64), st.integers(1, 64), st.sampled_from(["squish", "crop", "pad"]))
def test_any_image_file_loads_or_says_why(tmp_path, file, h, w, method):
    data, ext = file
    f = tmp_path / f"x{ext}"
    f.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about some damaged files; we check what it returns
        try:
            t = load_image(f, (h, w), method)
        except BadImageError as e:
            assert e.path == f and str(f) in str(e) and e.reason
            t = None
        if t is not None:
            assert t.shape == (3, h, w) and t.dtype == torch.uint8
        bad = check_images([f])  # never raises: lists the file if it cannot be used
        assert len(bad) <= 1 and all(p == f and r for p, r in bad)
        imgs, failures = decode_images([f], (h, w), method, num_workers=0)
        assert (imgs[0] is None) == (len(failures) == 1)


@FUZZ
@given(st.integers(1, 4), st.integers(1, 64), st.integers(1, 64), st.one_of(st.none(), st.tuples(st.integers(1, 48),
       st.integers(1, 48))), st.booleans(), st.floats(0, 45), st.floats(1, 2), st.floats(0, 0.5), st.floats(0, 1),
       st.floats(0.05, 1), st.sampled_from(["reflection", "border", "zeros"]))
def test_batch_transforms_any_shape(b, h, w, size, flip_vert, rot, zoom, warp, light, min_scale, pad):
    aug = BatchAugment(flip=True, flip_vert=flip_vert, max_rotate=rot, max_zoom=zoom, max_warp=warp, max_lighting=light,
                       min_scale=min_scale, pad_mode=pad, p_affine=1.0, p_lighting=1.0)
    x = torch.rand(b, 3, h, w)
    y = aug(x, size=size)
    assert y.shape == (b, 3, *(size or (h, w))) and torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


@FUZZ
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 96), st.integers(1, 96),
       st.sampled_from(["squish", "crop", "pad"]))
def test_resize_image_gives_exactly_the_size(W, H, h, w, method):
    im = Image.new("RGB", (W, H), (200, 30, 30))
    out = resize_image(im, (h, w), method)
    assert out.size == (w, h) and out.mode == "RGB"


# --------------------------------------------------------------------------------------------------- file names
NAME_CHARS = st.sampled_from(list(string.ascii_letters + string.digits + "_-. ()[]+,;'!#$%&=~") +
                             ["é", "ß", "猫", "🐶", "\u200b", "Ω", "ı"])
names = st.text(NAME_CHARS, min_size=1, max_size=30).filter(lambda s: s not in (".", ".."))
mostly = st.integers(0, 3).map(bool)   # True 3 times in 4


@pytest.fixture(scope="module")
def tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.open(sorted(PETS.glob("*.jpg"))[0]).convert("RGB").resize((16, 12)).save(buf, "JPEG")
    return buf.getvalue()


def write_files(folder: Path, stems: list[str], exts: list[str], jpeg: bytes, broken: list[bool]) -> list[Path]:
    if folder.exists(): shutil.rmtree(folder)
    folder.mkdir(parents=True)
    files = []
    for stem, ext, bad in zip(stems, exts, broken):
        f = folder / f"{stem}{ext}"
        if f in files: continue
        f.write_bytes(b"not an image" if bad else jpeg)
        files.append(f)
    return files


def assert_loaded_share(outcomes: Counter, share: float):
    "At least `share` of the examples made loaders: a fuzz test that only ever sees errors checks nothing of what loads."
    assert outcomes["loaded"] >= share * sum(outcomes.values()), outcomes


def splits_fit(n: int, valid_pct: float) -> bool:
    "Whether `n` labelled files give a non-empty training and validation set at `valid_pct`."
    return 1 <= int(valid_pct * n) < n


PATTERNS = [r"^(.+)_\d+\.jpg$", r"/([^/]+)_\d+\.jpg$", r"^(.*)$", r"(\d+)", r"^([^_]*)", r"^(.+)\.", r"(x)?"]


@st.composite
def names_and_pattern(draw):
    "File names (stem, number, extension, broken?) and a pattern: mostly names written for the pattern, with a number "
    "and '.jpg' as in Pets, else anything."
    if draw(mostly):
        return draw(st.lists(st.tuples(names, st.sampled_from(["_1", "_22", "_007"]), st.just(".jpg"), st.just(False)),
                             min_size=5, max_size=10)), draw(st.sampled_from(PATTERNS[:3]))
    return draw(st.lists(st.tuples(names, st.sampled_from(["", "_1", "_22", "_007"]),
                                   st.sampled_from([".jpg", ".JPG", ".png", ""]), st.booleans()), min_size=1, max_size=10)), \
        draw(st.sampled_from(PATTERNS))


def test_from_name_re_any_names(tmp_path, tiny_jpeg):
    outcomes = Counter()
    @FUZZ
    @given(names_and_pattern(), st.booleans(), st.sampled_from([0.2, 0.5]))
    def run(case, skip_bad, valid_pct):
        rows, pat = case
        files = write_files(tmp_path / "imgs", [a + b for a, b, _, _ in rows], [c for _, _, c, _ in rows], tiny_jpeg,
                            [d and i % 3 == 0 for i, (_, _, _, d) in enumerate(rows)])
        rx = re.compile(pat)
        label = lambda p: (m := rx.search(p.as_posix() if "/" in pat else p.name)) and m.group(1).strip()   # labels are stripped
        broken = {p for p in files if p.read_bytes() != tiny_jpeg}
        try:
            dls = DataLoaders.from_name_re(tmp_path / "imgs", files, pat, valid_pct=valid_pct, skip_bad=skip_bad, **KW)
        except LessonkitError as e:
            clean = (all(label(p) for p in files) and not broken and splits_fit(len(files), valid_pct)
                     and len({label(p) for p in files}) >= 2)   # one class is refused: a classifier needs two
            assert str(e) and not clean, f"refused names that all match, with no broken file: {e}"
            outcomes["refused"] += 1
            return
        outcomes["loaded"] += 1
        for dl in (dls.train, dls.valid):   # every label is exactly what the pattern says for that file
            for p, l in zip(dl.items, dl.labels): assert dls.classes[l] == label(p)
        assert not broken & set(dls.train.items + dls.valid.items)
    run()
    assert_loaded_share(outcomes, 0.3)


LABEL_FUNCS = {
    "first part": lambda n: n.split("_")[0],
    "first char": lambda n: n[0],
    "raises": lambda n: {"a": "cat"}[n[0].lower()],
    "none sometimes": lambda n: None if len(n) % 2 else n[:2],
    "number": lambda n: len(n) % 3,
    "empty": lambda n: "",
}


def test_from_name_func_any_names(tmp_path, tiny_jpeg):
    outcomes = Counter()
    @FUZZ
    @given(st.lists(names, min_size=1, max_size=10, unique=True), st.sampled_from(sorted(LABEL_FUNCS)), st.booleans())
    def run(stems, func, skip_bad):
        files = write_files(tmp_path / "imgs", stems, [".jpg"] * len(stems), tiny_jpeg, [False] * len(stems))
        f = LABEL_FUNCS[func]
        def label(p):
            try: return str(f(p.name)).strip() if not _is_missing(f(p.name)) else None   # labels are stripped
            except Exception: return None
        try:
            dls = DataLoaders.from_name_func(tmp_path / "imgs", files, f, skip_bad=skip_bad, valid_pct=0.5, **KW)
        except LessonkitError as e:
            clean = all(label(p) for p in files) and splits_fit(len(files), 0.5) and len({label(p) for p in files}) >= 2
            assert str(e) and not clean, f"refused files that all have a label: {e}"
            outcomes["refused"] += 1
            return
        outcomes["loaded"] += 1
        for dl in (dls.train, dls.valid):
            for p, l in zip(dl.items, dl.labels): assert dls.classes[l] == label(p)
    run()
    assert_loaded_share(outcomes, 0.25)


# ------------------------------------------------------------------------------------------------------- tables
STEMS = ["a_1", "b_2", "c_3", "d_4", "e_5"]
cell = st.one_of(names, st.text(max_size=12), st.sampled_from(["", " ", '"', '""', "a,b", "x\ny", "cat dog", "NaN",
                                                               "nan", "1", "1.0", "inf", "True", "valid"]))
label_cell = st.one_of(st.sampled_from(["cat", "dog", "cat dog", "1", "1.0", " cat", "猫", "a,b", "x\ny", '"']), names)
flag_cell = st.sampled_from(["0", "1", "True", "no", " yes"])
def flag_of(v) -> bool | None:
    "The documented reading of a validation flag: true (1, true, yes, valid), false (0, false, no, train), else none."
    s = str(v).strip().lower()
    try: f = float(s)
    except ValueError: f = None
    return True if s in ("true", "yes", "valid") or f == 1 else False if s in ("false", "no", "train") or f == 0 else None


@st.composite
def csv_tables(draw):
    "A CSV file's bytes and how to read it: mostly a well-formed table (a header, rows naming files with odd labels and "
    "a validation flag, sometimes one row naming a missing or repeated file, or with any label), else anything at all, "
    "maybe not even text."
    if draw(mostly):
        rows = [[stem, draw(label_cell), "0" if i == 0 else "1" if i == 1 else draw(flag_cell)]   # train and valid rows
                for i, stem in enumerate(draw(st.lists(st.sampled_from(STEMS), min_size=2, max_size=5, unique=True)))]
        if not draw(mostly):
            rows.insert(draw(st.integers(0, len(rows))), [draw(st.sampled_from(STEMS + ["missing"])), draw(cell), draw(flag_cell)])
        read = dict(fn_col=draw(st.sampled_from([0, "fname"])), label_col=draw(st.sampled_from([1, "label"])),
                    label_delim=draw(st.sampled_from([None, " ", ";"])),
                    valid_col=draw(st.sampled_from([None, "is_valid", 2])), header=True)
        buf = io.StringIO()
        csv.writer(buf).writerows([["fname", "label", "is_valid"]] + rows)
        return buf.getvalue().encode("utf-8"), read
    n_cols = draw(st.integers(1, 4))
    header = draw(st.one_of(st.just(["fname", "label", "is_valid", "extra"][:n_cols]),
                            st.lists(cell, min_size=n_cols, max_size=n_cols)))
    rows = []
    for _ in range(draw(st.integers(0, 10))):
        k = draw(st.integers(0, 5))   # rows may be short or long
        rows.append([draw(st.one_of(st.sampled_from(STEMS + ["missing"]), cell)) for _ in range(k)])
    buf = io.StringIO()
    csv.writer(buf).writerows([header] + rows)
    data = buf.getvalue().encode("utf-8")
    damage = draw(st.sampled_from(["none", "none", "none", "bom", "latin1", "nul", "bytes"]))
    if damage == "bom": data = b"\xef\xbb\xbf" + data
    if damage == "latin1": data = data.replace(b"a", "é".encode("latin-1"), 1)
    if damage == "nul": data = data.replace(b",", b"\x00", 1)
    if damage == "bytes": data = draw(st.binary(max_size=120))
    read = dict(fn_col=draw(st.sampled_from([0, 1, "fname", "label", "nope", -1, 7])),
                label_col=draw(st.sampled_from([1, "label", 0, "x"])), label_delim=draw(st.sampled_from([None, " ", ";"])),
                valid_col=draw(st.sampled_from([None, "is_valid", 2])), header=draw(st.booleans()))
    return data, read


@pytest.fixture(scope="module")
def table_images(tmp_path_factory, tiny_jpeg) -> Path:
    d = tmp_path_factory.mktemp("table")
    (d / "imgs").mkdir()
    for stem in STEMS: (d / "imgs" / f"{stem}.jpg").write_bytes(tiny_jpeg)
    return d


def _is_missing(v) -> bool: return v is None or (isinstance(v, float) and math.isnan(v)) or not str(v).strip()


def load_or_refuse(outcomes: Counter, make):
    "`make()`'s loaders, or None when it raises a `LessonkitError` with a message (and never another exception); counted."
    try: dls = make()
    except LessonkitError as e:
        assert str(e)
        outcomes["refused"] += 1
        return None
    outcomes["loaded"] += 1
    return dls


def check_labels_against_rows(dls, base: Path, cols: list | None, rows: list[list], read: dict):
    "Each loaded file has the label (and split) of the first row naming it, read the way the docs say: a label cell is "
    "the label as text without spaces at either end, split on `label_delim` (or a list: several labels); files are "
    "`<folder>/<name>.jpg`; a validation flag is true or false, never a guess."
    at = lambda c: c if isinstance(c, int) else cols.index(c)
    fi, li = at(read["fn_col"]), at(read["label_col"])
    vi = None if read.get("valid_col") is None else at(read["valid_col"])
    first = {}
    for r in rows:
        if len(r) > max(fi, li, vi or 0) and not _is_missing(r[fi]): first.setdefault(base / f"{str(r[fi]).strip()}.jpg", r)
    loaded = [(p, l, s) for s, dl in enumerate((dls.train, dls.valid)) for p, l in zip(dl.items, dl.labels)]
    delim = read.get("label_delim")
    multi = delim is not None or any(isinstance(first[p][li], (list, tuple)) for p, _, _ in loaded)
    for p, l, split in loaded:
        row = first[p]
        v = row[li]
        if not multi: assert dls.classes[l] == str(v).strip(), (p, row)
        else:
            want = (v if isinstance(v, (list, tuple)) else [s for s in str(v).split(delim) if s] if delim and not _is_missing(v)
                    else [] if _is_missing(v) else [v])
            assert sorted(dls.classes[j] for j in l) == sorted({str(x).strip() for x in want} - {""}), (p, row)
        if vi is not None: assert flag_of(row[vi]) is not None and split == flag_of(row[vi]), (p, row)
    assert all(p.is_file() for p, _, _ in loaded) and len({p for p, _, _ in loaded}) == len(loaded)


def test_from_csv_any_table(table_images):
    outcomes = Counter()
    @FUZZ
    @given(csv_tables(), st.booleans())
    def run(table, skip_bad):
        data, read = table
        (table_images / "t.csv").write_bytes(data)
        dls = load_or_refuse(outcomes, lambda: DataLoaders.from_csv(
            table_images, "t.csv", folder="imgs", suff=".jpg", skip_bad=skip_bad, valid_pct=0.5, **read, **KW))
        if dls is None: return
        lines = [r for r in csv.reader(io.StringIO(data.decode("utf-8-sig"))) if r]
        if not read["header"]: cols, rows = None, lines   # with a header, a row is a dict of the header's columns
        else: cols, rows = _columns_and_rows([dict(zip(lines[0], r + [None] * (len(lines[0]) - len(r)))) for r in lines[1:]])
        check_labels_against_rows(dls, table_images / "imgs", cols, rows, read)
    run()
    assert_loaded_share(outcomes, 0.3)


value = st.one_of(st.none(), st.just(float("nan")), st.integers(-3, 3), st.floats(allow_nan=True), cell,
                  st.sampled_from(STEMS), st.lists(st.sampled_from(["x", "y"]), max_size=2))


@st.composite
def df_tables(draw):
    "A table in one of the shapes `from_df` takes (a dict of columns, a list of rows, a list of dicts) and the columns "
    "to read: mostly file names (sometimes one missing or repeated) and labels (text, numbers, lists) where they "
    "belong, else anything."
    if draw(mostly):
        f = draw(st.lists(st.sampled_from(STEMS), min_size=2, max_size=5, unique=True))
        if not draw(mostly): f.insert(draw(st.integers(0, len(f))), draw(st.sampled_from(["missing", " a_1 ", "b_2"])))
        y = [draw(st.one_of(label_cell, st.integers(0, 3), st.lists(st.sampled_from(["x", "y"]), min_size=1, max_size=2)))
             for _ in f]
        shape = draw(st.sampled_from(["columns", "rows", "dicts"]))
        if shape == "columns": return {"f": f, "y": y}, dict(fn_col="f", label_col="y")
        if shape == "rows": return [list(r) for r in zip(f, y)], dict(fn_col=0, label_col=1)
        return [{"f": a, "y": b} for a, b in zip(f, y)], dict(fn_col=draw(st.sampled_from(["f", 0])), label_col="y")
    table = draw(st.one_of(
        st.dictionaries(st.sampled_from(["f", "y", "v", "z"]), st.lists(value, min_size=0, max_size=6), max_size=4),
        st.lists(st.lists(value, max_size=4), max_size=8),
        st.lists(st.dictionaries(st.sampled_from(["f", "y"]), value, max_size=2), max_size=6)))
    return table, dict(fn_col=draw(st.sampled_from([0, 1, "f", "y", "q"])), label_col=draw(st.sampled_from([1, "y", 0])))


def _columns_and_rows(table) -> tuple[list | None, list[list]]:
    "The test's own reading of the three table shapes."
    if isinstance(table, dict): return list(table), [list(r) for r in zip(*table.values())]
    if table and isinstance(table[0], dict): return list(table[0]), [[r.get(c) for c in table[0]] for r in table]
    return None, [list(r) for r in table]


def test_from_df_any_table(table_images):
    outcomes = Counter()
    @FUZZ
    @given(df_tables(), st.sampled_from([None, ";"]), st.booleans())
    def run(table, delim, skip_bad):
        df, read = table
        dls = load_or_refuse(outcomes, lambda: DataLoaders.from_df(
            df, table_images, label_delim=delim, folder="imgs", suff=".jpg", skip_bad=skip_bad, valid_pct=0.5, **read, **KW))
        if dls is None: return
        check_labels_against_rows(dls, table_images / "imgs", *_columns_and_rows(df), {**read, "label_delim": delim})
    run()
    assert_loaded_share(outcomes, 0.3)
