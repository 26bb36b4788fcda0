"""Bad input to the data pipeline: unreadable files, unusual image modes, empty class folders, CSV rows naming missing
or duplicate files, names a pattern does not match. Each gives a LessonkitError naming the files and what to do, or,
with skip_bad=True, a report of what was left out; never a crash in a decoding thread, never a silently wrong label.
Uses tmp_path copies of a few bundled sample images plus generated bad files."""
import io, os, re, shutil, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lessonkit.core import LessonkitError, LessonkitWarning
from lessonkit.data import DataLoaders, ImageDataLoaders
import lessonkit.images
from lessonkit.images import (BadImageError, check_images, clear_image_cache, decode_images, get_image_files, load_image,
                             open_image)

ROOT = Path(__file__).resolve().parents[1]
PETS = ROOT / "data/pets/images"
CIFAR = ROOT / "data/cifar10"
PAT = r"^(.+)_\d+\.jpg$"
KW = dict(size=32, bs=8, device="cpu")


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("LESSONKIT_HOME", str(tmp_path / "home"))
    clear_image_cache()


def pets_copy(tmp_path, n=24) -> Path:
    d = tmp_path / "pets"; d.mkdir()
    files = sorted(PETS.glob("*.jpg"))
    for f in files[::len(files) // n][:n]: shutil.copy(f, d / f.name)  # n files spread over the breeds
    return d


def folder_copy(tmp_path, classes=("cat", "dog"), n_train=6, n_valid=3) -> Path:
    d = tmp_path / "ds"
    for split, n, src in (("train", n_train, "train"), ("valid", n_valid, "test")):
        for c in classes:
            (d / split / c).mkdir(parents=True)
            for f in sorted((CIFAR / src / c).glob("*.jpg"))[:n]: shutil.copy(f, d / split / c / f.name)
    return d


def add_bad_files(folder: Path, prefix: str = "Bengal") -> dict[str, str]:
    "Four unusable files with names the Pets pattern matches; returns name -> expected reason fragment."
    good = next(PETS.glob("*.jpg")).read_bytes()
    (folder / f"{prefix}_901.jpg").write_bytes(b"")
    (folder / f"{prefix}_902.jpg").write_text("just some notes, not a picture\n")
    (folder / f"{prefix}_903.jpg").write_bytes(good[: len(good) // 3])
    corrupt = bytearray(good); corrupt[200:] = bytes(len(corrupt) - 200)   # valid header, then zeros
    (folder / f"{prefix}_904.jpg").write_bytes(bytes(corrupt))
    return {f"{prefix}_901.jpg": "empty file (0 bytes)", f"{prefix}_902.jpg": "not an image file that Pillow can read",
            f"{prefix}_903.jpg": "corrupt or truncated", f"{prefix}_904.jpg": "starts like a JPEG but Pillow cannot decode it"}


# ------------------------------------------------------------------------------------------------- unreadable files
@pytest.mark.parametrize("num_workers", [0, 2])
def test_unreadable_files_are_named(tmp_path, num_workers):
    d = pets_copy(tmp_path)
    expected = add_bad_files(d)
    with pytest.raises(LessonkitError) as e:
        ImageDataLoaders.from_name_re(d, get_image_files(d), PAT, num_workers=num_workers, **KW)
    msg = str(e.value)
    assert "4 files cannot be read as images" in msg
    for name, reason in expected.items():
        line = next(l for l in msg.splitlines() if name in l)
        assert reason in line, line
    assert "check_images(path)" in msg and "skip_bad=True" in msg


def test_skip_bad_reports_what_was_skipped(tmp_path):
    d = pets_copy(tmp_path)
    expected = add_bad_files(d)
    with pytest.warns(LessonkitWarning, match=r"(?s)Skipped 4 file\(s\) \(listed in dls.skipped\).*Bengal_901.jpg: empty file"):
        dls = ImageDataLoaders.from_name_re(d, get_image_files(d), PAT, skip_bad=True, num_workers=2, **KW)
    assert sorted(p.name for p, _ in dls.skipped) == sorted(expected)
    for p, reason in dls.skipped: assert expected[p.name] in reason
    assert dls.train.n + dls.valid.n == 24
    items = dls.train.items + dls.valid.items
    assert not any(p.name in expected for p in items)
    for p, l in zip(dls.train.items, dls.train.labels):   # the rest keep their right labels
        assert dls.classes[l] == re.match(PAT, p.name)[1]
    x, y = dls.train.one_batch()
    assert torch.isfinite(x).all()


def test_check_images_lists_every_bad_file(tmp_path):
    d = pets_copy(tmp_path, 6)
    expected = add_bad_files(d)
    bad = {p.name: r for p, r in check_images(d)}
    assert sorted(bad) == sorted(expected)
    assert check_images(PETS) == []                            # the sample itself is clean


def test_every_file_unreadable(tmp_path):
    d = tmp_path / "bad"; d.mkdir()
    for i in range(3): (d / f"cat_{i}.jpg").write_bytes(b"")
    with pytest.raises(LessonkitError, match="None of the 3 files could be read"):
        ImageDataLoaders.from_name_re(d, get_image_files(d), PAT, skip_bad=True, **KW)


def test_decompression_bomb_becomes_a_lessonkit_error(tmp_path, monkeypatch):
    d = pets_copy(tmp_path, 6)
    big = d / "Bengal_999.jpg"
    Image.new("RGB", (400, 300)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400 * 300 // 3)   # 400x300 is now over twice the limit
    with pytest.raises(BadImageError, match="decompression bomb") as e:
        load_image(big, 32)
    assert e.value.path == big and "MAX_IMAGE_PIXELS" in str(e.value)
    with pytest.raises(LessonkitError, match="Bengal_999.jpg: too many pixels"):
        ImageDataLoaders.from_name_re(d, get_image_files(d), PAT, **KW)


# ------------------------------------------------------------------------------------------- unusual but valid modes
def _modes(tmp_path) -> dict[str, Path]:
    src = Image.open(sorted(PETS.glob("*.jpg"))[0]).convert("RGB")
    grey = src.convert("L")
    d = tmp_path / "modes"; d.mkdir()
    files = {
        "grey": ("grey.jpg", grey),
        "palette": ("palette.png", src.convert("P")),
        "rgba": ("rgba.png", src.convert("RGBA")),
        "la": ("la.png", grey.convert("LA")),
        "cmyk": ("cmyk.jpg", src.convert("CMYK")),
        "bw": ("bw.png", src.convert("1")),
        "deep": ("deep.png", Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)),   # 16-bit greyscale
        "tiff": ("rgb.tif", src),
        "webp": ("rgb.webp", src),
    }
    out = {}
    for k, (name, im) in files.items(): im.save(d / name); out[k] = d / name
    return out


def test_all_image_modes_load_as_rgb(tmp_path):
    files = _modes(tmp_path)
    assert Image.open(files["deep"]).mode.startswith("I")         # really 16-bit on disk
    ref = load_image(files["grey"], 48).float()
    for k, f in files.items():
        t = load_image(f, 48)
        assert t.shape == (3, 48, 48) and t.dtype == torch.uint8, k
        if k in ("grey", "deep", "la"):
            assert (t.float() - ref).abs().mean() < 4, k       # 16-bit is scaled, not clipped to white
        assert 30 < t.float().mean() < 225, k


def test_transparency_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (20, 20), (0, 0, 0, 0)); im.paste((255, 0, 0, 255), (5, 5, 15, 15))
    im.save(tmp_path / "t.png")
    t = load_image(tmp_path / "t.png", 20)
    assert t[:, 0, 0].tolist() == [255, 255, 255] and t[:, 10, 10].tolist() == [255, 0, 0]


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (60, 40), (0, 0, 255)); im.paste((255, 0, 0), (0, 0, 30, 40))   # left half red
    exif = Image.Exif(); exif[0x0112] = 6                                              # "rotate 90 clockwise"
    im.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    o = open_image(tmp_path / "phone.jpg")
    assert o.size == (40, 60)                                  # portrait, as a phone shows it
    r, g, b = o.getpixel((20, 5))
    assert r > 200 and b < 60                                  # the red half is now on top


def test_modes_in_a_dataset_folder(tmp_path):
    d = folder_copy(tmp_path)
    for i, f in enumerate(_modes(tmp_path).values()):
        shutil.copy(f, d / "train" / ("cat" if i % 2 else "dog") / f"mode_{f.name}")
    dls = ImageDataLoaders.from_folder(d, **KW)
    assert dls.skipped == [] and dls.train.n == 12 + 9
    for x, y in dls.train: assert torch.isfinite(x).all()


# ------------------------------------------------------------------------------------------------------ folders
def test_empty_class_folder(tmp_path):
    d = folder_copy(tmp_path)
    (d / "train/bird").mkdir()
    (d / "train/frog").mkdir(); (d / "train/frog/README.txt").write_text("todo")
    with pytest.raises(LessonkitError) as e:
        ImageDataLoaders.from_folder(d, **KW)
    msg = str(e.value)
    assert "2 problems with the class folders" in msg
    assert f"{d / 'train/bird'}: class folder is empty" in msg
    assert f"{d / 'train/frog'}: class folder holds no images (1 other file(s))" in msg
    assert "Remove empty class folders" in msg
    with pytest.warns(LessonkitWarning, match=r"Skipped 2 file\(s\)"):
        dls = ImageDataLoaders.from_folder(d, skip_bad=True, **KW)
    assert dls.classes == ["cat", "dog"] and len(dls.skipped) == 2


def test_image_outside_class_folders_is_not_labelled_with_the_split(tmp_path):
    d = folder_copy(tmp_path)
    shutil.copy(next(PETS.glob("*.jpg")), d / "train" / "stray.jpg")
    with pytest.raises(LessonkitError, match=r"stray\.jpg: image is not inside a class folder"):
        ImageDataLoaders.from_folder(d, **KW)
    with pytest.warns(LessonkitWarning, match="Skipped"):
        dls = ImageDataLoaders.from_folder(d, skip_bad=True, **KW)
    assert "train" not in dls.classes and dls.c == 2


def test_missing_split_folder(tmp_path):
    d = folder_copy(tmp_path)
    shutil.move(d / "valid", d / "test")
    with pytest.raises(LessonkitError, match=r"has no folder 'valid' \(it has: test, train\).*valid='test'"):
        ImageDataLoaders.from_folder(d, **KW)
    assert ImageDataLoaders.from_folder(d, valid="test", **KW).valid.n == 6


def test_folder_without_images(tmp_path):
    (tmp_path / "x/train/a").mkdir(parents=True); (tmp_path / "x/valid/a").mkdir(parents=True)
    (tmp_path / "x/train/a/notes.txt").write_text("hi")
    with pytest.raises(LessonkitError, match="No images found"):
        ImageDataLoaders.from_folder(tmp_path / "x", **KW)
    with pytest.raises(LessonkitError, match="is not a folder"):
        ImageDataLoaders.from_folder(tmp_path / "nope", **KW)


def test_class_only_in_valid_is_reported(tmp_path):
    d = folder_copy(tmp_path)
    (d / "valid/frog").mkdir(); shutil.copy(next((CIFAR / "test/frog").glob("*.jpg")), d / "valid/frog/f.jpg")
    with pytest.warns(LessonkitWarning, match="1 class\\(es\\) have no training images, so they can never be predicted: frog"):
        dls = ImageDataLoaders.from_folder(d, **KW)
    assert "frog" in dls.classes


# ------------------------------------------------------------------------------------------------------- CSV
def _csv(tmp_path, rows, header="fname,label") -> Path:
    d = pets_copy(tmp_path, 12)
    (d.parent / "labels.csv").write_text("\n".join([header] + rows) + "\n")
    return d.parent


def _rows(tmp_path) -> list[str]:
    files = sorted(PETS.glob("*.jpg"))
    return [f"{f.name},{re.match(PAT, f.name)[1]}" for f in files[::len(files) // 12][:12]]


def test_csv_rows_naming_missing_files(tmp_path):
    rows = _rows(tmp_path)
    rows.insert(2, "ghost_1.jpg,ghost"); rows.append("Abyssinian_9999.jpg,Abyssinian")
    path = _csv(tmp_path, rows)
    with pytest.raises(LessonkitError) as e:
        ImageDataLoaders.from_csv(path, "labels.csv", folder="pets", **KW)
    msg = str(e.value)
    assert "2 rows cannot be used" in msg
    assert "ghost_1.jpg: labels.csv line 4 names a file that does not exist" in msg
    assert "labels.csv line 15 names a file that does not exist" in msg
    assert f"files are looked up as {path / 'pets'}/<name>" in msg
    with pytest.warns(LessonkitWarning, match="Skipped"):
        dls = ImageDataLoaders.from_csv(path, "labels.csv", folder="pets", skip_bad=True, **KW)
    assert dls.train.n + dls.valid.n == 12 and "ghost" not in dls.classes and len(dls.skipped) == 2


def test_csv_wrong_folder_says_where_it_looked(tmp_path):
    path = _csv(tmp_path, _rows(tmp_path))
    with pytest.raises(LessonkitError, match=r"(?s)None of the 12 rows names an existing image.*folder= and suff="):
        ImageDataLoaders.from_csv(path, "labels.csv", folder="images", **KW)


def test_csv_duplicate_rows(tmp_path):
    rows = _rows(tmp_path)
    first = rows[0].split(",")[0]
    rows.append(f"{first},some_other_breed")                     # the same file, another label
    path = _csv(tmp_path, rows)
    with pytest.raises(LessonkitError, match=rf"{first}: labels.csv line 14 names the same file as labels.csv line 2"):
        ImageDataLoaders.from_csv(path, "labels.csv", folder="pets", **KW)
    with pytest.warns(LessonkitWarning, match="Skipped"):
        dls = ImageDataLoaders.from_csv(path, "labels.csv", folder="pets", skip_bad=True, **KW)
    assert "some_other_breed" not in dls.classes                 # the first row wins, reported, never mixed


def test_csv_empty_label_bad_column_missing_file(tmp_path):
    rows = _rows(tmp_path)
    rows[3] = rows[3].split(",")[0] + ","
    path = _csv(tmp_path, rows)
    with pytest.raises(LessonkitError, match="labels.csv line 5 has no label"):
        ImageDataLoaders.from_csv(path, "labels.csv", folder="pets", **KW)
    with pytest.raises(LessonkitError, match=r"No column named 'breed' for labels \(columns: \['fname', 'label'\]\)"):
        ImageDataLoaders.from_csv(path, "labels.csv", folder="pets", label_col="breed", **KW)
    with pytest.raises(LessonkitError, match="No CSV file"):
        ImageDataLoaders.from_csv(path, "nope.csv", **KW)


def test_from_df_with_dict_and_pandas_like_table(tmp_path):
    d = pets_copy(tmp_path, 12)
    names = sorted(p.name for p in d.iterdir())
    table = {"f": names + ["missing.jpg"], "y": [re.match(PAT, n)[1] for n in names] + ["x"]}
    with pytest.raises(LessonkitError, match="missing.jpg: row 12 names a file that does not exist"):
        DataLoaders.from_df(table, d, **KW)

    class FakeFrame:   # what from_df uses of a pandas DataFrame: .columns and .itertuples
        columns = ["f", "y"]
        def itertuples(self, index=False, name=None): return iter(zip(table["f"][:-1], table["y"][:-1]))
    dls = DataLoaders.from_df(FakeFrame(), d, fn_col="f", label_col="y", **KW)
    assert dls.train.n + dls.valid.n == 12


# ---------------------------------------------------------------------------------------------- names and patterns
def test_names_the_pattern_does_not_match(tmp_path):
    d = pets_copy(tmp_path)
    src = next(PETS.glob("*.jpg"))
    for n in ["IMG_0001.JPG.jpg", "holiday.jpg", "Bengal-12.jpg"]: shutil.copy(src, d / n)
    with pytest.raises(LessonkitError) as e:
        ImageDataLoaders.from_name_re(d, get_image_files(d), PAT, **KW)
    msg = str(e.value)
    assert "3 file names do not match the pattern" in msg
    assert "holiday.jpg: name does not match the pattern" in msg and "Bengal-12.jpg" in msg and "IMG_0001.JPG.jpg" in msg
    with pytest.warns(LessonkitWarning, match="Skipped"):
        dls = ImageDataLoaders.from_name_re(d, get_image_files(d), PAT, skip_bad=True, **KW)
    assert len(dls.skipped) == 3 and "holiday" not in " ".join(dls.classes) and dls.train.n + dls.valid.n == 24


def test_pattern_that_matches_nothing(tmp_path):
    d = pets_copy(tmp_path, 6)
    with pytest.raises(LessonkitError, match=r"matched none of the 6 file names \(e\.g\. '.*\.jpg'.*file name only"):
        ImageDataLoaders.from_name_re(d, get_image_files(d), r"^(\d+)\.png$", skip_bad=True, **KW)


def test_bad_patterns(tmp_path):
    d = pets_copy(tmp_path, 6)
    with pytest.raises(LessonkitError, match="has no group"):
        ImageDataLoaders.from_name_re(d, get_image_files(d), r"^.+_\d+\.jpg$", **KW)
    with pytest.raises(LessonkitError, match="not a valid regular expression"):
        ImageDataLoaders.from_name_re(d, get_image_files(d), r"^(.+_\d+\.jpg$", **KW)
    with pytest.raises(LessonkitError, match="fnames is empty"):
        ImageDataLoaders.from_name_re(d, [], PAT, **KW)


def test_path_pattern_with_slash(tmp_path):
    d = pets_copy(tmp_path, 12)
    dls = ImageDataLoaders.from_name_re(d, get_image_files(d), r"/([^/]+)_\d+\.jpg$", **KW)   # the old course pattern
    assert all(dls.classes[l] == re.match(PAT, p.name)[1] for p, l in zip(dls.train.items, dls.train.labels))


def test_duplicate_files_in_lists(tmp_path):
    d = pets_copy(tmp_path, 12)
    files = get_image_files(d)
    labels = [re.match(PAT, f.name)[1] for f in files]
    with pytest.raises(LessonkitError, match=rf"{re.escape(files[0].name)}: listed twice"):
        DataLoaders.from_lists(d, files + [files[0]], labels + ["other"], **KW)
    with pytest.warns(LessonkitWarning, match="Skipped"):
        dls = DataLoaders.from_lists(d, files + [files[0]], labels + ["other"], skip_bad=True, **KW)
    assert "other" not in dls.classes and dls.train.n + dls.valid.n == 12
    with pytest.raises(LessonkitError, match="12 files but 11 labels"):
        DataLoaders.from_lists(d, files, labels[:-1], **KW)


def test_label_func_errors_name_the_file(tmp_path):
    d = pets_copy(tmp_path, 12)
    def label(name): return {"A": "cat"}[name[0]]            # KeyError for most names
    with pytest.raises(LessonkitError, match=r"files got no label:\n.*: label_func raised KeyError"):
        ImageDataLoaders.from_name_func(d, get_image_files(d), label, **KW)


def test_test_dl_with_bad_files(tmp_path):
    dls = ImageDataLoaders.from_name_re(PETS, get_image_files(PETS)[:40], PAT, **KW)
    d = pets_copy(tmp_path, 6)
    add_bad_files(d)
    with pytest.raises(LessonkitError, match="4 files cannot be read as images"):
        dls.test_dl(d)
    with pytest.warns(LessonkitWarning, match=r"Skipped 4 unreadable file\(s\)"):
        dl = dls.test_dl(d, skip_bad=True)
    assert dl.n == 6 and len(dl.skipped) == 4 and len(dl.one_batch()) == 1


# ------------------------------------------------------------------------------------------ misspelt options
@pytest.mark.parametrize("make", [
    lambda **kw: DataLoaders.from_folder(CIFAR, valid="test", **kw),
    lambda **kw: DataLoaders.from_name_re(PETS, get_image_files(PETS), PAT, **kw),
    lambda **kw: DataLoaders.from_name_func(PETS, get_image_files(PETS), lambda n: n[0], **kw),
    lambda **kw: DataLoaders.from_lists(PETS, [], [], **kw),
    lambda **kw: DataLoaders.from_df({"f": [], "y": []}, PETS, **kw),
    lambda **kw: DataLoaders.from_csv(ROOT / "data/vehicles", "train.csv", **kw)],
    ids=["from_folder", "from_name_re", "from_name_func", "from_lists", "from_df", "from_csv"])
def test_misspelt_options_name_the_right_one(make):
    "Every constructor shows the common options in its signature and refuses a misspelt one before doing any work."
    with pytest.raises(LessonkitError, match=r"has no argument 'batch_size': did you mean bs\?"): make(batch_size=32)
    with pytest.raises(LessonkitError, match=r"has no argument 'szie': did you mean size\?"): make(szie=64)
    with pytest.raises(LessonkitError, match=r"has no argument 'validation_split': did you mean valid_pct\?"):
        make(validation_split=0.2)


def test_constructor_signatures_show_every_option():
    import inspect
    from lessonkit.data import _loader_options
    options = inspect.signature(_loader_options).parameters
    for name in ("from_folder", "from_name_re", "from_name_func", "from_lists", "from_df", "from_csv"):
        params = inspect.signature(getattr(DataLoaders, name)).parameters
        assert "kwargs" not in params, name
        for k, p in options.items(): assert params[k].default == p.default and params[k].kind is p.KEYWORD_ONLY, (name, k)


# ------------------------------------------------------------------------------ issue 19: silently wrong, now refused
def test_a_hard_link_is_the_same_file(tmp_path):
    "A hard link to an image of the same class is that image again: it is never in training and validation at once."
    d = pets_copy(tmp_path, 12)
    src = sorted(d.iterdir())[0]
    os.link(src, d / f"{re.match(PAT, src.name)[1]}_9999.jpg")      # another name, the same file (same inode)
    with pytest.raises(LessonkitError, match=r"(?s)1 files are listed more than once.*_9999\.jpg: is the same file as"):
        ImageDataLoaders.from_name_re(d, get_image_files(d), PAT, **KW)
    with pytest.warns(LessonkitWarning, match="Skipped 1 file"):
        dls = ImageDataLoaders.from_name_re(d, get_image_files(d), PAT, skip_bad=True, valid_pct=0.5, **KW)
    inodes = [os.stat(p).st_ino for p in dls.train.items + dls.valid.items]
    assert len(inodes) == len(set(inodes)) == 12


def _labelled_csv(tmp_path, labels: list[str]) -> Path:
    "A CSV written by hand ('name, label' with a space after the comma) over pets copies, one label per row."
    d = pets_copy(tmp_path, len(labels))
    names = sorted(p.name for p in d.iterdir())
    (d.parent / "labels.csv").write_text("fname,label\n" + "".join(f"{n}, {l}\n" for n, l in zip(names, labels)))
    return d.parent


def test_labels_are_stripped(tmp_path):
    "`a.jpg, cat` and `b.jpg,cat ` are both the class 'cat' (file names were stripped already, labels were not)."
    path = _labelled_csv(tmp_path, ["cat", "cat ", " dog", "dog"] * 3)
    dls = ImageDataLoaders.from_csv(path, "labels.csv", folder="pets", valid_pct=0.25, **KW)
    assert dls.classes == ["cat", "dog"]
    dls = ImageDataLoaders.from_lists(PETS, sorted(PETS.glob("*.jpg"))[:8], ["cat ", "cat", "\tdog", "dog"] * 2, **KW)
    assert dls.classes == ["cat", "dog"]


def test_labels_that_differ_only_in_case_spacing_or_number_format_are_named(tmp_path):
    path = _labelled_csv(tmp_path, ["Cat", "cat", "1", "1.0", "big  dog", "big dog"] * 2)
    with pytest.warns(LessonkitWarning, match=r"3 group\(s\) of labels differ only in case, spacing or number format, "
                                              r"and are separate classes: '1' / '1.0'; 'Cat' / 'cat'; 'big  dog' / 'big dog'"):
        dls = ImageDataLoaders.from_csv(path, "labels.csv", folder="pets", valid_pct=0.25, **KW)
    assert dls.c == 6                      # a warning, not a guess: they may be meant as different classes
    with warnings.catch_warnings():
        warnings.simplefilter("error", LessonkitWarning)   # labels written alike: no warning
        (tmp_path / "b").mkdir()
        ImageDataLoaders.from_csv(_labelled_csv(tmp_path / "b", ["cat", "dog"] * 4), "labels.csv", folder="pets", **KW)


def test_a_single_class_is_refused(tmp_path):
    files = sorted(PETS.glob("*.jpg"))[:12]
    with pytest.raises(LessonkitError, match="All 12 images have the same label, 'cat': a classifier needs at least 2"):
        DataLoaders.from_lists(PETS, files, ["cat"] * 12, **KW)
    with pytest.raises(LessonkitError, match="every label list is empty"):     # not a NaN loss blamed on the rate
        DataLoaders.from_df({"f": [f.name for f in files], "y": [""] * 12}, PETS, label_delim=";", **KW)


def test_valid_col_values_must_be_true_or_false(tmp_path):
    names = [f.name for f in sorted(PETS.glob("*.jpg"))[:8]]
    table = {"f": names, "y": ["a", "b"] * 4, "v": ["1", "0", "True", "false", " yes", "no", "valid", "maybe"]}
    with pytest.raises(LessonkitError, match=rf"{names[7]}: row 7 has 'maybe' \(a string\) in the validation column, "
                                             r"neither true \(1, true, yes, valid\) nor false \(0, false, no, train\)"):
        DataLoaders.from_df(table, PETS, fn_col="f", label_col="y", valid_col="v", **KW)
    with pytest.warns(LessonkitWarning, match="Skipped 1"):
        dls = DataLoaders.from_df(table, PETS, fn_col="f", label_col="y", valid_col="v", skip_bad=True, **KW)
    assert [p.name for p in dls.valid.items] == [names[i] for i in (0, 2, 4, 6)]
    assert sorted(p.name for p in dls.train.items) == sorted(names[i] for i in (1, 3, 5))


def test_a_file_replaced_with_the_same_size_and_time_is_decoded_again(tmp_path):
    "cp -p of another image of the same size over a file: the memory and disk caches must not serve the old pixels."
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "x.bmp")        # BMP: the same size in bytes for any colour
    Image.new("RGB", (40, 30), (0, 0, 255)).save(tmp_path / "blue.bmp")
    for disk in (False, True):
        (tmp_path / "x.bmp").write_bytes(_red(tmp_path))
        st = (tmp_path / "x.bmp").stat()
        assert decode_images([tmp_path / "x.bmp"], 8, disk_cache=disk)[0][0][:, 0, 0].tolist() == [255, 0, 0]
        shutil.copyfile(tmp_path / "blue.bmp", tmp_path / "x.bmp")
        os.utime(tmp_path / "x.bmp", ns=(st.st_atime_ns, st.st_mtime_ns))
        assert ((tmp_path / "x.bmp").stat().st_size, (tmp_path / "x.bmp").stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        assert decode_images([tmp_path / "x.bmp"], 8, disk_cache=disk)[0][0][:, 0, 0].tolist() == [0, 0, 255]
        if disk: assert len(list((tmp_path / "home/images").rglob("*.u8"))) == 2


def _red(tmp_path) -> bytes:
    buf = io.BytesIO(); Image.new("RGB", (40, 30), (255, 0, 0)).save(buf, "BMP"); return buf.getvalue()


def test_an_absurd_size_is_refused_before_decoding(tmp_path, monkeypatch):
    files = sorted(PETS.glob("*.jpg"))[:12]
    labels = ["a", "b"] * 6
    with pytest.raises(LessonkitError, match=r"size=1000000 is 1,000,000,000,000 pixels per image, more than Pillow opens"):
        DataLoaders.from_lists(PETS, files, labels, size=10**6, device="cpu")
    monkeypatch.setattr(lessonkit.images, "_physical_memory", lambda: 2**30)   # a 1 GiB machine
    with pytest.raises(LessonkitError, match=r"12 images at 9000 x 9000 pixels take 2.7 GiB decoded .* more than this "
                                             r"machine's memory \(1.0 GiB\)"):
        DataLoaders.from_lists(PETS, files, labels, size=9000, device="cpu")


@pytest.mark.parametrize("bad, message", [
    (dict(bs=2.5), "bs must be a whole number >= 1, not 2.5"),
    (dict(bs=0), "bs must be a whole number >= 1, not 0"),
    (dict(size=(32, "a")), "size must be a whole number >= 1, not 'a' (a string)"),
    (dict(valid_pct="0.2"), "valid_pct must be a finite number > 0 and < 1, not '0.2' (a string)"),
    (dict(valid_pct=float("nan")), "valid_pct must be a finite number > 0 and < 1, not nan"),
    (dict(num_workers=-1), "num_workers must be None or a whole number >= 0, not -1"),
    (dict(stats=([0.5] * 3, [0.2, 0.0, 0.2])), "stats's standard deviation must be a finite number > 0, not 0.0"),
    (dict(device="gpu"), "device must be 'cpu', 'cuda', 'cuda:1', 'mps', a torch.device, or None"),
    (dict(batch_tfms="flip"), "batch_tfms must be an augmentation such as aug_transforms()"),
    (dict(label_delim=""), "label_delim must be the text between the labels of one cell")])
def test_options_are_checked_where_they_are_given(bad, message):
    files = sorted(PETS.glob("*.jpg"))[:12]
    with pytest.raises(LessonkitError) as e:
        DataLoaders.from_lists(PETS, files, ["a", "b"] * 6, **{**KW, **bad})
    assert message in str(e.value)
