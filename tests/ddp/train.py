"""Run by tests/test_distributed.py as `torchrun --standalone --nproc_per_node=2 train.py` (CPU, gloo): trains in
several ways inside `learn.distributed()` and writes what each rank saw to $DDP_TEST_OUT/rank<r>.pt, for the test to
compare. The test, not this script, decides what is right."""
import runpy, shutil, sys
from contextlib import redirect_stdout
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import lessonkit.datasets
from common import me, out_dir, pets_dls, random_dls, tiny_learner, weights
from lessonkit.augment import aug_transforms
from lessonkit.callbacks import (Callback, CheckpointCallback, CSVLogger, EarlyStoppingCallback, NonFiniteError,
                                 SaveModelCallback)
from lessonkit.core import set_seed, write_once
from lessonkit.datasets import untar_data
from lessonkit.learner import vision_learner
from lessonkit.metrics import accuracy

OUT, R = out_dir(), me()
res = {}


class Probe(Callback):
    "Each epoch: this rank's share of the training set, and a draw of torch's generator (what augmentation draws from)."
    def before_fit(self): self.shares, self.draws = [], []
    def before_train(self):
        self.shares.append(list(self.learn.dl.sampler))
        self.draws.append(torch.rand(4))


# ---- the dataset is extracted once, by whichever process comes first (both call untar_data at the same time) ----
extract = lessonkit.datasets.extract_archive
def counted(*args, **kwargs):
    (OUT / f"extracted_by_rank{R}").write_text("yes")
    return extract(*args, **kwargs)
lessonkit.datasets.extract_archive = counted
res["untar"] = str(untar_data(OUT / "tiny.tgz", dest=OUT / "data"))

# ---- real data: cats vs dogs, pretrained MobileNetV2 (frozen body), each rank its own folder for files ----
set_seed(42)
dls = pets_dls(batch_tfms=aug_transforms())
learn = vision_learner(dls, "mobilenet_v2", metrics=accuracy, path=OUT / f"files{R}", num_threads=1)
probe = Probe()
with learn.distributed():
    learn.fit_one_cycle(2, 2e-3, cbs=[CSVLogger(), CheckpointCallback(), probe])
    learn.save("final")
    learn.export("export.pth")
    probs, targets = learn.get_preds()
    tta, tta_targets = learn.tta(n=2)
    n_train_batches = len(learn.dls.train)
res["pets"] = {"values": learn.recorder.values, "losses": learn.recorder.losses, "shares": probe.shares,
               "draws": probe.draws, "weights": weights(learn), "probs": probs, "targets": targets, "tta": tta,
               "tta_targets": tta_targets, "n_train_batches": n_train_batches, "dls_after": learn.dls is dls,
               "n_train": dls.train.n}

# ---- random data from here: decisions, freezing, resuming, the best model (one shared folder) ----
shared = OUT / "shared"
rdls = random_dls()
set_seed(0)
t = tiny_learner(rdls, path=shared)
with t.distributed():
    # fine_tune: a frozen fit (body in eval mode, not trained), then an unfrozen one
    body0 = {k: v.clone() for k, v in t.model[0].state_dict().items()}
    t.freeze(); t.fit(1, 1e-2)
    res["frozen_body_unchanged"] = all(torch.equal(v, t.model[0].state_dict()[k]) for k, v in body0.items())
    t.unfreeze(); t.fit(1, 1e-2)
    res["body_trained"] = not all(torch.equal(v, t.model[0].state_dict()[k]) for k, v in body0.items())
    res["fine_tuned"] = weights(t)

    # early stopping: a high learning rate makes the validation loss jump about; it stops where it stops, everywhere
    t.fit(8, 0.5, cbs=[EarlyStoppingCallback(monitor="valid_loss", patience=1)])
    res["early_stop_epochs"] = len(t.recorder.values)

    # a NaN loss in rank 1 only, at its third batch: every rank stops there
    class NaNOnRank1(Callback):
        order = -50  # before the loss is shared out
        def after_loss(self):
            if R == 1 and self.learn.training and self.learn.iter == 2: self.learn.loss = self.learn.loss * float("nan")
    try: t.fit(1, 1e-3, cbs=[NaNOnRank1()]); res["nan"] = None
    except NonFiniteError as e: res["nan"] = (e.epoch, e.iter)

    # the LR finder diverges at the same step everywhere
    lr = t.lr_find(end_lr=1e4, num_it=40, show_plot=False)
    res["lr_find"] = {"n": len(lr.lrs), "stopped": lr.stopped, "lrs": lr.lrs, "losses": lr.losses}

    # the best model is saved (once) and loaded back in every rank
    save_best = SaveModelCallback(monitor="valid_loss", fname="best")
    t.fit(3, 0.1, cbs=[save_best])
    res["best"] = {"weights": weights(t), "epoch": save_best.best_epoch, "values": t.recorder.values}

# ---- resuming: an interrupted run's checkpoint of epoch 0, resumed, ends like the run that went on ----
class KeepEpoch0(Callback):
    order = 50  # after the checkpoint of the epoch is written
    def after_epoch(self):
        if self.learn.epoch == 0: write_once(lambda: shutil.copy(shared / "models/ck.pth", shared / "models/ck_epoch0.pth"))

set_seed(1)
whole = tiny_learner(rdls, path=shared)
with whole.distributed(): whole.fit_one_cycle(3, 0.05, cbs=[CheckpointCallback("ck"), KeepEpoch0()])
set_seed(2)  # another seed: the checkpoint must bring back the weights, the orders and the random draws
resumed = tiny_learner(rdls, path=shared)
with resumed.distributed(): resumed.fit_one_cycle(3, 0.05, cbs=[CheckpointCallback("ck")], resume="ck_epoch0")
res["resume"] = {"whole": weights(whole), "resumed": weights(resumed), "whole_losses": whole.recorder.losses,
                 "resumed_losses": resumed.recorder.losses, "epochs": [r["epoch"] for r in resumed.recorder.values]}

# ---- the Caltech lesson's script for torchrun (written by the test), in these same processes ----
with open(OUT / f"caltech_stdout{R}.txt", "w") as f, redirect_stdout(f):
    runpy.run_path(str(OUT / "train_caltech.py"), run_name="__main__")

torch.save(res, OUT / f"rank{R}.pt")
print(f"rank {R} done", flush=True)
