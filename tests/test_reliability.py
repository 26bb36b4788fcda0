"""Faults and bad input never lose a learner's work (issue 7). Each test checks one guarantee of RELIABILITY.md:

- resume: a training process killed with SIGKILL mid-epoch is resumed by a new process from its last checkpoint,
  losing at most the epoch in progress, and ends exactly where an uninterrupted run ends;
- numbers: a NaN or infinite loss or gradient stops training with a `NonFiniteError` naming the batch and the learning
  rates, before the bad step changes the model; the LR finder stops at NaN and restores the model;
- files: every write of a model, checkpoint, log, cache entry or download is atomic; a full disk (a real one: the
  process's file-size limit) or a read-only folder gives a clear LessonkitError and leaves the previous file intact;
  two processes sharing the cache take turns (a file lock) and do not corrupt it;
- untrusted files: weights, checkpoints and exports are loaded without running code.

Training here uses a tiny CNN on 60 bundled CIFAR images at 32 px, so that everything runs in seconds on a CPU."""
import ast, hashlib, io, json, os, pickle, re, resource, signal, subprocess, sys, tarfile, textwrap, threading, time
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import lessonkit.images
from lessonkit.augment import aug_transforms
from lessonkit.callbacks import (Callback, CancelTrainException, CancelValidException, CheckpointCallback, CSVLogger,
                                 NonFiniteError)
from lessonkit.core import LessonkitError, set_seed
from lessonkit.data import DataLoaders
from lessonkit.images import clear_image_cache, decode_images
from lessonkit.datasets import CorruptArchiveError, Dataset, download_url, untar_data
from lessonkit.inference import load_learner
from lessonkit.learner import Learner
from lessonkit.metrics import accuracy
from lessonkit.models import create_model

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT / "data" / "cifar10" / "train"
PETS = ROOT / "data" / "pets" / "images"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "IN_TEST": "1"}


# ---------------------------------------------------------------------------------------------------------- helpers
def tiny_dls(n: int = 6, bs: int = 9, aug: bool = True) -> DataLoaders:
    "`n` images of each CIFAR class at 32 px, a quarter for validation; augmented training batches."
    files = [f for d in sorted(CIFAR.iterdir()) for f in sorted(d.glob("*.jpg"))[:n]]
    return DataLoaders.from_lists(CIFAR, files, [f.parent.name for f in files], valid_pct=0.25, seed=0, size=32, bs=bs,
                                  device="cpu", num_workers=0, progress=False,
                                  batch_tfms=aug_transforms() if aug else None)


def tiny_model(bn: bool = True) -> nn.Module:
    "A small CNN with BatchNorm and dropout (both depend on the random state), 10 outputs."
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), *([nn.BatchNorm2d(16)] if bn else []), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, 10))


def tiny_learner(dls, path=".", bn=True, **kwargs) -> Learner:
    m = tiny_model(bn)
    return Learner(dls, m, layer_groups=[m], path=path, **kwargs)


def weights(learn) -> dict:
    return {k: v.detach().clone() for k, v in learn.model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def wait_for(pred, timeout: float = 120, what: str = "") -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout: raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class SkipWork(Callback):
    "An epoch that does nothing (enough to write a checkpoint)."
    def before_train(self): raise CancelTrainException()
    def before_validate(self): raise CancelValidException()


class Snapshot(Callback):
    "Keeps the weights after every optimizer step (the last good step's weights)."
    def before_fit(self): self.after = None
    def after_step(self): self.after = weights(self.learn)


@pytest.fixture(scope="module")
def dls():
    return tiny_dls()


# ----------------------------------------------------------------------------------------------------------- resume
TRAIN_SCRIPT = r"""
import sys, time, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_reliability import tiny_dls, tiny_learner
from lessonkit.callbacks import Callback, CheckpointCallback
from lessonkit.core import set_seed
from lessonkit.metrics import accuracy

out, mode = Path(sys.argv[1]), sys.argv[2]
class Probe(Callback):
    "Counts the batches trained in this process; in 'kill' mode, says when epoch 2 is under way, then waits."
    def before_fit(self): self.batches = 0
    def after_batch(self):
        if not self.learn.training: return
        self.batches += 1
        if mode == "kill" and self.learn.epoch == 2 and self.learn.iter == 1:
            (out / "epoch2_in_progress").touch()
            time.sleep(300)  # killed here
dls = tiny_dls()
set_seed(0)
learn = tiny_learner(dls, path=out, metrics=accuracy)
probe = Probe()
learn.fit_one_cycle({n_epoch}, 1e-2, cbs=[CheckpointCallback("ckpt"), probe], resume="ckpt" if mode == "resume" else None)
torch.save({{"model": learn.model.state_dict(), "losses": learn.recorder.losses, "lrs": learn.recorder.lrs,
            "values": [{{k: v for k, v in r.items() if k != "time"}} for r in learn.recorder.values],
            "batches": probe.batches}}, out / "result.pth")
"""


def run_training(out: Path, mode: str, n_epoch: int = 5) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    script = TRAIN_SCRIPT.format(tests=str(Path(__file__).parent), n_epoch=n_epoch)
    return subprocess.Popen([sys.executable, "-c", script, str(out), mode], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_epoch_then_resume_in_a_new_process(tmp_path, dls):
    "Killed with SIGKILL while epoch 2 runs, resumed by a new process: only epoch 2's started work is redone, and the result is bit-identical to a run never interrupted."
    n_epoch, per_epoch = 4, len(dls.train)
    victim = run_training(tmp_path / "run", "kill", n_epoch)
    try:
        set_seed(0)                                              # meanwhile, the same run, uninterrupted, here
        ref = tiny_learner(dls, path=tmp_path / "ref", metrics=accuracy)
        ref.fit_one_cycle(n_epoch, 1e-2)
        wait_for(lambda: (tmp_path / "run/epoch2_in_progress").exists() or victim.poll() is not None, what="epoch 2")
        assert victim.poll() is None, victim.communicate()[0]
        ckpt = torch.load(tmp_path / "run/models/ckpt.pth", weights_only=True)   # written atomically after epoch 1
        assert ckpt["epoch"] == 1 and [r["epoch"] for r in ckpt["callbacks"]["recorder"]["values"]] == [0, 1]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None: victim.kill()
    assert victim.returncode == -signal.SIGKILL
    resumed = run_training(tmp_path / "run", "resume", n_epoch)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    a = torch.load(tmp_path / "run/result.pth", weights_only=True)
    b = {"model": ref.model.state_dict(), "losses": ref.recorder.losses, "lrs": ref.recorder.lrs,
         "values": [{k: v for k, v in r.items() if k != "time"} for r in ref.recorder.values]}
    assert a["batches"] == (n_epoch - 2) * per_epoch           # the new process trained only epochs 2 and 3
    assert [r["epoch"] for r in a["values"]] == list(range(n_epoch)) and len(a["losses"]) == n_epoch * per_epoch
    assert a["values"] == b["values"] and a["losses"] == b["losses"] and a["lrs"] == b["lrs"]  # same schedule, same data order
    assert same(a["model"], b["model"])                        # bit-identical weights
    assert b["values"][-1]["train_loss"] < b["values"][0]["train_loss"] - 0.1, b["values"]   # it learned something


def test_resume_refuses_a_different_run(tmp_path, dls):
    learn = tiny_learner(dls, path=tmp_path)
    with pytest.raises(LessonkitError, match="No checkpoint at .*nothing to resume"):
        learn.fit_one_cycle(2, 1e-3, resume="ckpt")
    class StopAfterFirstEpoch(Callback):
        order = 50  # after the checkpoint of epoch 0 is written
        def after_epoch(self): raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        learn.fit_one_cycle(3, 1e-3, cbs=[CheckpointCallback("ckpt"), StopAfterFirstEpoch()])
    with pytest.raises(LessonkitError, match="epochs of the fit: the checkpoint has 3, this run has 4"):
        learn.fit_one_cycle(4, 1e-3, resume="ckpt")
    with pytest.raises(LessonkitError, match="written by a run with one_cycle_scheduler.*fit_one_cycle"):
        learn.fit(3, 1e-3, resume="ckpt")
    with pytest.raises(LessonkitError, match="peaking at"):
        learn.fit_one_cycle(3, 1e-2, resume="ckpt")
    with pytest.raises(LessonkitError, match="fine_tune cannot resume"):
        learn.fine_tune(2, resume="ckpt")
    other = tiny_learner(tiny_dls(bs=5), path=tmp_path)
    with pytest.raises(LessonkitError, match="batches per epoch"):
        other.fit_one_cycle(3, 1e-3, resume="ckpt")
    learn.fit_one_cycle(3, 1e-3, resume="ckpt")                # the right call carries on
    assert [r["epoch"] for r in learn.recorder.values] == [0, 1, 2]


# -------------------------------------------------------------------------------------------------- numerical faults
class NaNPred(Callback):
    "Makes the model's output NaN at one training batch (a broken input or an overflow would)."
    def __init__(self, epoch, it): self.at = (epoch, it)
    def after_pred(self):
        if self.learn.training and (self.learn.epoch, self.learn.iter) == self.at: self.learn.pred = self.learn.pred * float("nan")


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_weights(dls):
    set_seed(0)
    learn = tiny_learner(dls)
    snap = Snapshot()
    with pytest.raises(NonFiniteError) as e:
        learn.fit_one_cycle(3, 1e-2, cbs=[snap, NaNPred(1, 2)])
    lrs = learn.opt.param_groups[0]["lr"]
    msg = str(e.value)
    assert "training loss is nan at epoch 1, training batch 2 of 5" in msg and f"learning rate(s) {lrs:.3g}" in msg
    assert "lr_find" in msg and (e.value.epoch, e.value.iter) == (1, 2)
    assert same(weights(learn), snap.after)                    # the weights of the last good step (epoch 1, batch 1)
    assert all(torch.isfinite(v).all() for v in snap.after.values() if v.is_floating_point())
    assert [r["epoch"] for r in learn.recorder.values] == [0]   # the finished epoch is kept
    learn.fit(1, 1e-3)                                          # and training can go on
    assert math_isfinite(learn.recorder.losses) and len(learn.recorder.losses) == 5


def test_huge_learning_rate_diverges_into_a_clear_error(dls):
    "SGD at lr=1e10 on a net without normalisation: the weights explode until the loss overflows to NaN."
    set_seed(0)
    learn = tiny_learner(dls, bn=False, opt_func=torch.optim.SGD, wd=0.)
    snap = Snapshot()
    with pytest.raises(NonFiniteError, match=r"learning rate\(s\) 1e\+10") as e:
        learn.fit(3, lr=1e10, cbs=[snap])
    assert math_isfinite(learn.recorder.losses)                 # every recorded (applied) step had a finite loss
    assert len(learn.recorder.losses) >= 1 and same(weights(learn), snap.after)
    assert all(torch.isfinite(v).all() for v in weights(learn).values())


def math_isfinite(xs) -> bool: return all(x == x and abs(x) != float("inf") for x in xs)


def test_non_finite_gradient_is_never_applied(dls):
    class NaNGrad(Callback):
        order = 0  # before the check
        def after_backward(self):
            if self.learn.iter == 3: next(self.learn.model.parameters()).grad[0] = float("inf")
    set_seed(0)
    learn = tiny_learner(dls)
    snap = Snapshot()
    with pytest.raises(NonFiniteError, match="a gradient is NaN or infinite at epoch 0, training batch 3"):
        learn.fit(1, 1e-3, cbs=[snap, NaNGrad()])
    assert same(weights(learn), snap.after) and len(learn.recorder.losses) == 3



def test_a_non_finite_learning_rate_is_never_applied(dls):
    "A rate that becomes NaN mid-fit (set by a callback or a scheduler: the rates users give are checked where they give "
    "them) stops training before the step, with the weights of the last good step, all finite (issue 19, item 1)."
    class NaNRate(Callback):
        order = -10   # after a scheduler has set the step's rates
        def before_batch(self):
            if self.learn.training and self.learn.iter == 2:
                for g in self.learn.opt.param_groups: g["lr"] = float("nan")
    set_seed(0)
    learn = tiny_learner(dls)
    snap = Snapshot()
    with pytest.raises(NonFiniteError, match=r"learning rate about to be applied is \[nan.*epoch 0, training batch 2"):
        learn.fit(1, 1e-3, cbs=[snap, NaNRate()])
    assert same(weights(learn), snap.after) and len(learn.recorder.losses) == 2
    assert all(torch.isfinite(v).all() for v in weights(learn).values() if v.is_floating_point())

def test_lr_find_stops_at_nan_and_restores_the_model(dls):
    set_seed(0)
    learn = tiny_learner(dls)
    before = weights(learn)
    nan = learn.add_cb(NaNPred(0, 4))
    res = learn.lr_find(num_it=12, stop_div=False, show_plot=False)   # no error: NaN is where a sweep ends
    learn.remove_cb(nan)
    assert len(res.lrs) == 4 and math_isfinite(res.losses) and math_isfinite([res.valley, res.steep, res.minimum])
    assert same(weights(learn), before) and learn.opt is None
    # a real divergence: SGD up to lr=1e12 on a net without normalisation
    learn = tiny_learner(dls, bn=False, opt_func=torch.optim.SGD, wd=0.)
    before = weights(learn)
    res = learn.lr_find(start_lr=1e-3, end_lr=1e12, num_it=40, stop_div=False, show_plot=False)
    assert 3 <= len(res.lrs) < 40 and math_isfinite(res.losses)
    assert same(weights(learn), before)


# -------------------------------------------------------------------------------------------------- files: write sites
SHUTIL_WRITES = {"copy", "copy2", "copyfile", "copytree", "move"}
EXTRACTS = {"extractall", "extract", "unpack_archive"}
BUFFERS = {"BytesIO", "StringIO"}


def _call_name(node: ast.Call) -> tuple[str, str]:
    "The called name and the text of what it is called on: `tf.extractall(...)` -> ('extractall', 'tf')."
    fn = node.func
    if isinstance(fn, ast.Attribute): return fn.attr, ast.unparse(fn.value)
    return (fn.id, "") if isinstance(fn, ast.Name) else ("", "")


def _buffers(tree: ast.AST) -> set[str]:
    "Names bound to an in-memory buffer (`buf = io.BytesIO()`): saving into one writes no file."
    return {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
            and _call_name(n.value)[0] in BUFFERS for t in n.targets if isinstance(t, ast.Name)}


def _extracts_then_renames(func: ast.AST, node: ast.Call) -> bool:
    "An archive is extracted into a folder made by `tempfile.mkdtemp` in the same function, which then renames into place."
    temps = {t.id for n in ast.walk(func) if isinstance(n, ast.Assign) and "mkdtemp" in ast.unparse(n.value)
             for t in n.targets if isinstance(t, ast.Name)}
    into = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg in ("path", "extract_dir")), None)
    renames = any(isinstance(n, ast.Call) and _call_name(n) in (("replace", "os"), ("rename", "os")) for n in ast.walk(func))
    return into is not None and bool(temps & {n.id for n in ast.walk(into) if isinstance(n, ast.Name)}) and renames


def write_sites(tree: ast.AST, allowed_funcs: set[str] = frozenset()) -> list[ast.Call]:
    "The calls in `tree` that write a file without `atomic_write` (or, for archives, a temporary folder renamed into place)."
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    buffers, bad = _buffers(tree), []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call): continue
        name, owner = _call_name(node)
        first = node.args[0] if node.args else None
        to_buffer = first is not None and (ast.unparse(first) in buffers or
                                           (isinstance(first, ast.Call) and _call_name(first)[0] in BUFFERS))
        writes = (name in ("write_bytes", "write_text", "tofile") or (name in SHUTIL_WRITES and owner == "shutil")
                  or (name == "save" and owner in ("torch", "np", "numpy"))
                  # PIL's Image.save and matplotlib's savefig, unless into a buffer; `learn.save` is Learner.save, atomic
                  or (name in ("save", "savefig") and owner not in ("torch", "np", "numpy") and not to_buffer
                      and owner.split(".")[-1] != "learn")
                  or name in EXTRACTS)
        if name == "open" and owner in ("", "io", "os"):
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            writes = not (mode is None or (isinstance(mode, ast.Constant) and set(str(mode.value)) <= set("rbt")))
            if first is not None and ast.unparse(first) == "os.devnull": writes = False  # discards: no file to keep whole
        if not writes: continue
        p, func, atomic = node, None, False
        while p in parents:
            p = parents[p]
            if isinstance(p, ast.With) and any("atomic_write" in ast.unparse(i.context_expr) for i in p.items): atomic = True
            if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) and func is None: func = p
        if name in EXTRACTS and func is not None and _extracts_then_renames(func, node): atomic = True
        if not atomic and (func.name if func else None) not in allowed_funcs: bad.append(node)
    return bad


def test_every_file_write_in_the_package_is_atomic():
    "Static check: each call that writes a file (open for writing, torch.save, np.save, Path.write_*, shutil copies, "
    "PIL's Image.save, matplotlib's savefig, os.rename) is inside `with atomic_write(...)`, and an archive is extracted "
    "into a temporary folder that is then renamed into place. The one exception is the resumable `.part` file of a "
    "download, renamed into place only once checked."
    allowed = {"datasets.py": {"_fetch"}, "core.py": {"file_lock"}}  # the download's .part; a lock file (never written)
    bad = []
    for f in sorted((ROOT / "lessonkit").rglob("*.py")):
        if f.name == "_modidx.py": continue
        bad += [f"{f.relative_to(ROOT)}:{n.lineno} {ast.unparse(n)}"
                for n in write_sites(ast.parse(f.read_text()), allowed.get(f.name, set()))]
    assert not bad, "writes outside atomic_write:\n" + "\n".join(bad)


def test_the_write_lint_catches_each_kind_of_write():
    "The check above would fail on each kind of non-atomic write, and passes the atomic forms of each."
    unsafe = {"image": "def f(im, p): im.save(p)", "figure": "def f(fig, p): fig.savefig(p, dpi=80)",
              "tar": "def f(tf, dest): tf.extractall(dest)", "zip": "def f(zf, d): zf.extractall(path=d)",
              "unpack": "def f(a, d): shutil.unpack_archive(a, d)", "text": "def f(p): p.write_text('x')",
              "open": "def f(p):\n    with open(p, 'w') as fh: fh.write('x')", "torch": "def f(s, p): torch.save(s, p)",
              "extract, no rename": "def f(tf, dest):\n    tmp = tempfile.mkdtemp(dir=dest)\n    tf.extractall(tmp)"}
    for kind, code in unsafe.items(): assert len(write_sites(ast.parse(code))) == 1, kind
    safe = ["def f(im, p):\n    with atomic_write(p) as fh: im.save(fh, format='PNG')",
            "def f(fig):\n    buf = io.BytesIO(); fig.savefig(buf, format='png')", "def f(im): im.save(io.BytesIO(), 'JPEG')",
            "def f(tf, dest, target):\n    tmp = Path(tempfile.mkdtemp(dir=dest))\n    tf.extractall(tmp)\n    os.replace(tmp, target)",
            "def f(self): self.learn.save('best')"]
    for code in safe: assert write_sites(ast.parse(code)) == [], code


# ------------------------------------------------------------------------------------------- files: a full disk
@contextmanager
def disk_full_after(nbytes: int):
    "Make every write past `nbytes` of a file fail with EFBIG, as on a full disk (RLIMIT_FSIZE; works as root too)."
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # else the kernel kills the process
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try: yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


@pytest.fixture(scope="module")
def mobilenet_learner(dls, tmp_path_factory):
    "A learner with a real (random) MobileNetV2: its files are megabytes."
    return Learner(dls, create_model("mobilenet_v2", dls.c, pretrained=False), path=tmp_path_factory.mktemp("mn"))


def files_in(d: Path) -> list[str]: return sorted(p.name for p in d.iterdir())


def test_full_disk_keeps_the_previous_model_checkpoint_and_export(mobilenet_learner, tmp_path):
    learn = mobilenet_learner
    learn.path = tmp_path
    learn.fit(1, cbs=[SkipWork(), CheckpointCallback("ckpt")])
    w, ex, ck = learn.save("w"), learn.export("export.pth"), tmp_path / "models/ckpt.pth"
    good = {f: f.read_bytes() for f in (w, ex, ck)}
    with torch.no_grad(): next(learn.model.parameters()).add_(1)   # something new to save
    with disk_full_after(256 * 1024):
        for write in (lambda: learn.save("w"), lambda: learn.export("export.pth"), lambda: learn.save_checkpoint("ckpt")):
            with pytest.raises(LessonkitError, match=r"File too large\); the previous file, if any, is unchanged"):
                write()
    assert all(f.read_bytes() == data for f, data in good.items())
    assert files_in(tmp_path / "models") == ["ckpt.pth", "w.pth"] and "export.pth" in files_in(tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))                   # no temporary file left behind
    load_learner(ex); learn.load("w")                          # the old files still load


def test_full_disk_while_logging_caching_extracting_downloading(dls, tmp_path, monkeypatch, capsys):
    "(capsys: the captured output goes to memory, not to a file, which the size limit would stop too)"
    monkeypatch.setenv("LESSONKIT_HOME", str(tmp_path / "home"))
    # the CSV log: the previous log stays whole
    learn = tiny_learner(dls, path=tmp_path)
    learn.fit(1, 1e-3, cbs=[CSVLogger("log.csv")])
    log = (tmp_path / "log.csv").read_bytes()
    with disk_full_after(len(log) - 10), pytest.raises(LessonkitError, match="File too large"):
        learn.fit(1, 1e-3, cbs=[CSVLogger("log.csv", append=True)])   # the new log holds more rows: over the limit
    assert (tmp_path / "log.csv").read_bytes() == log
    # the image cache: images still load, a warning says the cache is not written
    monkeypatch.setattr(lessonkit.images, "_cache_warned", False)
    clear_image_cache()
    files = sorted(PETS.glob("*.jpg"))[:3]
    with disk_full_after(16 * 1024), pytest.warns(UserWarning, match="cache of decoded images cannot be written"):
        imgs, bad = decode_images(files, 96, disk_cache=True, num_workers=0)
    assert bad == [] and all(t.shape == (3, 96, 96) for t in imgs)
    assert not list((tmp_path / "home/images").rglob("*.u8")) and not list((tmp_path / "home").rglob("*.tmp"))
    # extracting: reported as a disk problem, the archive is kept and nothing is half-extracted
    arc = tmp_path / "big.tgz"
    with tarfile.open(arc, "w:gz") as tf:
        data = os.urandom(300_000); ti = tarfile.TarInfo("big/noise.bin"); ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    with disk_full_after(100_000), pytest.raises(LessonkitError, match="Could not extract .*File too large") as e:
        untar_data(arc, dest=tmp_path / "data")
    assert not isinstance(e.value, CorruptArchiveError) and arc.exists() and files_in(tmp_path / "data") == []
    # downloading: the part fetched so far is kept, and the next try resumes from it
    with serve({"/big.tgz": arc.read_bytes()}) as (url, log_):
        with disk_full_after(100_000), pytest.raises(LessonkitError, match="Could not save the download .*resumes from it"):
            download_url(f"{url}/big.tgz", tmp_path / "dl/big.tgz", progress=False)
        kept = (tmp_path / "dl/big.tgz.part").stat().st_size
        assert not (tmp_path / "dl/big.tgz").exists() and 0 < kept <= 100_000
        download_url(f"{url}/big.tgz", tmp_path / "dl/big.tgz", progress=False)
        assert (tmp_path / "dl/big.tgz").read_bytes() == arc.read_bytes() and log_[-1] == f"bytes={kept}-"


# ------------------------------------------------------------------------------------------- files: read-only folder
@pytest.fixture
def readonly(tmp_path):
    "A folder that becomes read-only when `.freeze()` is called: chmod for a normal user; a tmpfs remounted read-only "
    "for root (chmod does not stop root); skipped where neither works."
    d = tmp_path / "ro"; d.mkdir()
    mounted = False
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(d)], capture_output=True).returncode:
            pytest.skip("running as root and cannot mount a tmpfs: no way to make a read-only folder")
        mounted = True
    class RO:
        path = d
        def freeze(self):
            if mounted: subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
            else:
                for p in [d, *d.rglob("*")]:
                    if p.is_dir(): p.chmod(0o555)
    yield RO()
    if mounted: subprocess.run(["umount", str(d)], check=False)
    else:
        for p in [d, *d.rglob("*")]:
            if p.is_dir(): p.chmod(0o755)


def test_read_only_folder(mobilenet_learner, readonly, tmp_path, monkeypatch):
    learn, d = mobilenet_learner, readonly.path
    learn.path = d
    learn.fit(1, cbs=[SkipWork(), CheckpointCallback("ckpt")])
    w, ex = learn.save("w"), learn.export()
    good = {f: f.read_bytes() for f in (w, ex, d / "models/ckpt.pth")}
    arc = tmp_path / "toy.tgz"
    with tarfile.open(arc, "w:gz") as tf:
        ti = tarfile.TarInfo("toy/a.txt"); ti.size = 1; tf.addfile(ti, io.BytesIO(b"a"))
    readonly.freeze()
    for write in (lambda: learn.save("w"), learn.export, lambda: learn.save_checkpoint("ckpt")):
        with pytest.raises(LessonkitError, match="Cannot write .*(Read-only file system|Permission denied).*writable"):
            write()
    assert all(f.read_bytes() == data for f, data in good.items())
    monkeypatch.setenv("LESSONKIT_HOME", str(d / "home"))      # caches on a read-only disk
    with pytest.raises(LessonkitError, match="Cannot create the cache folder .*LESSONKIT_HOME"):
        untar_data(arc, dest=tmp_path / "data")
    monkeypatch.setattr(lessonkit.images, "_cache_warned", False)
    clear_image_cache()
    with pytest.warns(UserWarning, match="cache of decoded images cannot be written"):
        imgs, bad = decode_images(sorted(PETS.glob("*.jpg"))[:2], 32, disk_cache=True, num_workers=0)
    assert bad == [] and all(t is not None for t in imgs)     # the images are never blamed


# ----------------------------------------------------------------------------------------- files: shared cache
@contextmanager
def serve(files: dict, gate: threading.Event | None = None):
    "An HTTP server on 127.0.0.1 serving `files` (honouring Range); with `gate`, each response stops half-way until it is set."
    log = []
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            data, rng = files[self.path], self.headers.get("Range")
            log.append(rng)
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            self.send_response(206 if rng else 200)
            self.send_header("Content-Length", str(len(data) - start)); self.end_headers()
            body = data[start:]
            self.wfile.write(body[:len(body) // 2]); self.wfile.flush()
            if gate is not None: gate.wait(60)
            self.wfile.write(body[len(body) // 2:])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try: yield f"http://127.0.0.1:{httpd.server_address[1]}", log
    finally: httpd.shutdown(); httpd.server_close()


def waits_for_a_lock(pid: int) -> bool:
    "Whether process `pid` is blocked waiting for a file lock (Linux's /proc/locks marks waiters with '->')."
    try: lines = Path("/proc/locks").read_text().splitlines()
    except OSError: time.sleep(3); return True   # no /proc: give it time
    return any("->" in l and f" {pid} " in l for l in lines)


SHARED_SCRIPT = r"""
import sys, torch
from pathlib import Path
from lessonkit.images import decode_images, get_image_files
from lessonkit.datasets import Dataset, untar_data
url, size, checksum, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
# a long timeout: the server holds the first response half-way until the second process (slow to start on a busy
# machine) waits for the lock; with the default 10 s the first would time out and ask again
folder = untar_data(Dataset("toyimgs", url, size, checksum), progress=False, timeout=300)
imgs, bad = decode_images(get_image_files(folder), 48, disk_cache=True, num_workers=2)
torch.save({"folder": str(folder), "imgs": imgs, "bad": bad}, out / "result.pth")
"""


def test_two_processes_share_the_download_and_image_caches(tmp_path):
    "Two processes ask for the same dataset at once: the second waits for the first's download and extraction "
    "(one request reaches the server), then both fill the same image cache: every entry is whole and right."
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for f in sorted(PETS.glob("*.jpg"))[:24]: tf.add(f, f"toyimgs/{f.name}")
    data = buf.getvalue()
    env = {**ENV, "LESSONKIT_HOME": str(tmp_path / "home")}
    gate = threading.Event()
    with serve({"/toyimgs.tgz": data}, gate) as (url, log):
        args = [f"{url}/toyimgs.tgz", str(len(data)), "sha256:" + hashlib.sha256(data).hexdigest()]
        procs = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            procs.append(subprocess.Popen([sys.executable, "-c", SHARED_SCRIPT, *args, str(tmp_path / name)], cwd=ROOT,
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            if name == "a": wait_for(lambda: len(log) == 1 or procs[0].poll() is not None, what="a's request")
        # b is about to ask: it now either waits for the lock, or (were there none) sends its own request
        wait_for(lambda: waits_for_a_lock(procs[1].pid) or len(log) > 1 or procs[1].poll() is not None, what="b")
        gate.set()
        outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert log == [None]
    a, b = (torch.load(tmp_path / n / "result.pth", weights_only=True) for n in "ab")
    assert a["folder"] == b["folder"] == str(tmp_path / "home/data/toyimgs") and a["bad"] == b["bad"] == []
    clear_image_cache()
    fresh, _ = decode_images(sorted(Path(a["folder"]).glob("*.jpg")), 48, disk_cache=False, num_workers=0)
    assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(fresh, a["imgs"], b["imgs"]))
    entries = list((tmp_path / "home/images").rglob("*.u8"))
    assert len(entries) == 24 and all(e.stat().st_size == 3 * 48 * 48 for e in entries)
    assert not list((tmp_path / "home").rglob("*.tmp")) and not list((tmp_path / "home").rglob("*.part"))


# --------------------------------------------------------------------------------------------- untrusted files
class _Payload:
    "Unpickling this would create a marker file: proof that code ran."
    def __init__(self, marker): self.marker = Path(marker)
    def __reduce__(self): return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_weights_and_checkpoints_never_run_code(dls, tmp_path):
    learn = tiny_learner(dls, path=tmp_path)
    marker = tmp_path / "code-ran"
    (tmp_path / "models").mkdir()
    torch.save({"arch": "Sequential", "model": {"w": _Payload(marker)}}, tmp_path / "models/evil.pth")  # torch zip
    with open(tmp_path / "models/evil_pickle.pth", "wb") as f: pickle.dump({"model": _Payload(marker)}, f)  # not a zip
    (tmp_path / "models/junk.pth").write_bytes(b"\x80\x04not really a pickle")
    for name in ("evil", "evil_pickle", "junk"):
        with pytest.raises(LessonkitError, match="not a weights file lessonkit can load safely"): learn.load(name)
        with pytest.raises(LessonkitError, match="not a checkpoint lessonkit can load safely"):
            learn.fit_one_cycle(1, resume=name)
    assert not marker.exists()


def test_decompression_bomb_in_predict_is_a_lessonkit_error(dls, tmp_path, monkeypatch):
    learn = tiny_learner(dls)
    bomb = tmp_path / "bomb.png"
    Image.new("L", (600, 500)).save(bomb)                      # compresses to almost nothing
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600 * 500 // 3)
    clear_image_cache()
    with pytest.raises(LessonkitError, match="bomb.png: too many pixels to decode safely.*decompression bomb"):
        learn.predict(bomb)
