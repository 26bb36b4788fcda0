"""One prepared check of every GPU path of lessonkit (issue 17), run in one go when a GPU machine is at hand.

Each step is independent (a failing step records its error and traceback and the script carries on), prints one line
of progress, and lands in ONE JSON file (rewritten after every step, so a run cut short still leaves its results):

- env: Python, torch, the GPU, cuDNN, where each package was imported from;
- mixed_precision: `fit_one_cycle` with `mixed_precision` off, 'bf16' and 'fp16'; the loss falls in each, the model's
  outputs have the autocast dtype, and for fp16 the gradient scaler really scales (its scale stays > 1) and, once it
  has found its scale (it may skip a run's first steps while halving it from 2**16), skips no step on finite losses;
- channels_last: the same weights with `channels_last` on and off predict the same (fp32 and bf16), within tolerance;
- augment_on_device: the batch augmentation gets its input on the model's device and hands it on there (hooks on the
  augmentation module and on the model), and it changes the pixels; on a GPU the images are copied from pinned memory
  (the profiler's names of the copies);
- checkpoint_resume: a one-cycle run interrupted after an epoch (with `CheckpointCallback`) and resumed with
  `resume=` gives the same per-batch losses as the run never interrupted (default precision, and fp16 on a GPU), with
  Adam's step counts back on the CPU;
- export_to_cpu: `learn.export()` on the device, `load_learner(..., device='cpu')`: the same labels;
- lessons: the four lessons in full mode on the bundled data, with the stand-ins of tools/full_mode.py (the ones
  tests/test_full_mode.py uses), each in its own process, with its time and (on a GPU) its peak GPU memory;
- speed: images/s of the training phase of a frozen and an unfrozen epoch, resnet34 (random init), 224 px, bs 64,
  fp32 vs bf16 vs bf16 + channels_last, lessonkit and fastai 2.8 side by side (fresh processes, alternating, medians);
- gpu_busy: while training from the bundled images (bf16 + channels_last), the time spent waiting for batches against
  the whole training phase, with each tool's default loader threads and with 2 (Colab's shape).

On a GPU machine with no network (the wheels packed by bench/gpu_pack.py carried along in bench/.gpu_wheels), the ONE
command, from the repository root (python3 is the machine's Python with its own torch, which is never touched):

    set -o pipefail; PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --wheels bench/.gpu_wheels --device cuda \
        --budget-s 420 --out $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log

On the CPU (what tests/test_gpu_check.py runs; --quick shrinks data, sizes, epochs and repeats, and runs one lesson):

    .venv/bin/python bench/gpu_check.py --device cpu --quick --out /tmp/gpu_check.json

The GPU run should take 6 to 8 minutes on an H200 with 16 cores (an estimate: no GPU run has happened yet); --budget-s
skips (and records as skipped) the steps that would start after that many seconds, and ends every worker process a
minute after it. See bench/GPU_CHECK.md.
"""
from __future__ import annotations
import argparse, contextlib, json, math, os, platform, re, statistics, subprocess, sys, tempfile, time, traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import FASTAI_DIR, FASTAI_VERSION, PETS_PAT, cores  # noqa: E402

STEPS = ("env", "mixed_precision", "channels_last", "augment_on_device", "checkpoint_resume", "export_to_cpu",
         "lessons", "speed", "gpu_busy")
LESSONS = ("01_pets", "02_cifar10", "03_vehicles", "04_caltech101")
SPEED_CONFIGS = ("fp32", "bf16", "bf16_cl")


# =========================================================================================================== settings
class Cfg:
    "What a run uses: --quick (CPU test) shrinks everything; the GPU run uses the sizes the issue asks for."
    def __init__(self, a):
        self.device, self.quick, self.tmp = a.device, a.quick, Path(a.tmp)
        q = a.quick
        # correctness: the bundled CIFAR-10 sample (10 classes, 32 px images), random init
        self.arch = "resnet18" if q else "resnet34"
        self.size = 16 if q else 64
        self.bs = 16 if q else 64
        self.per_class = (8, 4) if q else (100, 20)  # train, valid images per class (the sample has 100 and 20)
        self.epochs = 3 if q else 4
        self.lr = 3e-3
        self.mp_epochs, self.mp_lr = (6, 1e-2) if q else (self.epochs, self.lr)  # --quick: a tiny CNN (see `_learner`)
        # speed and GPU-busy: the bundled Pets images, repeated to `speed_batches` training batches per epoch
        # (--quick: the least that runs every line; bf16 on a CPU without it is ~30x slower than fp32)
        self.speed_arch = "resnet18" if q else "resnet34"
        self.speed_size = 16 if q else 224
        self.speed_bs = 4 if q else 64
        self.speed_batches = 2 if q else 30
        self.skip_batches = 0 if q else 3  # steady-state img/s leaves out the first batches of each epoch
        self.busy_config = "fp32" if q else "bf16_cl"
        self.repeats = a.repeats or (1 if q else 3)
        self.lessons = a.lessons.split(",") if a.lessons else (["01_pets"] if q else list(LESSONS))
        self.lesson_sizes = a.lesson_sizes or ("small" if q or a.device == "cpu" else "own")
        self.lesson_timeout = 900 if a.device == "cpu" else 240
        self.fastai_dir = Path(a.fastai_dir)


# ============================================================================================================ helpers
def _sync():
    import torch
    if torch.cuda.is_available() and ARGS.device == "cuda": torch.cuda.synchronize()


class Checks:
    "Collects failed checks of a step: `c(cond, message)`; the step is ok when none failed."
    def __init__(self): self.failed = []
    def __call__(self, cond, msg: str) -> bool:
        if not cond: self.failed.append(msg)
        return bool(cond)


def _cifar_dls(cfg: Cfg, augment: bool = True):
    "The bundled CIFAR-10 sample (train/ and test/ folders), `per_class` images of each class, on the check's device."
    from lessonkit.augment import aug_transforms
    from lessonkit.data import DataLoaders
    path = ROOT / "data" / "cifar10"
    rows = []
    for split, k in zip(("train", "test"), cfg.per_class):
        for c in sorted(d.name for d in (path / split).iterdir()):
            for f in sorted((path / split / c).iterdir())[:k]:
                rows.append({"fn": f"{split}/{c}/{f.name}", "label": c, "valid": split == "test"})
    return DataLoaders.from_df(rows, path=path, fn_col="fn", label_col="label", valid_col="valid", size=cfg.size,
                               bs=cfg.bs, batch_tfms=aug_transforms() if augment else None, device=ARGS.device,
                               progress=False)


def _learner(cfg: Cfg, dls, small: bool = False, **kw):
    """`vision_learner` with the check's architecture, random init. `small` (the training runs of the mixed-precision
    and checkpoint steps) with --quick: a `Learner` on a tiny CNN instead, because bf16 and fp16 convolutions are
    25-30x slower than fp32 on a CPU without native support for them (measured on this project's 2-core machines)."""
    from torch import nn
    from lessonkit.learner import Learner, vision_learner
    from lessonkit.metrics import accuracy
    if small and cfg.quick:
        block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
        model = nn.Sequential(*block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(32, dls.c))
        learn = Learner(dls, model, metrics=accuracy, path=cfg.tmp, **kw)
    else: learn = vision_learner(dls, cfg.arch, pretrained=False, metrics=accuracy, path=cfg.tmp, **kw)
    learn.remove_cb(learn.progress)  # no epoch tables in the log: one line per step
    return learn


def _epoch_losses(learn) -> list[float]:
    return [round(r["train_loss"], 5) for r in learn.recorder.values]


def _falls(losses: list[float]) -> bool:
    "The last epoch's mean training loss is clearly below the first's."
    return len(losses) >= 2 and all(map(math.isfinite, losses)) and losses[-1] < 0.95 * losses[0]


def _compare_preds(p_ref, p_new, tol: float) -> dict:
    "How far two probability tables are apart, and whether their labels agree except where the reference is a near-tie."
    import torch
    diff = (p_ref - p_new).abs().max().item()
    top2 = p_ref.topk(2, dim=1).values
    gap = (top2[:, 0] - top2[:, 1])
    differ = (p_ref.argmax(1) != p_new.argmax(1))
    unexplained = int((differ & (gap > 2 * tol)).sum())
    return {"max_abs_diff": diff, "labels_differ": int(differ.sum()), "differ_not_near_tie": unexplained,
            "n": len(p_ref), "tol": tol, "ok": diff <= tol and unexplained == 0,
            "median_top2_gap": float(torch.median(gap))}


def _trained_state(cfg: Cfg, ctx: dict):
    """Weights trained in fp32 on the device (from the mixed-precision step's 'off' run if it ran, else trained here);
    with --quick, random-init weights (their predictions are far enough from ties to compare labels)."""
    if "trained" not in ctx:
        from lessonkit.core import set_seed
        set_seed(0)
        learn = _learner(cfg, _cifar_dls(cfg), mixed_precision=False)
        if not cfg.quick: learn.fit_one_cycle(cfg.epochs, cfg.lr)
        ctx["trained"] = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    return ctx["trained"]


# ============================================================================================================== steps
def step_env(cfg: Cfg, ctx: dict):
    import torch, torchvision, lessonkit
    out = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
           "torchvision": torchvision.__version__, "lessonkit": lessonkit.__version__, "cores": cores(),
           "torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available(),
           "device": ARGS.device, "quick": cfg.quick}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), capability=list(torch.cuda.get_device_capability(0)),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported(),
                   cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    mods = {}
    for name in ("lessonkit", "execnb", "nbdev", "fastcore", "IPython", "ipywidgets", "matplotlib", "numpy", "PIL"):
        try:
            m = __import__(name)
            mods[name] = {"version": getattr(m, "__version__", None), "file": str(Path(m.__file__).parent)}
        except Exception as e: mods[name] = {"error": f"{type(e).__name__}: {e}"}
    out["modules"] = mods
    if ARGS.installed: out["installed_from_wheels"] = json.loads(ARGS.installed)
    c = Checks()
    c(ARGS.device != "cuda" or torch.cuda.is_available(), "--device cuda but torch sees no GPU")
    c(all("error" not in v for v in mods.values()), "a module the check needs does not import")
    out["summary"] = f"torch {torch.__version__}, " + (f"{out.get('gpu')}, cuDNN {out.get('cudnn')}"
                                                        if torch.cuda.is_available() else "no GPU")
    return out, c


def _probe_cb():
    "A callback recording, per training batch: the loss, the output dtype, the input device, and whether the step ran."
    from lessonkit.callbacks import Callback

    class Probe(Callback):
        order = 50
        def before_fit(self): self.losses, self.pred_dtypes, self.x_devices, self.scales, self.skipped = [], set(), set(), [], []
        def after_loss(self):
            if not self.learn.training: return
            self.pred_dtypes.add(str(self.learn.pred.dtype)); self.x_devices.add(str(self.learn.x.device))
        def after_backward(self):
            s = self.learn.scaler
            self.scale_before = s.get_scale() if s.is_enabled() else None
        def after_step(self):
            s, loss = self.learn.scaler, float(self.learn.loss.detach().float())
            self.losses.append(loss)
            if self.scale_before is None: return
            after = s.get_scale(); self.scales.append(after)
            if after < self.scale_before:  # the scaler found inf/NaN gradients: it skipped this step and lowered its scale
                self.skipped.append({"step": len(self.losses) - 1, "epoch": self.learn.epoch, "loss": loss,
                                     "scale": self.scale_before})
    return Probe()


def step_mixed_precision(cfg: Cfg, ctx: dict):
    from lessonkit.core import set_seed
    c, out = Checks(), {}
    dls = _cifar_dls(cfg)
    want = {"off": "torch.float32", "bf16": "torch.bfloat16", "fp16": "torch.float16"}
    for mode, mp in (("off", False), ("bf16", "bf16"), ("fp16", "fp16")):
        set_seed(0)
        learn = _learner(cfg, dls, small=True, mixed_precision=mp)
        probe = _probe_cb()
        t = time.perf_counter()
        learn.fit_one_cycle(cfg.mp_epochs, cfg.mp_lr, cbs=[probe])
        _sync()
        losses = _epoch_losses(learn)
        r = {"seconds": round(time.perf_counter() - t, 2), "epoch_train_loss": losses,
             "valid_loss": learn.recorder.values[-1]["valid_loss"], "accuracy": learn.recorder.values[-1].get("accuracy"),
             "autocast_dtype": str(learn.amp_dtype), "output_dtypes": sorted(probe.pred_dtypes),
             "param_dtypes": sorted({str(p.dtype) for p in learn.model.parameters()}),
             "input_devices": sorted(probe.x_devices), "scaler_enabled": learn.scaler.is_enabled()}
        c(all(map(math.isfinite, probe.losses)), f"{mode}: a batch loss is not finite")
        c(_falls(losses), f"{mode}: the training loss did not fall ({losses})")
        c(r["output_dtypes"] == [want[mode]], f"{mode}: outputs are {r['output_dtypes']}, expected {want[mode]}")
        c(r["param_dtypes"] == ["torch.float32"], f"{mode}: weights are {r['param_dtypes']}, expected float32")
        c(r["input_devices"] == [str(learn.device)], f"{mode}: batches on {r['input_devices']}, model on {learn.device}")
        if mode == "fp16":
            # GradScaler starts at 2**16 and halves its scale at each overflow, skipping that step: a run's first steps
            # may be skipped while it finds its scale (in any PyTorch or fastai fp16 run); after the first step taken,
            # a skipped step on a finite loss means gradients overflow in training: none may be.
            calib = next((i for i in range(len(probe.losses)) if i not in {s["step"] for s in probe.skipped}), None)
            late = [s for s in probe.skipped if calib is None or s["step"] > calib]
            r.update(scale_first=probe.scales[0] if probe.scales else None, scale_last=learn.scaler.get_scale(),
                     scale_min=min(probe.scales) if probe.scales else None, skipped_steps=probe.skipped,
                     skipped_while_calibrating=len(probe.skipped) - len(late), skipped_after_calibration=late,
                     steps=len(probe.losses))
            c(learn.scaler.is_enabled(), "fp16: the gradient scaler is not enabled")
            c(r["scale_min"] is not None and r["scale_min"] > 1, f"fp16: the scaler's scale fell to {r['scale_min']}")
            c(not late, f"fp16: {len(late)} step(s) skipped on finite losses after the first step taken: {late[:3]}")
            c(r["skipped_while_calibrating"] <= 8, f"fp16: {r['skipped_while_calibrating']} steps skipped at the start")
        else: c(not learn.scaler.is_enabled(), f"{mode}: the gradient scaler is on without fp16")
        if mode == "off" and not cfg.quick: ctx["trained"] = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
        out[mode] = r
    out["model"] = "a tiny CNN (--quick)" if cfg.quick else cfg.arch
    out["summary"] = ", ".join(f"{m}: loss {out[m]['epoch_train_loss'][0]:.3f} -> {out[m]['epoch_train_loss'][-1]:.3f}"
                               for m in ("off", "bf16", "fp16")) + (f", fp16 scale {out['fp16']['scale_last']:g}, "
                                                f"{out['fp16']['skipped_while_calibrating']} steps skipped at the start, "
                                                f"{len(out['fp16']['skipped_after_calibration'])} later")
    return out, c


def step_channels_last(cfg: Cfg, ctx: dict):
    import torch
    c, out = Checks(), {}
    state = _trained_state(cfg, ctx)
    dls = _cifar_dls(cfg, augment=False)
    cuda = ARGS.device == "cuda"
    # tolerances: TF32 convolutions (cuDNN's default) and bf16 round differently along different kernels
    for prec, mp, tol in (("fp32", False, 1e-2 if cuda else 1e-4), ("bf16", "bf16", 0.1 if cuda else 5e-2)):
        probs = {}
        for cl in (False, True):
            learn = _learner(cfg, dls, mixed_precision=mp, channels_last=cl)
            learn.model.load_state_dict(state)
            convs = [m.weight for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
            frac = sum(w.is_contiguous(memory_format=torch.channels_last) for w in convs) / len(convs)
            probs[cl], _ = learn.get_preds()
            out.setdefault(prec, {})[f"cl_{'on' if cl else 'off'}_conv_weights_channels_last"] = round(frac, 3)
            c(frac == (1.0 if cl else 0.0), f"{prec}: channels_last={cl} but {frac:.0%} of the conv weights are channels_last")
        cmp = _compare_preds(probs[False], probs[True], tol)
        out[prec].update(cmp)
        c(cmp["ok"], f"{prec}: channels_last changes the predictions: {cmp}")
    out["summary"] = ", ".join(f"{p}: max |dp| {out[p]['max_abs_diff']:.2g}, {out[p]['labels_differ']} labels differ"
                               for p in ("fp32", "bf16"))
    return out, c


def step_augment_on_device(cfg: Cfg, ctx: dict):
    from lessonkit.augment import BatchAugment
    from lessonkit.core import set_seed
    c, seen = Checks(), {"aug_in": set(), "aug_out": set(), "model_in": set(), "aug_change": []}
    dls = _cifar_dls(cfg)
    aug = dls.train.augment
    c(isinstance(aug, BatchAugment), f"the training loader's augmentation is {type(aug).__name__}, not BatchAugment")
    def pre(mod, args): seen["aug_in"].add(str(args[0].device)); seen["last_in"] = args[0].detach().clone()
    def post(mod, args, res):
        seen["aug_out"].add(str(res.device))
        if res.shape == seen["last_in"].shape: seen["aug_change"].append(float((res - seen["last_in"]).abs().mean()))
    set_seed(0)
    learn = _learner(cfg, dls)
    hooks = [aug.register_forward_pre_hook(pre), aug.register_forward_hook(post),
             learn.model.register_forward_pre_hook(lambda m, a: seen["model_in"].add(str(a[0].device)))]
    try: learn.fit(1, cfg.lr)
    finally:
        for h in hooks: h.remove()
    model_dev = str(next(learn.model.parameters()).device)
    # the loader alone: how fast batches come, augmented on the device (decoded once, before this)
    _sync(); t = time.perf_counter(); n = 0
    for x, y in dls.train: n += len(x)
    _sync(); secs = time.perf_counter() - t
    out = {"model_device": model_dev, "augment_input_devices": sorted(seen["aug_in"]),
           "augment_output_devices": sorted(seen["aug_out"]), "model_input_devices": sorted(seen["model_in"]),
           "mean_abs_change": round(statistics.mean(seen["aug_change"]), 4) if seen["aug_change"] else None,
           "loader_img_per_s": round(n / secs, 1), "batch_device": str(x.device), "batch_dtype": str(x.dtype)}
    # how batches reach the GPU: the profiler names each copy, e.g. "Memcpy HtoD (Pinned -> Device)"
    from torch.profiler import ProfilerActivity, profile
    cuda = ARGS.device == "cuda"
    try:
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            for i, _ in zip(range(2), dls.train): pass
            _sync()
        names = [e.name for e in prof.events() if "Memcpy" in e.name]
        out["copies"] = {n: names.count(n) for n in sorted(set(names))}
    except Exception as e: out["copies"] = f"the profiler did not run: {type(e).__name__}: {e}"
    if cuda and isinstance(out["copies"], dict):  # the images go through pinned memory; only the labels may not
        c(any("HtoD (Pinned" in n for n in out["copies"]), f"no copy from pinned memory: {out['copies']}")
    for k in ("augment_input_devices", "augment_output_devices", "model_input_devices"):
        c(out[k] == [model_dev], f"{k} = {out[k]}, the model is on {model_dev}")
    c(out["batch_device"] == model_dev, f"batches come on {out['batch_device']}")
    c(out["mean_abs_change"] is not None and out["mean_abs_change"] > 1e-3, "the augmentation did not change the images")
    out["summary"] = (f"augment {out['augment_input_devices']} -> {out['augment_output_devices']}, model input "
                      f"{out['model_input_devices']}, loader {out['loader_img_per_s']:.0f} img/s")
    return out, c


def _stop_after(epoch: int):
    from lessonkit.callbacks import Callback, CancelFitException
    class StopAfter(Callback):
        order = 60  # after CheckpointCallback (40) has saved this epoch
        def after_epoch(self):
            if self.learn.epoch == epoch: raise CancelFitException()
    return StopAfter()


def step_checkpoint_resume(cfg: Cfg, ctx: dict):
    import torch
    from lessonkit.callbacks import CheckpointCallback
    from lessonkit.core import set_seed
    c, out = Checks(), {}
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    dls = _cifar_dls(cfg)
    epochs, stop = 3, 0  # interrupted after the first epoch, resumed for the other two
    variants = [("default", "auto")] + ([("fp16", "fp16")] if ARGS.device == "cuda" else [])
    try:
        for name, mp in variants:
            runs = {}
            for run in ("whole", "interrupted"):
                set_seed(1, deterministic=True)
                learn = _learner(cfg, dls, small=True, mixed_precision=mp)
                cbs = [CheckpointCallback(f"ckpt_{name}_{run}")] + ([_stop_after(stop)] if run == "interrupted" else [])
                learn.fit_one_cycle(epochs, cfg.lr, cbs=cbs)
                runs[run] = learn
            set_seed(123)  # a different state: resume must restore the checkpoint's
            resumed = _learner(cfg, dls, small=True, mixed_precision=mp)
            resumed.fit_one_cycle(epochs, cfg.lr, cbs=[CheckpointCallback(f"ckpt_{name}_interrupted")],
                                  resume=f"ckpt_{name}_interrupted")
            whole, res = runs["whole"].recorder, resumed.recorder
            k = runs["interrupted"].recorder.epoch_iters[-1]  # batches before the interruption
            a, b = whole.losses[k:], res.losses[k:]
            diffs = [abs(x - y) for x, y in zip(a, b)]
            # the GPU's own run-to-run noise (atomic adds in some backward kernels): the first epoch, run twice alike
            noise = max((abs(x - y) for x, y in zip(whole.losses[:k], runs["interrupted"].recorder.losses[:k])), default=0.0)
            steps = {str(st["step"].device) for st in resumed.opt.state.values() if torch.is_tensor(st.get("step"))}
            r = {"epochs": epochs, "interrupted_after_epoch": stop, "batches_compared": len(diffs),
                 "max_abs_loss_diff": max(diffs) if diffs else None, "first_epoch_noise": noise,
                 "mean_abs_loss_diff": statistics.mean(diffs) if diffs else None, "whole_losses_after": [round(x, 5) for x in a],
                 "resumed_losses_after": [round(x, 5) for x in b], "epochs_recorded": len(res.values),
                 "whole_epoch_s": [round(v["time"], 3) for v in whole.values],
                 "resumed_epoch_s": [round(v["time"], 3) for v in res.values],
                 "optimizer_step_devices_after_resume": sorted(steps),
                 "lrs_equal": [l for l in whole.lrs[k:]] == [l for l in res.lrs[k:]]}
            # a resume that lost the random state, the optimizer's or the schedule's differs by 0.05 or more per batch
            tol = 1e-4 if ARGS.device == "cpu" else max(2e-3, 5 * noise)
            r["tol"] = tol
            c(len(a) == len(b) and len(a) > 0, f"{name}: the resumed run has {len(b)} batches after the interruption, "
                                                f"the whole run {len(a)}")
            c(r["max_abs_loss_diff"] is not None and r["max_abs_loss_diff"] <= tol,
              f"{name}: resumed losses differ from the whole run's by up to {r['max_abs_loss_diff']} (tol {tol})")
            c(r["epochs_recorded"] == epochs, f"{name}: the resumed recorder has {r['epochs_recorded']} epochs")
            c(r["lrs_equal"], f"{name}: the resumed learning rates differ from the whole run's")
            c(r["optimizer_step_devices_after_resume"] == ["cpu"], f"{name}: Adam's step counts are on "
              f"{r['optimizer_step_devices_after_resume']} after resume (on a GPU: two syncs per parameter per step)")
            if mp == "fp16":
                r["scale_whole"], r["scale_resumed"] = runs["whole"].scaler.get_scale(), resumed.scaler.get_scale()
                c(r["scale_whole"] == r["scale_resumed"], f"fp16: the scaler's scale {r['scale_resumed']} after resume, "
                                                          f"{r['scale_whole']} without interruption")
            out[name] = r
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
    out["model"] = "a tiny CNN (--quick)" if cfg.quick else cfg.arch
    out["summary"] = ", ".join(f"{n}: max |dloss| {out[n]['max_abs_loss_diff']:.2g} over {out[n]['batches_compared']} "
                               "batches" for n, _ in variants)
    return out, c


def step_export_to_cpu(cfg: Cfg, ctx: dict):
    from lessonkit.inference import load_learner
    c = Checks()
    state = _trained_state(cfg, ctx)
    dls = _cifar_dls(cfg, augment=True)
    learn = _learner(cfg, dls)  # the device's defaults: mixed precision and channels_last on a GPU
    learn.model.load_state_dict(state)
    f = learn.export(cfg.tmp / "gpu_export.pth")
    cpu = load_learner(f, device="cpu")
    p_dev, _ = learn.get_preds()
    p_cpu, _ = cpu.get_preds(cpu.dls.test_dl(dls.valid.items))
    strict = _learner(cfg, dls, mixed_precision=False); strict.model.load_state_dict(state)
    p_dev32, _ = strict.get_preds()
    files = list(dls.valid.items[:4])
    one = [(learn.predict(x)[0], cpu.predict(x)[0]) for x in files]
    cuda = ARGS.device == "cuda"
    out = {"file_mb": round(f.stat().st_size / 2**20, 2), "cpu_learner_device": str(cpu.device),
           "device_learner_autocast": str(learn.amp_dtype),
           "default_precision": _compare_preds(p_dev, p_cpu, 0.1 if learn.amp_dtype is not None else 1e-4),
           "fp32": _compare_preds(p_dev32, p_cpu, 1e-2 if cuda else 1e-4),
           "predict_labels": one}
    c(out["cpu_learner_device"] == "cpu", "load_learner(device='cpu') made a learner on another device")
    c(out["fp32"]["ok"], f"fp32 on the device vs the CPU: {out['fp32']}")
    c(out["default_precision"]["ok"], f"default precision on the device vs the CPU: {out['default_precision']}")
    c(all(a == b for a, b in one), f"predict() labels differ: {one}")
    out["summary"] = (f"{out['fp32']['n']} images: fp32 labels differ {out['fp32']['labels_differ']}, "
                      f"default precision {out['default_precision']['labels_differ']} (max |dp| "
                      f"{out['default_precision']['max_abs_diff']:.2g})")
    return out, c


def _py_env(paths: list[Path | str]) -> dict:
    "This environment with `paths` first on PYTHONPATH (workers inherit the bootstrap's folders after them)."
    old = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(p) for p in paths] + ([old] if old else [])))


DEADLINE = [math.inf]  # perf_counter time by which every worker must have ended (--budget-s plus a minute)


def _worker(args: list[str], env: dict, timeout: float) -> dict:
    "Run `gpu_check.py --worker ...` in a fresh process; the JSON of its last stdout line, or an error with its stderr."
    t = time.perf_counter()
    if t > DEADLINE[0] - 10: return {"ok": False, "error": "not started: the time budget (--budget-s) is used up"}
    timeout = min(timeout, DEADLINE[0] - t)
    try:
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--device", ARGS.device, "--tmp", ARGS.tmp,
                            *(["--quick"] if ARGS.quick else []), "--fastai-dir", str(ARGS.fastai_dir), *args],
                           env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        return {"ok": False, "error": f"timed out after {timeout} s", "stderr": (e.stderr or "")[-3000:] if isinstance(e.stderr, str) else ""}
    lines = r.stdout.strip().splitlines()
    try: res = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError: res = None
    if r.returncode or not isinstance(res, dict):
        return {"ok": False, "error": f"exit code {r.returncode}", "stderr": r.stderr[-4000:], "stdout": r.stdout[-1000:]}
    res["process_s"] = round(time.perf_counter() - t, 2)
    return res


def step_lessons(cfg: Cfg, ctx: dict):
    sys.path.insert(0, str(ROOT / "tools"))
    from full_mode import FULL_ARCH, layout, random_weights, weights_for
    c, out = Checks(), {}
    base = Path(tempfile.mkdtemp(prefix="lessons_", dir=cfg.tmp))
    t = time.perf_counter()
    vehicles = layout(base / "home")
    random_weights(base / "torch", weights_for(cfg.lessons))
    (base / "stand_ins.json").write_text(json.dumps({"home": str(base / "home"), "torch": str(base / "torch"),
                                                     "vehicles": str(vehicles)}))
    out["stand_ins_s"] = round(time.perf_counter() - t, 2)
    out["sizes"] = cfg.lesson_sizes
    for lesson in cfg.lessons:
        work = base / f"work_{lesson}"; work.mkdir()
        r = _worker(["--worker", "lesson", "--lesson", lesson, "--lesson-base", str(base), "--lesson-sizes", cfg.lesson_sizes],
                    _py_env([ROOT]), cfg.lesson_timeout)
        res = r.get("results") or {}
        ok = c(r.get("ok") is not False and res.get("mode") == "full" and res.get("arch") == FULL_ARCH[lesson],
               f"{lesson}: {r.get('error') or r.get('lesson_error') or res}")
        r["ok"] = ok
        out[lesson] = r
        print(f"    {lesson}: {'ok' if ok else 'FAILED'} ({r.get('seconds', r.get('process_s', 0)):.0f} s)", flush=True)
    out["summary"] = ", ".join(f"{l} {out[l].get('seconds', float('nan')):.0f} s" for l in cfg.lessons)
    return out, c


def _fastai_status(cfg: Cfg, ctx: dict) -> str | None:
    "None if fastai imports from --fastai-dir, else why not (asked once per run)."
    if "fastai_status" not in ctx: ctx["fastai_status"] = _fastai_import(cfg)
    return ctx["fastai_status"]


def _fastai_import(cfg: Cfg) -> str | None:
    if not (cfg.fastai_dir / "fastai").is_dir():
        return (f"fastai is not installed in {cfg.fastai_dir} (on the CPU: bench/_common.ensure_fastai() installs it; "
                "on a GPU machine: bench/gpu_pack.py carries it)")
    r = subprocess.run([sys.executable, "-c", "import fastai.vision.all, fastai; print(fastai.__version__)"],
                       env=_py_env([cfg.fastai_dir, ROOT]), capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return (f"fastai does not import here ({last}); what it needs from the machine is pandas, scikit-learn and scipy "
                "(too big to carry)")
    if r.stdout.strip() != FASTAI_VERSION: return f"fastai {r.stdout.strip()} found, {FASTAI_VERSION} expected"
    return None


def _train_workers(cfg: Cfg, configs: str, threads: str, tools: list[str], repeats: int) -> dict:
    "Alternate lessonkit's and fastai's training workers (A B, then B A, ...); every run's JSON, per tool."
    runs = {t: [] for t in tools}
    for r in range(repeats):
        for tool in (tools if r % 2 == 0 else tools[::-1]):
            path = [cfg.fastai_dir, ROOT] if tool == "fastai" else [ROOT]
            runs[tool].append(_worker(["--worker", f"train_{tool}", "--configs", configs, "--threads", threads,
                                       "--seed", str(r)], _py_env(path), 600))
    return runs


def _med(runs: list[dict], config: str, phase: str, key: str):
    xs = [r[config][phase][key] for r in runs if r.get("ok") is not False and config in r]
    return round(statistics.median(xs), 3) if xs else None


def step_speed(cfg: Cfg, ctx: dict):
    c = Checks()
    why = _fastai_status(cfg, ctx)
    tools = ["lessonkit"] + (["fastai"] if why is None else [])
    runs = _train_workers(cfg, ",".join(SPEED_CONFIGS), "default", tools, cfg.repeats)
    ctx["speed_runs"] = runs  # gpu_busy reads its default-threads figures from these
    table = {}
    for conf in SPEED_CONFIGS:
        for phase in ("frozen", "unfrozen"):
            row = {t: _med(runs[t], conf, phase, "img_s") for t in tools}
            if "fastai" in tools: row["lessonkit/fastai"] = (round(row["lessonkit"] / row["fastai"], 3)
                                                             if row["lessonkit"] and row["fastai"] else None)
            table[f"{conf} {phase}"] = row
    for t in tools:
        bad = [r for r in runs[t] if r.get("ok") is False]
        c(not bad, f"{t}: {len(bad)} run(s) failed: {bad[:1]}")
        c(all(isinstance(v, (int, float)) and v > 0 for k, row in table.items() for v in [row.get(t)]),
          f"{t}: missing or non-positive images/s in {table}")
    out = {"unit": "img/s (training phase, steady state: first batches of each epoch left out)",
           "arch": cfg.speed_arch, "size": cfg.speed_size, "bs": cfg.speed_bs,
           "batches_per_epoch": cfg.speed_batches, "repeats": cfg.repeats, "table": table, "runs": runs,
           "fastai": {"version": FASTAI_VERSION, "skipped": why} if why else {"version": FASTAI_VERSION}}
    lk = lambda k: table[k]["lessonkit"]
    out["summary"] = (f"lessonkit unfrozen img/s fp32 {lk('fp32 unfrozen')}, bf16 {lk('bf16 unfrozen')}, "
                      f"bf16+cl {lk('bf16_cl unfrozen')}" + (f"; fastai skipped: {why}" if why else
                      f"; fastai bf16+cl {table['bf16_cl unfrozen'].get('fastai')}"))
    return out, c


def step_gpu_busy(cfg: Cfg, ctx: dict):
    c = Checks()
    why = _fastai_status(cfg, ctx)
    tools = ["lessonkit"] + (["fastai"] if why is None else [])
    conf = cfg.busy_config
    out = {"config": conf, "what": "busy = 1 - (time waiting for the next batch) / (training phase), after each "
           "step the probe waits for the GPU to finish; wait includes each tool's batch augmentation",
           "fastai": {"skipped": why} if why else {"version": FASTAI_VERSION}}
    for threads in ("default", "2"):
        # default threads: the speed step's runs of the same configuration, if it ran (medians over its repeats)
        have = ctx.get("speed_runs") if threads == "default" and conf in SPEED_CONFIGS else None
        runs = have if have and all(t in have for t in tools) else _train_workers(cfg, conf, threads, tools, 1)
        row = {}
        for t in tools:
            good = [r for r in runs[t] if r.get("ok") is not False and conf in r]
            if not c(good, f"{t}, {threads} threads: {runs[t][0].get('error')} {runs[t][0].get('stderr', '')[-500:]}"):
                continue
            row[t] = {ph: {k: statistics.median(r[conf][ph][k] for r in good)
                           for k in ("busy", "wait_s", "total_s", "first_wait_s", "img_s_all")}
                      for ph in ("frozen", "unfrozen")}
            row[t].update(threads=good[0].get("threads"), data_s=good[0].get("data_s"), runs=len(good),
                          from_speed_step=runs is have)
            for ph in ("frozen", "unfrozen"):
                b = row[t][ph]["busy"]
                c(isinstance(b, float) and 0 <= b <= 1, f"{t}, {threads} threads, {ph}: busy = {b}")
        out[f"threads_{threads}"] = row
    def g(tool, th):
        r = out.get(f"threads_{th}", {}).get(tool, {})
        return "/".join(f"{r[ph]['busy']:.2f}" if ph in r else "-" for ph in ("frozen", "unfrozen"))
    out["summary"] = "busy frozen/unfrozen, default threads and 2: " + "; ".join(
        f"{t} {g(t, 'default')} and {g(t, '2')}" for t in tools) + ("; fastai skipped" if why else "")
    return out, c


# ============================================================================================================ workers
def worker_lesson(a) -> dict:
    "One lesson in full mode, in this process (the parent laid out the stand-ins under --lesson-base)."
    import torch
    sys.path.insert(0, str(ROOT / "tools"))
    from full_mode import LessonFailed, run_full_mode
    base = Path(a.lesson_base)
    p = {k: Path(v) for k, v in json.loads((base / "stand_ins.json").read_text()).items()}
    if torch.cuda.is_available(): torch.cuda.reset_peak_memory_stats()
    try: r = run_full_mode(a.lesson, p["home"], p["torch"], p["vehicles"], base / f"work_{a.lesson}",
                           sizes=a.lesson_sizes == "small")
    except LessonFailed as e: return {"ok": False, "lesson_error": str(e)[-6000:]}
    r["seconds"] = round(r["seconds"], 1)
    if torch.cuda.is_available(): r["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return r


class _Meter:
    "Times the training phase of an epoch and the waits for batches between steps (shared by both tools' callbacks)."
    def __init__(self, skip: int): self.skip, self.rows = skip, []
    def start(self):
        _sync(); self.t0 = self.last = time.perf_counter(); self.waits, self.steps, self.n = [], [], []
    def got_batch(self): self.t_batch = time.perf_counter(); self.waits.append(self.t_batch - self.last)
    def done_batch(self, n: int):
        _sync(); self.last = time.perf_counter(); self.steps.append(self.last - self.t_batch); self.n.append(n)
    def stop(self) -> dict:
        _sync(); total = time.perf_counter() - self.t0
        s = self.skip if len(self.n) > self.skip else 0
        steady = sum(self.waits[s:]) + sum(self.steps[s:])
        r = {"img_s": sum(self.n[s:]) / steady, "img_s_all": sum(self.n) / total, "total_s": total,
             "wait_s": sum(self.waits), "busy": 1 - sum(self.waits) / total, "first_wait_s": self.waits[0] if self.waits else None,
             "batches": len(self.n), "images": sum(self.n), "steady_batches": len(self.n) - s}
        self.rows.append(r)
        return r


def _pets():
    "The bundled Pets image files, their labels and the class names."
    from lessonkit.data import get_image_files
    files = get_image_files(ROOT / "data" / "pets" / "images")
    labels = [re.match(PETS_PAT, f.name).group(1) for f in files]
    return files, labels, sorted(set(labels))


def _threads(a):
    import torch
    if a.threads == "2": torch.set_num_threads(2)
    return torch.get_num_threads()


def worker_train_lessonkit(a) -> dict:
    import torch
    from lessonkit.augment import aug_transforms
    from lessonkit.callbacks import Callback
    from lessonkit.core import set_seed
    from lessonkit.data import DataLoaders, ImageLoader, decode_images
    from lessonkit.learner import vision_learner
    from lessonkit.metrics import accuracy
    cfg, out = Cfg(a), {"threads": None}
    nw = 2 if a.threads == "2" else None
    out["threads"] = {"torch": _threads(a), "decode_workers": nw or "default"}
    files, labels, classes = _pets()
    t = time.perf_counter()
    imgs, fails = decode_images(files, cfg.speed_size, "crop", num_workers=nw, progress=False)
    out["data_s"] = round(time.perf_counter() - t, 3)
    idx = [classes.index(l) for l in labels]
    k = math.ceil(cfg.speed_batches * cfg.speed_bs / len(files))
    n_train = cfg.speed_batches * cfg.speed_bs
    train = ImageLoader((files * k)[:n_train], (imgs * k)[:n_train], (idx * k)[:n_train], classes, bs=cfg.speed_bs,
                        shuffle=True, drop_last=True, augment=aug_transforms(), device=a.device)
    valid = ImageLoader(files[:cfg.speed_bs], imgs[:cfg.speed_bs], idx[:cfg.speed_bs], classes, bs=cfg.speed_bs,
                        device=a.device)
    dls = DataLoaders(train, valid)
    meter = _Meter(cfg.skip_batches)

    class Timer(Callback):
        order = 200  # last: after the recorder has read the loss
        def before_train(self): meter.start()
        def before_batch(self):
            if self.learn.training: meter.got_batch()
        def after_batch(self):
            if self.learn.training: meter.done_batch(len(self.learn.x))
        def after_train(self): self.result = meter.stop()

    for conf in a.configs.split(","):
        set_seed(a.seed)
        mp, cl = {"fp32": (False, False), "bf16": ("bf16", False), "bf16_cl": ("bf16", True)}[conf]
        learn = vision_learner(dls, cfg.speed_arch, pretrained=False, metrics=accuracy, path=cfg.tmp,
                               mixed_precision=mp, channels_last=cl)
        learn.freeze()
        timer = Timer()
        res = {}
        learn.fit_one_cycle(1, cbs=[timer]); res["frozen"] = timer.result
        learn.unfreeze(); learn.fit_one_cycle(1, cbs=[timer]); res["unfrozen"] = timer.result
        res["amp"], res["channels_last"] = str(learn.amp_dtype), cl
        out[conf] = res
    out["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    return out


def worker_train_fastai(a) -> dict:
    import warnings; warnings.filterwarnings("ignore")
    import torch
    from fastai.vision.all import (Callback, CategoryBlock, DataBlock, ImageBlock, IndexSplitter, Normalize, Resize,
                                   accuracy, aug_transforms, imagenet_stats, set_seed, vision_learner)
    import fastai, torchvision
    cfg, out = Cfg(a), {"fastai": fastai.__version__}
    nw = 2 if a.threads == "2" else None
    out["threads"] = {"torch": _threads(a), "loader_workers": nw if nw is not None else "default"}
    files, labels, classes = _pets()
    n_train = cfg.speed_batches * cfg.speed_bs
    k = math.ceil(n_train / len(files))
    items = (files * k)[:n_train] + files[:cfg.speed_bs]
    label_of = dict(zip(files, labels))
    db = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=lambda _: items,
                   splitter=IndexSplitter(list(range(n_train, len(items)))), get_y=lambda f: label_of[f],
                   item_tfms=Resize(cfg.speed_size), batch_tfms=[*aug_transforms(), Normalize.from_stats(*imagenet_stats)])
    t = time.perf_counter()
    dls = db.dataloaders(ROOT, bs=cfg.speed_bs, device=torch.device(a.device), **({"num_workers": nw} if nw else {}))
    out["data_s"] = round(time.perf_counter() - t, 3)
    out["threads"]["loader_workers_used"] = dls.train.fake_l.num_workers
    meter = _Meter(cfg.skip_batches)

    class Timer(Callback):
        order = 200
        def before_train(self): meter.start()
        def before_batch(self):
            if self.training: meter.got_batch()
        def after_batch(self):
            if self.training: meter.done_batch(len(self.xb[0]))
        def after_train(self): self.result = meter.stop()

    for conf in a.configs.split(","):
        set_seed(a.seed)
        learn = vision_learner(dls, getattr(torchvision.models, cfg.speed_arch), pretrained=False, normalize=False,
                               metrics=accuracy, path=cfg.tmp)
        if conf == "bf16": learn.to_bf16()
        if conf == "bf16_cl": learn.to_channelslast(amp_mode="bf16")
        learn.freeze()
        timer = Timer()
        res = {}
        with learn.no_bar(), learn.no_logging():
            learn.fit_one_cycle(1, cbs=[timer]); res["frozen"] = timer.result
            learn.unfreeze(); learn.fit_one_cycle(1, cbs=[timer]); res["unfrozen"] = timer.result
        out[conf] = res
    out["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    return out


WORKERS = {"lesson": worker_lesson, "train_lessonkit": worker_train_lessonkit, "train_fastai": worker_train_fastai}


# ============================================================================================================= driver
def bootstrap(a) -> None:
    "--wheels: install the packed wheels into a temporary folder (gpu_pack.install), then run this script again from it."
    from gpu_pack import PackError, install
    target = Path(tempfile.mkdtemp(prefix="gpu_check_site_"))
    t = time.perf_counter()
    try: dirs = install(a.wheels, target)
    except PackError as e: sys.exit(f"gpu_check: {e}")
    info = {"wheels": str(a.wheels), "target": str(target), "seconds": round(time.perf_counter() - t, 1),
            "groups": {g: sorted(p.name for p in d.iterdir() if p.name.endswith(".dist-info")) for g, d in dirs.items()}}
    print(f"installed the packed wheels into {target} ({info['seconds']} s)", flush=True)
    argv, skip = [], False
    for x in sys.argv[1:]:
        if skip: skip = False; continue
        if x == "--wheels": skip = True; continue
        if x.startswith("--wheels="): continue
        argv.append(x)
    if "fastai" in dirs and "--fastai-dir" not in argv: argv += ["--fastai-dir", str(dirs["fastai"])]
    env = _py_env([dirs["check"], ROOT])
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--installed", json.dumps(info)], env=env)
    sys.exit(r.returncode)


def write_json(path: Path, data: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    ap.add_argument("--quick", action="store_true", help="small data, sizes, epochs and repeats, one lesson (CPU test)")
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of " + ",".join(STEPS))
    ap.add_argument("--lessons", default=None, help="comma-separated lessons (default: all; --quick: 01_pets)")
    ap.add_argument("--lesson-sizes", choices=["small", "own"], default=None,
                    help="lessons at the test's small image sizes or their own (default: own on a GPU)")
    ap.add_argument("--repeats", type=int, default=None, help="speed: runs per tool (default 3, --quick 1)")
    ap.add_argument("--budget-s", type=float, default=None, help="skip the steps that would start after this many s")
    ap.add_argument("--wheels", type=Path, default=None, help="install these packed wheels first (bench/gpu_pack.py)")
    ap.add_argument("--fastai-dir", type=Path, default=FASTAI_DIR)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--installed", default=None, help=argparse.SUPPRESS)
    # worker mode (internal)
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--lesson", help=argparse.SUPPRESS)
    ap.add_argument("--lesson-base", help=argparse.SUPPRESS)
    ap.add_argument("--configs", default=",".join(SPEED_CONFIGS), help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="default", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = ARGS = ap.parse_args()
    if a.wheels is not None and a.worker is None: return bootstrap(a)
    os.environ.setdefault("IN_TEST", "1")  # lessonkit: no progress bars in logs
    os.environ.setdefault("MPLBACKEND", "Agg")
    if a.worker:
        a.tmp = a.tmp or tempfile.mkdtemp(prefix="gpu_check_")
        with contextlib.redirect_stdout(sys.stderr): res = WORKERS[a.worker](a)  # stdout's last line: the JSON only
        print(json.dumps(res, default=str))
        return
    unknown = [s for s in a.steps.split(",") if s not in STEPS]
    if unknown: sys.exit(f"gpu_check: unknown steps {unknown}; choose from {', '.join(STEPS)}")
    steps = [s for s in STEPS if s in a.steps.split(",")]
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        a.tmp = tmp
        cfg = Cfg(a)
        t_start = time.perf_counter()
        if a.budget_s is not None: DEADLINE[0] = t_start + a.budget_s + 60
        res = {"check": "bench/gpu_check.py", "device": a.device, "quick": a.quick,
               "command": " ".join([Path(sys.executable).name, *sys.argv]), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "steps": {}}
        ctx: dict = {}
        for i, name in enumerate(steps, 1):
            elapsed = time.perf_counter() - t_start
            if a.budget_s is not None and elapsed > a.budget_s:
                r = {"ok": None, "skipped": f"time budget: {elapsed:.0f} s used of --budget-s {a.budget_s:g}"}
                print(f"[{i}/{len(steps)}] {name}: skipped ({r['skipped']})", flush=True)
            else:
                t = time.perf_counter()
                try:
                    out, c = globals()[f"step_{name}"](cfg, ctx)
                    r = {"ok": not c.failed, **({"failed_checks": c.failed} if c.failed else {}), **out}
                except Exception as e:
                    r = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
                r["seconds"] = round(time.perf_counter() - t, 1)
                status = "ok" if r["ok"] else "FAILED"
                detail = r.get("summary") if r["ok"] else (r.get("error") or "; ".join(r.get("failed_checks", [])))
                print(f"[{i}/{len(steps)}] {name}: {status} ({r['seconds']:.1f} s) {str(detail)[:300]}", flush=True)
            res["steps"][name] = r
            res["wall_s"] = round(time.perf_counter() - t_start, 1)
            write_json(a.out, res)
        ok = [n for n, r in res["steps"].items() if r["ok"]]
        failed = [n for n, r in res["steps"].items() if r["ok"] is False]
        skipped = [n for n, r in res["steps"].items() if r["ok"] is None]
        res["summary"] = {"ok": ok, "failed": failed, "skipped": skipped}
        write_json(a.out, res)
    print(json.dumps({"gpu_check": a.device, "ok": len(ok), "failed": failed, "skipped": skipped,
                      "wall_s": res["wall_s"], "out": str(a.out)}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__": main()
