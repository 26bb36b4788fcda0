"""How much faster is a frozen-body epoch on the CPU with the learner's two CPU speed-ups, channels-last memory order and
frozen BatchNorm folded into its convolution (`FoldFrozenBNCallback`)?

    python bench/frozen_body.py [--repeats 3] [--sizes 128 224]

One process, the Pets sample (data/pets), MobileNetV2 with its offline ImageNet weights, bs 32, the body frozen
(the lessons' first step). For each image size, three learners are timed on one `fit(1)` epoch each, interleaved
(A B C A B C ...), after one untimed warm-up epoch each:

- `before`: what the learner did before these changes: contiguous memory order, no folding;
- `channels_last`: channels-last memory order only;
- `lessonkit`: channels-last and folding (today's default).

Each timed epoch includes the validation pass. The same weights go into the three learners, so their validation
predictions must agree to float rounding (reported as `max_prob_diff`). The last line printed is one JSON object
(/work/shared/notes/benchmarks.md), also written to bench/results/frozen_body.json; "lessonkit" is the median epoch
time of today's default at the largest size, "details" has every variant at every size and the ratios.
"""
from __future__ import annotations
import argparse, copy, json, os, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, PETS_PAT, cores, load1, median, result, write_result  # noqa: E402

sys.path.insert(0, str(ROOT))
import torch  # noqa: E402
from lessonkit.augment import aug_transforms  # noqa: E402
from lessonkit.data import DataLoaders  # noqa: E402
from lessonkit.learner import vision_learner  # noqa: E402
from lessonkit.metrics import accuracy  # noqa: E402

VARIANTS = {"before": dict(channels_last=False, fold=False), "channels_last": dict(channels_last=True, fold=False),
            "lessonkit": dict(channels_last=True, fold=True)}


def learner(dls, state: dict, channels_last: bool, fold: bool):
    learn = vision_learner(dls, "mobilenet_v2", metrics=accuracy, channels_last=channels_last)
    learn.model.load_state_dict(state)
    learn.progress.bars = False
    if not fold: learn.remove_cb(learn.fold_frozen_bn)
    return learn


def epoch_seconds(learn) -> float:
    t = time.perf_counter()
    learn.fit(1, 1e-3)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    a = ap.parse_args()
    torch.manual_seed(0)
    files = sorted((ROOT / "data" / "pets" / "images").glob("*.jpg"))
    details = {"what": "seconds of one frozen-body fit(1) epoch (train + validation), MobileNetV2 on the Pets sample, "
                       "bs 32, CPU", "threads": torch.get_num_threads(), "cores": cores(), "load_1min_at_start": load1(),
               "sizes": {}}
    for size in a.sizes:
        dls = DataLoaders.from_name_re(files[0].parent, files, PETS_PAT, valid_pct=0.2, seed=42, size=size, bs=32,
                                       item_resize="crop", batch_tfms=aug_transforms())
        state = copy.deepcopy(vision_learner(dls, "mobilenet_v2").model.state_dict())
        learns = {k: learner(dls, state, **v) for k, v in VARIANTS.items()}
        probs = {k: l.get_preds()[0] for k, l in learns.items()}
        for l in learns.values(): epoch_seconds(l)  # warm-up: one-time kernel and allocator set-up
        times = {k: [] for k in learns}
        for _ in range(a.repeats):
            for k, l in learns.items(): times[k].append(round(epoch_seconds(l), 3))
        med = {k: median(v) for k, v in times.items()}
        details["sizes"][str(size)] = {
            "seconds": times, "median": med,
            "speedup_vs_before": {k: round(med["before"] / med[k], 2) for k in med},
            "max_prob_diff_vs_before": {k: float((probs[k] - probs["before"]).abs().max()) for k in probs}}
        print(f"{size} px: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()), file=sys.stderr, flush=True)
    big = details["sizes"][str(max(a.sizes))]["median"]
    out = result("frozen_body", "s", True, big["lessonkit"], None, None, a.repeats, details)
    out["details"]["anchor"] = "the learner before channels-last and folding on the CPU (`before`)"
    write_result(out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
