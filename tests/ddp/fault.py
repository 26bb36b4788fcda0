"""Used by tests/test_distributed.py, in processes it forks (so nothing is imported again): the small model for 4
epochs, with a checkpoint after each. `kill`: rank 1 kills itself (SIGKILL) in epoch 1; `hang`: rank 1 stops itself
(SIGSTOP) there, and the others wait at most 5 s; `resume`: the run carries on from the last checkpoint."""
import os, signal, time, traceback
from pathlib import Path

import torch

from common import random_dls, tiny_learner, weights
from lessonkit.callbacks import Callback, CheckpointCallback
from lessonkit.core import rank, set_seed


class Die(Callback):
    def __init__(self, mode: str, out: Path): self.mode, self.out = mode, out
    def after_batch(self):
        if self.mode in ("kill", "hang") and rank() == 1 and self.learn.epoch == 1 and self.learn.iter == 2:
            (self.out / "dies_at").write_text(str(time.time()))
            os.kill(os.getpid(), signal.SIGKILL if self.mode == "kill" else signal.SIGSTOP)


def train(mode: str, out: Path) -> dict:
    set_seed(0)
    learn = tiny_learner(random_dls(), path=out / "fault")
    with learn.distributed(timeout=5 if mode == "hang" else 60, num_threads=1):
        learn.fit_one_cycle(4, 0.05, cbs=[CheckpointCallback(), Die(mode, out)],
                            resume="checkpoint" if mode == "resume" else None)
    return {"epochs": [r["epoch"] for r in learn.recorder.values], "weights": weights(learn)}


def run_rank(mode: str, out: Path, r: int, port: int):
    "One of 2 processes started with the environment torchrun gives, but by no launcher: as on two machines, where none stops the other process when one dies. Its error goes to error<r>.txt."
    os.environ.update(RANK=str(r), LOCAL_RANK="0", WORLD_SIZE="2", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try: train(mode, out)
    except BaseException as e:
        (out / f"error{r}.txt").write_text(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        os._exit(1)
    os._exit(0)
