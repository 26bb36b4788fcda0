"""ddp_scaling: training images per second of the same epochs in 2 processes x 1 thread (`learn.distributed()` under
torchrun, gloo) against 1 process x 2 threads, on this CPU. DDP's own cost is what separates them: the same images,
model, global batch and number of steps, and the same cores. `ratio_vs_one_process` = 2 processes / 1 process (goal
>= 0.9). See /work/shared/notes/benchmarks.md.

Each run is a fresh process (one, or torchrun's two), interleaved (1 2 1 2 ...), `--repeats` times; medians. The details
also give images per CPU second of all processes together (`ratio_cpu`): the work DDP adds, which a busy machine
disturbs far less than it disturbs time (one process's 2 threads wait for each other at every operation, so when other
programs take the cores, they lose more time than 2 processes that wait for each other once per step).
ResNet-18 (random weights: nothing is downloaded; timings don't depend on them) on the bundled Pets sample (259
images; `--path` for another folder of Pets images) at 128 px, augmented, global batch 64 (64 in one process, 32 in each of two),
`--epochs` epochs: an unfrozen fit (the headline), then a frozen one (body frozen, head trained), and in the 2-process
run the frozen fit once more with DDP's `find_unused_parameters=True`, to see what that search costs. The first epoch
of each fit is a warm-up: the rates are those of the later epochs (all epochs are in the details).

With `--device cuda` the same on GPUs: 1 GPU against `torchrun --nproc_per_node=<GPUs>` (NCCL), on a machine with 2 or
more GPUs (on one GPU, only the 1-process side runs, and the JSON says so). Not yet run on a GPU.

Run from the repository root, on a quiet machine:  .venv/bin/python bench/ddp_scaling.py [--repeats 3] [--epochs 3]
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _common import cores, load1, median, result, rnd, write_result  # noqa: E402

SIZE, GLOBAL_BS, PAT = 128, 64, r"^(.+)_\d+\.jpg$"


# ------------------------------------------------------------------------------------- one run (in its own process(es))
def worker(device: str, epochs: int, path: Path) -> dict | None:
    "Train in this process (one of `WORLD_SIZE`); rank 0 returns the rates."
    import torch
    from lessonkit.augment import aug_transforms
    from lessonkit.callbacks import Callback
    from lessonkit.core import rank, set_seed, world_size
    from lessonkit.data import DataLoaders, get_image_files
    from lessonkit.learner import vision_learner

    class TrainTimer(Callback):
        "Images (all processes'), seconds and CPU seconds (all processes') of each epoch's training phase."
        def before_fit(self): self.epochs = []
        def before_train(self): self.n, self.t0, self.c0 = 0, time.perf_counter(), time.process_time()
        def after_batch(self):
            if self.learn.training: self.n += len(self.learn.x) * world_size()
        def after_train(self):
            if self.learn.device.type == "cuda": torch.cuda.synchronize()
            cpu = torch.tensor([time.process_time() - self.c0], dtype=torch.float64)
            if world_size() > 1: torch.distributed.all_reduce(cpu)  # every process's CPU time (all ranks are here)
            self.epochs.append((self.n, time.perf_counter() - self.t0, float(cpu)))
        def rate(self, skip: int = 1, cpu: bool = False) -> float:
            "Images per second (per CPU second with `cpu`) of the epochs after the first `skip`."
            later = self.epochs[skip:] or self.epochs
            return sum(e[0] for e in later) / sum(e[2 if cpu else 1] for e in later)

    n = world_size()
    set_seed(0)
    files = get_image_files(path)
    dls = DataLoaders.from_name_re(path, files, PAT, valid_pct=0.2, seed=42, size=SIZE, bs=GLOBAL_BS // n,
                                   batch_tfms=aug_transforms(), device=device, progress=False)
    learn = vision_learner(dls, "resnet18", pretrained=False, num_threads=0 if n > 1 else None)
    learn.remove_cb(learn.progress); learn.remove_cb(learn.show_graph)
    timer, out = TrainTimer(), {"processes": n, "threads": torch.get_num_threads() if n == 1 else None}
    block = lambda **kw: learn.distributed(**kw) if n > 1 else nullcontext()
    with block():
        learn.fit(epochs, 1e-3, cbs=[timer])
        out["threads"] = out["threads"] or torch.get_num_threads()
    out["unfrozen"], out["unfrozen_cpu"], out["unfrozen_epochs"] = timer.rate(), timer.rate(cpu=True), timer.epochs
    learn.freeze()
    with block(): learn.fit(epochs, 1e-3, cbs=[timer])
    out["frozen"], out["frozen_cpu"], out["frozen_epochs"] = timer.rate(), timer.rate(cpu=True), timer.epochs
    if n > 1:
        with block(find_unused_parameters=True): learn.fit(epochs, 1e-3, cbs=[timer])
        out["frozen_find_unused"], out["frozen_find_unused_epochs"] = timer.rate(), timer.epochs
    out["train_images"] = dls.train.n
    return out if rank() == 0 else None


def run(procs: int, device: str, epochs: int, path: Path) -> dict:
    "One measurement in fresh processes: `procs` == 1 plainly, else under torchrun."
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_WAIT_POLICY="PASSIVE")
    args = [str(Path(__file__).resolve()), "--worker", "--device", device, "--epochs", str(epochs), "--path", str(path)]
    if procs == 1: cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *args]
        if device == "cpu": env["GLOO_SOCKET_IFNAME"] = "lo"
    load = load1()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if r.returncode: raise RuntimeError(f"{procs}-process run failed:\n{r.stderr[-4000:]}")
    line = next(l for l in reversed(r.stdout.strip().splitlines()) if l.startswith("{"))
    return {**json.loads(line), "load_before": load, "load_after": load1()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--path", type=Path, default=ROOT / "data" / "pets" / "images", help="a folder of Pets images")
    a = ap.parse_args()
    path = a.path
    if a.worker:
        out = worker(a.device, a.epochs, path)
        if out is not None: print(json.dumps(out), flush=True)
        return
    if a.device == "cuda":
        import torch
        gpus = torch.cuda.device_count()
        many = gpus if gpus >= 2 else None
    else: many = 2
    runs = {1: [], many: []} if many else {1: []}
    for i in range(a.repeats):  # interleaved: 1 process, then several, then 1 ...
        for procs in runs:
            runs[procs].append(run(procs, a.device, a.epochs, path))
            print(f"repeat {i + 1}: {procs} process(es): {rnd(runs[procs][-1]['unfrozen'], 1)} img/s unfrozen, "
                  f"{rnd(runs[procs][-1]['frozen'], 1)} frozen", file=sys.stderr, flush=True)
    med = lambda procs, k: median(r[k] for r in runs[procs]) if procs in runs else None
    one, two = med(1, "unfrozen"), med(many, "unfrozen")
    ratio = lambda a, b: None if a is None or not b else round(a / b, 3)
    details = {
        "what": f"training images/s of a fit's epochs after the first ({a.epochs} epochs), resnet18 (random weights) at "
                f"{SIZE}px, global batch {GLOBAL_BS}, augmented, {path.parent.name}/{path.name} "
                f"({runs[1][0]['train_images']} training); fresh processes, interleaved",
        "device": a.device,
        "one_process": {"processes": 1, "threads": runs[1][0]["threads"], "unfrozen_img_s": rnd(one, 2),
                        "frozen_img_s": rnd(med(1, "frozen"), 2)},
        "several_processes": None if not many else {
            "processes": many, "threads_each": runs[many][0]["threads"], "unfrozen_img_s": rnd(two, 2),
            "frozen_img_s": rnd(med(many, "frozen"), 2),
            "frozen_find_unused_parameters_img_s": rnd(med(many, "frozen_find_unused"), 2)},
        "ratio_frozen": ratio(med(many, "frozen"), med(1, "frozen")),
        # the same per CPU second of all processes: the work DDP adds, which a loaded machine disturbs far less than time
        "img_per_cpu_s": {"one_process": rnd(med(1, "unfrozen_cpu"), 3), "several_processes": rnd(med(many, "unfrozen_cpu"), 3)},
        "ratio_cpu": ratio(med(many, "unfrozen_cpu"), med(1, "unfrozen_cpu")),
        "ratio_cpu_frozen": ratio(med(many, "frozen_cpu"), med(1, "frozen_cpu")),
        "ratio_per_repeat": [ratio(b["unfrozen"], a["unfrozen"]) for a, b in zip(runs[1], runs[many])] if many else None,
        "find_unused_parameters_cost": ratio(med(many, "frozen_find_unused"), med(many, "frozen")),
        "note": None if many else "one GPU here: the several-process side needs 2 or more",
        "load_average": [(r["load_before"], r["load_after"]) for rs in runs.values() for r in rs],
        "runs": runs,
        "command": ".venv/bin/python bench/ddp_scaling.py" + (" --device cuda" if a.device == "cuda" else "")
                   + (f" --repeats {a.repeats}" if a.repeats != 3 else "") + (f" --epochs {a.epochs}" if a.epochs != 3 else ""),
    }
    out = result("ddp_scaling", "img/s", False, two, None, None, a.repeats, details)
    out["ratio_vs_one_process"] = ratio(two, one)
    if a.device == "cuda": out["machine"] = f"{cores()} cores, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    if a.device == "cpu" or many: write_result(out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
