"""Property-based fuzzing (hypothesis) of the public training and prediction calls, as `test_fuzz.py` does for the
loaders: `fit`, `fit_one_cycle`, `fine_tune`, `lr_find`, `get_preds`, `tta`, `predict` and the `DataLoaders` options,
fed odd numbers (NaN, infinities, negatives, zero, huge and tiny values, strings, booleans, lists, slices, NumPy and
torch scalars), odd images (any PIL mode and size down to 0 x 0, closed images, damaged bytes) and odd arrays (any
dtype, shape and values). The rules, checked on every example:

- a result, or a `LessonkitError` that says something; never another exception;
- a prediction's probabilities are finite, add up to 1, and its label is the class of its index (never a label
  with NaN probabilities behind it);
- after an error the weights (and BatchNorm statistics) are as they were before the call, or, when training itself
  failed on a NaN (`NonFiniteError`), those of the last step that passed the checks, all finite; prediction and the
  LR finder never change them at all.

Each example starts from the same small learner (a tiny CNN with BatchNorm, two classes of 8 x 8 CIFAR images, two
training batches), so examples are independent and each call takes milliseconds. Counts (epochs, iterations, passes)
are drawn small: a huge but valid count is not an error, only slow. Examples are derandomized and bounded as in
`test_fuzz.py`; `LESSONKIT_FUZZ_EXAMPLES=2000` searches harder with fresh random examples."""
import io, math, os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image
from torch import nn

from lessonkit.callbacks import Callback, NonFiniteError
from lessonkit.core import LessonkitError, set_seed
from lessonkit.data import DataLoaders
from lessonkit.images import clear_image_cache
from lessonkit.learner import Learner

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT / "data" / "cifar10" / "train"
N = int(os.environ.get("LESSONKIT_FUZZ_EXAMPLES", 0))
FUZZ = settings(max_examples=N or 60, deadline=None, derandomize=not N, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
pytestmark = pytest.mark.filterwarnings("ignore::lessonkit.core.LessonkitWarning", "ignore::UserWarning")


@pytest.fixture(scope="module", autouse=True)
def _home(tmp_path_factory):
    old = os.environ.get("LESSONKIT_HOME")
    os.environ["LESSONKIT_HOME"] = str(tmp_path_factory.mktemp("home"))
    clear_image_cache()
    yield
    if old is None: del os.environ["LESSONKIT_HOME"]
    else: os.environ["LESSONKIT_HOME"] = old


FILES = [f for c in ("cat", "dog") for f in sorted((CIFAR / c).glob("*.jpg"))[:6]]
LABELS = [f.parent.name for f in FILES]
KW = dict(size=8, device="cpu", num_workers=0, progress=False)


@pytest.fixture(scope="module")
def dls():
    "Two classes, 12 images at 8 px: 9 for training (two batches of 4), 3 for validation."
    return DataLoaders.from_lists(CIFAR, FILES, LABELS, valid_pct=0.25, seed=0, bs=4, **KW)


class Snapshot(Callback):
    "The weights after the last optimizer step that passed the finiteness checks (it runs after them)."
    order = 200
    def after_step(self): self.after = state(self.learn)


@pytest.fixture(scope="module")
def learner(dls):
    set_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, dls.c))
    learn = Learner(dls, m, layer_groups=[m[:3], m[3:]], cbs=[Snapshot()])
    learn.initial = state(learn)
    return learn


def state(learn) -> dict: return {k: v.detach().clone() for k, v in learn.model.state_dict().items()}


def same(a: dict, b: dict) -> bool: return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def finite(s: dict) -> bool: return all(bool(torch.isfinite(v).all()) for v in s.values() if v.is_floating_point())


def fresh(learn) -> dict:
    "Back to the same start for every example: initial weights, no optimizer, unfrozen, no step taken yet."
    learn.model.load_state_dict(learn.initial)
    learn.opt, learn.snapshot.after = None, None
    learn.unfreeze()
    return state(learn)


# ------------------------------------------------------------------------------------------------- odd values
ODD_OBJECTS = [None, True, False, "1e-3", "2", b"1", [], [1e-3], (1e-3, 1e-2), [1e-3, float("nan")], {"lr": 1e-3},
               slice(1e-4, 1e-3), slice(-1, 1), slice(None), slice(1e-3), slice(1e-4, 1e-3, 2), np.float32(1e-3),
               np.int64(1), np.array(1e-3), np.array([1e-3, 1e-2]), np.nan, torch.tensor(1e-3), torch.tensor([1.0, 2.0]),
               complex(1, 1), object()]
# numbers where a rate, a fraction or a factor goes: anything, huge and tiny included
odd_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 3),
    st.sampled_from([0.0, -0.0, 1e-300, 1e-7, 1e-3, 0.25, 0.5, 0.99, 1.0, 1.5, 2.5, 10.0, 1e3, 1e10, 1e30, 1e31, 1e300,
                     float("nan"), float("inf"), -float("inf"), -1e-3, 2**63, -2**63]),
    st.sampled_from(ODD_OBJECTS))
# where a count goes (epochs, iterations, passes): small, or not a count at all; a huge valid count is only slow
odd_count = st.one_of(st.integers(-2, 3), st.sampled_from([0.0, 1.0, 2.0, 1.5, -1.0, float("nan"), float("inf"), -10**30]),
                      st.sampled_from(ODD_OBJECTS))


def mostly(good, odd):
    "`good` three times in four, else `odd`: most calls are plausible, so some train and the weight checks bite."
    return st.integers(0, 3).flatmap(lambda k: odd if k == 0 else good)

def outcome(learn, before: dict, call, counts: Counter, training: bool):
    "Run `call`; check the rules; count what happened."
    try: result = call()
    except NonFiniteError as e:
        assert str(e) and training
        after = learn.snapshot.after
        assert same(state(learn), after if after is not None else before) and finite(state(learn))
        counts["non-finite"] += 1
        return None
    except LessonkitError as e:
        assert str(e)
        assert same(state(learn), before), f"the weights changed, then came an error: {e}"
        counts["refused"] += 1
        return None
    counts["ran"] += 1
    if not training: assert same(state(learn), before), "a prediction or the LR finder changed the weights"
    return result


def check_probs(probs: torch.Tensor, n: int, c: int):
    assert probs.shape == (n, c) and torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(1), torch.ones(n), atol=1e-4)


# ------------------------------------------------------------------------------------------------ training calls
rates = st.sampled_from([1e-3, 3e-2, 1.0, slice(1e-4, 1e-2), slice(1e-2), [1e-3, 1e-2], np.float32(1e-3), 1e10])
# each call, and what its four arguments plausibly are
TRAINING = {
    "fit": (lambda l, a, b, c, d: l.fit(a, lr=b), [st.integers(1, 2), rates, st.none(), st.none()]),
    "fit_one_cycle": (lambda l, a, b, c, d: l.fit_one_cycle(a, lr_max=b, div=c, pct_start=d),
                      [st.integers(1, 2), rates, st.sampled_from([25, 5.0]), st.sampled_from([0.25, 0.5, 1.0, 0])]),
    "fine_tune": (lambda l, a, b, c, d: l.fine_tune(a, base_lr=b, freeze_epochs=c, pct_start=d),
                  [st.just(1), st.sampled_from([2e-3, 1e-1]), st.integers(0, 1), st.sampled_from([0.3, 0.99])]),
    "moms": (lambda l, a, b, c, d: l.fit_one_cycle(a, b, moms=(c, d)),
             [st.just(1), rates, st.sampled_from([0.95, 0.9]), st.sampled_from([0.85, 0.0])]),
    "lr_find": (lambda l, a, b, c, d: l.lr_find(start_lr=b, end_lr=c, num_it=a, show_plot=False),
                [st.integers(2, 8), st.sampled_from([1e-7, 1e-4]), st.sampled_from([10.0, 1e12]), st.none()]),
}


@st.composite
def training_calls(draw):
    name = draw(st.sampled_from(sorted(TRAINING)))
    _, good = TRAINING[name]
    odd = [odd_count, odd_number, st.one_of(odd_count, odd_number), odd_number]
    return name, [draw(mostly(g, o)) for g, o in zip(good, odd)]


def test_training_calls_with_odd_numbers(learner):
    counts = Counter()
    @FUZZ
    @given(training_calls())
    def run(case):
        name, (a, b, c, d) = case
        before = fresh(learner)
        res = outcome(learner, before, lambda: TRAINING[name][0](learner, a, b, c, d), counts, training=name != "lr_find")
        if name == "lr_find":
            assert same(state(learner), before)   # the finder always puts the model back
            if res is not None: assert all(map(math.isfinite, (res.valley, res.steep, res.minimum)))
        # whatever happened, the learner still predicts sensibly or says why it cannot
        pred = outcome(learner, state(learner), lambda: learner.predict(FILES[0]), Counter(), training=False)
        if pred is not None:
            label, i, probs = pred
            check_probs(probs[None], 1, 2); assert label == learner.classes[i]
    run()
    print(f"outcomes: {dict(counts)}")
    assert counts["ran"] >= 0.2 * sum(counts.values()) and counts["refused"] >= 0.2 * sum(counts.values()), counts

# ---------------------------------------------------------------------------------------------- prediction calls
MODES = ["L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "1"]


@st.composite
def odd_images(draw):
    "Something given to `predict`: PIL images of any mode and size (0 x 0 too, or closed), arrays and tensors of any "
    "dtype, shape and values, image bytes (maybe damaged), paths that are not images, and things that are no image."
    kind = draw(st.sampled_from(["pil", "pil", "array", "array", "tensor", "bytes", "path", "other"]))
    w, h = draw(st.integers(0, 24)), draw(st.integers(0, 24))
    if kind == "pil":
        mode = draw(st.sampled_from(MODES))
        im = Image.new(mode, (w, h))
        if w and h: im = Image.fromarray(np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
        if draw(st.integers(0, 9)) == 0: im.close()
        return im
    if kind in ("array", "tensor"):
        shape = tuple(draw(st.lists(st.integers(0, 6), min_size=0, max_size=4)))
        if draw(st.booleans()): shape = draw(st.sampled_from([(h, w), (h, w, 3), (h, w, 4), (3, h, w), (1, 3, h, w), (h, w, 1)]))
        dtype = draw(st.sampled_from(["uint8", "int16", "int64", "float32", "float64", "bool", "float16"]))
        scale = draw(st.sampled_from([1.0, 1.0, 255.0, 1e6, float("nan"), float("inf"), -1.0]))
        with np.errstate(invalid="ignore"):   # NaN cast to an integer type: whatever NumPy makes of it is the input
            a = (np.random.default_rng(len(shape)).random(shape) * scale).astype(dtype) if shape else np.array(scale).astype(dtype)
        if kind == "array": return a
        return torch.from_numpy(a) if dtype != "float16" else torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    if kind == "bytes":
        buf = io.BytesIO(); Image.new("RGB", (max(w, 1), max(h, 1)), (9, 99, 199)).save(buf, draw(st.sampled_from(["PNG", "JPEG", "BMP"])))
        data = buf.getvalue()
        return draw(st.sampled_from([data, data[:len(data) // 2], b"", draw(st.binary(max_size=64)), bytearray(data), memoryview(data)]))
    if kind == "path":
        return draw(st.sampled_from([FILES[0], str(FILES[1]), CIFAR, CIFAR / "nope.jpg", ROOT / "README.md", ""]))
    return draw(st.sampled_from([None, 3, 2.5, "cat", [FILES[0]], {"image": 1}, object()]))


def no_pixels(item) -> bool:
    "An image, array or tensor with nothing to see: width or height 0."
    if isinstance(item, Image.Image): return 0 in item.size
    if isinstance(item, (np.ndarray, torch.Tensor)): return 0 in tuple(item.shape)
    return False


def test_predict_with_odd_images(learner):
    counts = Counter()
    learner.model.load_state_dict(learner.initial)
    @FUZZ
    @given(odd_images(), mostly(st.sampled_from([0.5, 0.0, 1.0, np.float32(0.3)]), odd_number))
    def run(item, thresh):
        before = state(learner)
        res = outcome(learner, before, lambda: learner.predict(item, thresh=thresh), counts, training=False)
        if res is not None:
            label, i, probs = res
            check_probs(probs[None], 1, 2); assert label == learner.classes[i]
            assert not no_pixels(item), "an image with no pixels was given a label"
    run()
    print(f"outcomes: {dict(counts)}")
    assert counts["ran"] >= 0.2 * sum(counts.values()) and counts["refused"] >= 0.2 * sum(counts.values()), counts


def test_tta_and_get_preds_with_odd_arguments(learner, dls):
    counts = Counter()
    learner.model.load_state_dict(learner.initial)
    loaders = [None, dls.valid, dls.train, dls.test_dl(FILES[:3]), FILES[:3], str(FILES[0]), 3, [], "valid"]
    @FUZZ
    @given(st.sampled_from(["tta", "get_preds"]), st.sampled_from(range(len(loaders))), odd_count, odd_number)
    def run(name, which, n, beta):
        dl, before = loaders[which], state(learner)
        call = (lambda: learner.tta(dl=dl, n=n, beta=beta)) if name == "tta" else (lambda: learner.get_preds(dl=dl))
        res = outcome(learner, before, call, counts, training=False)
        if res is not None:
            probs, targets = res
            check_probs(probs, len(probs), 2); assert len(probs) == (dl or dls.valid).n
    run()
    print(f"outcomes: {dict(counts)}")
    assert counts["ran"] >= 0.2 * sum(counts.values()) and counts["refused"] >= 0.2 * sum(counts.values()), counts


# ------------------------------------------------------------------------------------------------- the data's options
@st.composite
def loader_options(draw):
    "Options of `DataLoaders.from_*`, each mostly plausible, else odd; sizes stay small (a valid huge size is only slow)."
    pick = lambda good, odd: draw(mostly(st.sampled_from(good), st.sampled_from(odd)))
    return dict(size=pick([8, (6, 10), [8, 8], np.int64(8), 8.0],
                          [0, -8, 8.5, (8,), (8, 8, 8), (8, 0), "8", None, True, 10**6, (10**5, 10**5), float("nan")]),
                bs=draw(mostly(st.sampled_from([1, 2, 4, 64]), odd_count)),
                valid_pct=draw(mostly(st.sampled_from([0.25, 0.5]), odd_number)),
                item_size=pick([None, 12, (12, 16)], [0, "x", 8.5, (12,)]),
                item_resize=pick(["squish", "crop", "pad"], ["Squish", "", None]),
                stats=pick([None, ([0.5] * 3, [0.25] * 3), (0.5, 0.25)],
                           [([0.5] * 3, [0.0] * 3), ([0.5] * 3, [float("nan")] * 3), ([0.5] * 2, [0.2] * 2), 3, "imagenet"]),
                num_workers=pick([None, 0, 2], [-1, 1.5, "2"]), seed=draw(st.sampled_from([0, None, -1])))

def test_data_options_odd_values():
    counts = Counter()
    @FUZZ
    @given(loader_options())
    def run(opts):
        try: d = DataLoaders.from_lists(CIFAR, FILES, LABELS, device="cpu", progress=False, **opts)
        except LessonkitError as e:
            assert str(e); counts["refused"] += 1
            return
        counts["ran"] += 1
        assert d.train.n + d.valid.n == len(FILES) and d.classes == ["cat", "dog"]
        for dl in (d.train, d.valid):
            x, y = dl.one_batch()
            assert x.shape[1:] == (3, *d.size) and torch.isfinite(x).all() and len(x) == len(y) <= d.bs
    run()
    print(f"outcomes: {dict(counts)}")
    assert counts["ran"] >= 0.1 * sum(counts.values()) and counts["refused"] >= 0.2 * sum(counts.values()), counts
