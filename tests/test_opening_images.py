"""One way to open an image, everywhere: a photo is seen the same way when it is trained on, predicted from its file,
from its bytes (an upload) or from a PIL image, and shown as a thumbnail: upright by its EXIF orientation, with
transparent parts on white. The photos here store their pixels sideways with the EXIF tag that says so, as phones do."""
import datetime, io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lessonkit.core import LessonkitError
from lessonkit.data import DataLoaders
from lessonkit.interpret import load_thumb
from lessonkit.learner import vision_learner
from lessonkit.widgets import upload_predict

ROOT = Path(__file__).resolve().parents[1]
PETS = ROOT / "data" / "pets" / "images"


@pytest.fixture(scope="module")
def learn():
    "MobileNetV2 trained one short epoch on 12 Pets photos at 64 px: its predictions depend on every pixel."
    files = sorted(PETS.glob("*.jpg"))[::20][:12]
    dls = DataLoaders.from_lists(PETS, files, ["cat" if f.name[0].isupper() else "dog" for f in files], valid_pct=0.25,
                                 size=64, bs=4, device="cpu", progress=False)
    torch.manual_seed(0)
    learn = vision_learner(dls, "mobilenet_v2")
    learn.fit(1, 1e-3)
    return learn


def sideways(tmp_path: Path, name: str = "phone.jpg") -> tuple[Path, Path]:
    "A Pets photo stored rotated, with EXIF orientation 6 ('rotate 90 degrees clockwise to show'), and the same pixels "
    "without the tag (what a program that ignores EXIF sees)."
    portrait = next(p for p in sorted(PETS.glob("*.jpg")) if (lambda w, h: h > w)(*Image.open(p).size))
    upright = Image.open(portrait).convert("RGB")                  # taller than wide: stored sideways, wider than tall
    stored = upright.transpose(Image.Transpose.ROTATE_90)          # counter-clockwise: the tag turns it back
    exif = Image.Exif(); exif[0x0112] = 6
    stored.save(tmp_path / name, quality=95, exif=exif.tobytes())
    stored.save(tmp_path / f"raw_{name}", quality=95)
    return tmp_path / name, tmp_path / f"raw_{name}"


def upload(view, f: Path):
    "What the browser sends when a file is chosen in the upload widget."
    data = f.read_bytes()
    view.upload.value = ({"name": f.name, "type": "image/jpeg", "size": len(data), "content": memoryview(data),
                          "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def test_an_exif_rotated_upload_is_predicted_exactly_as_its_file(learn, tmp_path):
    photo, raw = sideways(tmp_path)
    p_file = learn.predict(photo)[2]
    assert not torch.allclose(p_file, learn.predict(raw)[2], atol=1e-4)   # the rotation changes the prediction
    view = upload_predict(learn, k=2, static=False)
    upload(view, photo)
    assert view.error is None and view.result == [(learn.classes[j], float(p_file[j])) for j in p_file.argsort(descending=True)]
    assert torch.equal(learn.predict(photo.read_bytes())[2], p_file)     # bytes and file: the very same tensor
    assert view._img.size == Image.open(photo).size[::-1]                # the photo shown upright (portrait stored)


def test_a_pil_image_with_exif_orientation_predicts_like_its_path(learn, tmp_path):
    photo, raw = sideways(tmp_path)
    label, i, p = learn.predict(photo)
    label_pil, i_pil, p_pil = learn.predict(Image.open(photo))
    assert (label_pil, i_pil) == (label, i)
    # close (the file is decoded at reduced size, JPEG's draft mode; the PIL image in full), and far closer than sideways
    off, sideways_off = (p_pil - p).abs().max(), (learn.predict(Image.open(raw))[2] - p).abs().max()
    assert off < 2e-3 and off < sideways_off / 10, (off, sideways_off)


def test_transparency_is_white_in_predictions_and_thumbnails(learn, tmp_path):
    cut = Image.new("RGBA", (80, 60), (0, 0, 0, 0))
    cut.paste(Image.open(sorted(PETS.glob("*.jpg"))[0]).convert("RGBA").resize((40, 30)), (20, 15))
    cut.save(tmp_path / "cutout.png")
    on_white = Image.new("RGB", (80, 60), (255, 255, 255)); on_white.paste(cut.convert("RGB").crop((20, 15, 60, 45)), (20, 15))
    on_white.save(tmp_path / "white.png")
    view = upload_predict(learn, k=2, static=False)
    upload(view, tmp_path / "cutout.png")
    p = learn.predict(tmp_path / "white.png")[2]
    assert view.result == [(learn.classes[j], float(p[j])) for j in p.argsort(descending=True)]
    assert load_thumb(tmp_path / "cutout.png", 40).getpixel((0, 0)) == (255, 255, 255)


def test_thumbnails_are_upright(tmp_path):
    photo, raw = sideways(tmp_path)
    w, h = Image.open(photo).size                    # as stored: sideways
    assert w > h and load_thumb(photo, 64).size == (round(64 * h / w), 64) and load_thumb(raw, 64).size == (64, round(64 * h / w))


def test_arrays_and_tensors_predict_like_the_picture_they_hold(learn, tmp_path):
    "fastai's predict takes arrays and tensors: so does lessonkit's, each in its library's order (issue 19)."
    photo, _ = sideways(tmp_path)
    pic = Image.open(photo)
    upright = np.asarray(pic.transpose(Image.Transpose.ROTATE_270))   # what the EXIF tag says to show
    p = learn.predict(photo)[2]
    for x in (upright, torch.from_numpy(upright).permute(2, 0, 1), torch.from_numpy(upright).permute(2, 0, 1) / 255.,
              torch.from_numpy(upright).permute(2, 0, 1)[None]):
        label, i, q = learn.predict(x)
        assert label == learn.classes[i] and (q - p).abs().max() < 2e-3, type(x)


@pytest.mark.parametrize("item, reason", [
    (Image.new("RGB", (0, 0)), "the image has no pixels (0 x 0)"),
    (np.zeros((0, 5, 3), np.uint8), "has no pixels"),
    (np.zeros((8, 8, 5), np.uint8), "array of shape (8, 8, 5) is not an image"),
    (np.full((8, 8, 3), 300.0), "floats must be in [0, 1]"),
    (np.full((8, 8), np.nan), "NaN or infinite"),
    (torch.rand(2, 3, 8, 8), "tensor of shape (2, 3, 8, 8) is not an image"),
    (np.array(["a", "b"]), "is not an image"),
    (b"\x89PNG\r\n", "starts like a PNG but Pillow cannot decode it"),
    (None, "not None"),
    (3.5, "not 3.5"),
], ids=["0x0", "empty-array", "5-channels", "floats-0-255", "nan", "batch-of-2", "strings", "truncated-png", "None", "float"])
def test_what_cannot_be_an_image_is_an_error_never_a_label(learn, item, reason):
    with pytest.raises(LessonkitError) as e: learn.predict(item)
    assert reason in str(e.value)


def test_a_closed_pil_image_says_so(learn, tmp_path):
    photo, _ = sideways(tmp_path)
    with Image.open(photo) as im: pass
    with pytest.raises(LessonkitError, match="the PIL image is closed"): learn.predict(im)
