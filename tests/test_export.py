"""Export and load_learner: one safe file, the same predictions in a fresh process, TTA on unlabelled images, refusal of
malicious or incompatible files, atomic writes."""
import json, math, os, pickle, subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from lessonkit.core import LessonkitError, set_seed
from lessonkit.data import DataLoaders
from lessonkit.inference import FORMAT_VERSION, load_learner
from lessonkit.learner import vision_learner
from lessonkit.metrics import accuracy

ROOT = Path(__file__).resolve().parents[1]
VEHICLES = ROOT / "data" / "vehicles"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "MobileNetV2 trained one epoch (frozen body) on the vehicles sample (emergency or not), exported."
    set_seed(0)
    dls = DataLoaders.from_csv(VEHICLES, "train.csv", folder="images", valid_pct=0.2, size=64, bs=32, progress=False)
    learn = vision_learner(dls, "mobilenet_v2", metrics=accuracy)
    learn.fit_one_cycle(1, 3e-3)
    path = learn.export(tmp_path_factory.mktemp("export") / "vehicles.pth")
    return learn, path


def test_export_is_one_safe_file(trained):
    learn, path = trained
    state = torch.load(path, weights_only=True)  # loads with the safe loader: tensors and plain containers only
    assert set(state) == {"manifest", "model"} and all(isinstance(v, torch.Tensor) for v in state["model"].values())
    m = json.loads(state["manifest"])
    assert m["format_version"] == FORMAT_VERSION and m["arch"] == "mobilenet_v2" and m["classes"] == ["0", "1"]
    assert m["size"] == [64, 64] and m["item_resize"] == "squish" and m["stats"] == [list(s) for s in learn.dls.stats]
    assert set(m["versions"]) == {"lessonkit", "torch", "torchvision"}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_fresh_process_gives_the_same_predictions(trained, tmp_path):
    learn, path = trained
    test_csv = VEHICLES / "test.csv"
    script = textwrap.dedent(f"""
        import os, sys, torch
        from PIL import Image
        os.chdir({str(tmp_path)!r})  # away from the repository: the loaded learner needs no training data
        from lessonkit.core import set_seed
        from lessonkit.inference import load_learner
        learn = load_learner({str(path)!r}, device="cpu")
        dl = learn.dls.test_dl({str(test_csv)!r}, folder="images")
        probs, targets = learn.get_preds(dl=dl)
        assert targets is None
        set_seed(7)
        tta, tta_targets = learn.tta(dl=dl, n=3)
        assert tta_targets is None
        label, idx, p = learn.predict({str(VEHICLES / "images" / "8.jpg")!r})
        label_pil, idx_pil, p_pil = learn.predict(Image.open({str(VEHICLES / "images" / "8.jpg")!r}))
        torch.save(dict(probs=probs, tta=tta, items=[str(i) for i in dl.items], label=label, idx=idx, p=p,
                        label_pil=label_pil), "out.pth")
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = torch.load(tmp_path / "out.pth", weights_only=True)
    dl = learn.dls.test_dl(VEHICLES / "test.csv", folder="images")
    assert out["items"] == [str(i) for i in dl.items] and len(dl.items) == 10
    probs, _ = learn.get_preds(dl=dl)
    assert torch.allclose(out["probs"], probs, atol=1e-5)
    set_seed(7)
    tta, _ = learn.tta(dl=dl, n=3)
    assert torch.allclose(out["tta"], tta, atol=1e-5)  # same seed, same augmentation settings from the manifest
    assert not torch.allclose(tta, probs, atol=1e-4)
    label, idx, p = learn.predict(VEHICLES / "images" / "8.jpg")
    assert (out["label"], out["idx"]) == (label, idx) and torch.allclose(out["p"], p, atol=1e-5)
    assert out["label_pil"] == label


class _Payload:
    "Unpickling this would call Path(marker).touch(): a marker file would prove that code ran."
    def __init__(self, marker): self.marker = Path(marker)
    def __reduce__(self): return (Path.touch, (self.marker,))


class _ShellPayload:
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [_Payload, _ShellPayload])
def test_malicious_files_are_refused_without_running_code(tmp_path, payload):
    marker = tmp_path / "code-ran"
    torch.save({"manifest": "{}", "model": {"w": payload(marker)}}, tmp_path / "evil.pth")
    with open(tmp_path / "evil.pkl", "wb") as f: pickle.dump({"manifest": payload(marker)}, f)
    for name in ("evil.pth", "evil.pkl"):
        with pytest.raises(LessonkitError, match="Refused to load"): load_learner(tmp_path / name)
    assert not marker.exists()


def test_incompatible_files_say_what_differs(trained, tmp_path):
    _, path = trained
    state = torch.load(path, weights_only=True)
    m = json.loads(state["manifest"])
    m["format_version"] = FORMAT_VERSION + 1
    torch.save({"manifest": json.dumps(m), "model": state["model"]}, tmp_path / "newer.pth")
    with pytest.raises(LessonkitError, match=rf"version {FORMAT_VERSION + 1}.*reads version {FORMAT_VERSION}"):
        load_learner(tmp_path / "newer.pth")
    with pytest.raises(LessonkitError, match="holds a mobilenet_v2 model, not the resnet34"):
        load_learner(path, arch="resnet34")
    m["format_version"], m["arch"] = FORMAT_VERSION, "efficientnet_b0"
    torch.save({"manifest": json.dumps(m), "model": state["model"]}, tmp_path / "mislabelled.pth")
    with pytest.raises(LessonkitError, match="do not fit a efficientnet_b0"): load_learner(tmp_path / "mislabelled.pth")
    torch.save({"model": state["model"]}, tmp_path / "no_manifest.pth")
    with pytest.raises(LessonkitError, match="no manifest"): load_learner(tmp_path / "no_manifest.pth")
    with pytest.raises(LessonkitError, match="No exported learner"): load_learner(tmp_path / "missing.pth")


def test_failed_export_keeps_the_previous_file(trained, tmp_path, monkeypatch):
    learn, path = trained
    target = tmp_path / "model.pth"
    learn.export(target)
    good = target.read_bytes()
    real_save = torch.save
    def half_save(obj, f, *a, **k):
        f.write(b"partial data"); raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(LessonkitError, match="unchanged"): learn.export(target)
    monkeypatch.setattr(torch, "save", real_save)
    assert target.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["model.pth"]
    load_learner(target)


def test_keep_fc_round_trip(tmp_path):
    "A VGG-16 whose body keeps the classifier's hidden layers (the Caltech source's model) reloads as the same model."
    set_seed(0)
    dls = DataLoaders.from_csv(VEHICLES, "train.csv", folder="images", valid_pct=0.2, size=32, bs=32, progress=False)
    learn = vision_learner(dls, "vgg16", pretrained=False, head="caltech", keep_fc=True)
    path = learn.export(tmp_path / "vgg.pth")
    assert json.loads(torch.load(path, weights_only=True)["manifest"])["keep_fc"] is True
    loaded = load_learner(path, device="cpu")
    assert loaded.model.spec.keep_fc and loaded.model.spec.nf == 4096
    assert torch.allclose(learn.get_preds()[0], loaded.get_preds(dl=dls.valid)[0], atol=1e-5)


# ------------------------------------------------------------------------------------------- issue 19: bad exports
def _edited(path: Path, out: Path, edit) -> Path:
    "A copy of the export at `path` whose manifest `edit` changed by hand."
    state = torch.load(path, weights_only=True)
    m = json.loads(state["manifest"]); edit(m)
    torch.save({"manifest": json.dumps(m), "model": state["model"]}, out)
    return out


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(classes=["0", "1", "2"]), "it names 3 classes for a model with 2 outputs"),
    (lambda m: m.update(stats=[[0.5] * 3, [0, 0, 0]]), "'stats' is [[0.5, 0.5, 0.5], [0, 0, 0]] (a list), not [mean, std] with every std > 0"),
    (lambda m: m.pop("classes"), "'classes' is missing (a list of distinct class names (strings))"),
    (lambda m: m.pop("size"), "'size' is missing ([height, width] in pixels)"),
    (lambda m: m.update(n_out="2"), "'n_out' is '2' (a string), not a whole number of outputs >= 1"),
    (lambda m: m.update(head_kw=[]), "'head_kw' is [] (a list), not a dict"),
    (lambda m: m.update(multi_label="no"), "'multi_label' is 'no' (a string), not true or false"),
    (lambda m: m.update(classes=[0, 1]), "'classes' is [0, 1] (a list), not a list of distinct class names"),
    (lambda m: m.update(augment={"flip": True, "spin": 3}), "'augment' is {'flip': True, 'spin': 3} (a dict), not null or BatchAugment's settings"),
], ids=["3-classes-2-outputs", "zero-std", "no-classes", "no-size", "n_out-text", "head_kw-list", "multi_label-text",
        "classes-numbers", "augment-unknown"])
def test_a_hand_edited_manifest_is_checked_on_load(trained, tmp_path, edit, message):
    "Issue 19, item 8: a manifest that disagrees with itself or its weights (3 classes for 2 outputs; a zero std, which "
    "predicted NaN probabilities with a label) or misses a key is refused on load, naming the key and the value."
    _, path = trained
    with pytest.raises(LessonkitError) as e: load_learner(_edited(path, tmp_path / "edited.pth", edit), device="cpu")
    assert message in str(e.value) and "Export the learner again" in str(e.value)


def test_export_paths_that_cannot_be_files(trained, tmp_path):
    "An empty path, a folder, a path under a regular file: each says what is wrong, none says to free disk space."
    learn, _ = trained
    (tmp_path / "notes.txt").write_text("x")
    for target, message in (("", "it names no file"), (tmp_path, "it is a folder"),
                            (tmp_path / "notes.txt" / "model.pth", "notes.txt is a file, not a folder")):
        with pytest.raises(LessonkitError) as e: learn.export(target)
        assert message in str(e.value) and "disk space" not in str(e.value), str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert learn.export(tmp_path / "new" / "folders" / "model.pth").is_file()   # missing folders are made


def test_a_loaded_learner_says_how_to_train_and_trains_on_new_data(trained, tmp_path):
    "Issue 19, item 7: a loaded learner has no training data; fit and lr_find say so and how to give it some, and with "
    "`learn.dls = dls` it trains (the loss is finite, the weights change) and predicts."
    learn, path = trained
    loaded = load_learner(path, device="cpu")
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    for call in (lambda: loaded.fit_one_cycle(1), lambda: loaded.lr_find(num_it=5), lambda: loaded.fine_tune(1)):
        with pytest.raises(LessonkitError, match=r"no training data .* learn\.dls = DataLoaders\.from_folder"): call()
    with pytest.raises(LessonkitError, match=r"no validation data to predict .* dl=learn\.dls\.test_dl\(files\)"):
        loaded.get_preds()
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in before.items())
    loaded.dls = learn.dls
    loaded.fit_one_cycle(1, 1e-3)
    assert all(map(math.isfinite, loaded.recorder.losses)) and len(loaded.recorder.losses) == len(learn.dls.train)
    assert any(not torch.equal(v, loaded.model.state_dict()[k]) for k, v in before.items())
    label, i, p = loaded.predict(VEHICLES / "images" / "8.jpg")
    assert label == loaded.classes[i] and torch.isfinite(p).all()
    three = DataLoaders.from_lists(VEHICLES / "images", sorted((VEHICLES / "images").glob("*.jpg"))[:12],
                                   ["a", "b", "c"] * 4, valid_pct=0.25, size=64, bs=4, progress=False)
    loaded.dls = three
    with pytest.raises(LessonkitError, match="The model has 2 outputs, but the data has 3 classes"): loaded.fit(1)
