"""What the scripts in tests/ddp/ (run by tests/test_distributed.py under torchrun) and the test itself share: the small
data and models, and where the bundled real data is."""
import os
from pathlib import Path

import torch
from torch import nn

from lessonkit.core import rank
from lessonkit.data import DataLoaders
from lessonkit.learner import Learner
from lessonkit.loader import ImageLoader
from lessonkit.metrics import accuracy

ROOT = Path(__file__).resolve().parents[2]
PETS = ROOT / "data" / "pets" / "images"


def pets_dls(**kwargs) -> DataLoaders:
    "Cats vs dogs on the bundled Pets sample (cat breeds are capitalised), 96 px: 178 training, 44 validation images."
    # 96 px, not 64: on the 224-px photos bundled now, 2 frozen epochs at 64 px raised the validation loss (0.78 -> 0.93)
    files = sorted(PETS.glob("*.jpg"))
    labels = ["cat" if f.name[0].isupper() else "dog" for f in files]
    return DataLoaders.from_lists(PETS, files, labels, valid_pct=0.2, seed=42, size=96, bs=32, progress=False,
                                  num_workers=0, device="cpu", **kwargs)


def random_dls(n_train: int = 48, n_valid: int = 15, size: int = 16, bs: int = 4, seed: int = 0) -> DataLoaders:
    "Random images of two classes that differ a little in brightness: where the data is not the point."
    g = torch.Generator().manual_seed(seed)
    def make(n, **kw):
        y = torch.randint(0, 2, (n,), generator=g)
        imgs = [(torch.rand(3, size, size, generator=g) * 215 + 40 * int(c)).to(torch.uint8) for c in y]
        return ImageLoader([Path(f"{i}.png") for i in range(n)], imgs, y.tolist(), ["dark", "light"], bs=bs,
                           device="cpu", **kw)
    return DataLoaders(make(n_train, shuffle=True, drop_last=True), make(n_valid))


def tiny_model() -> nn.Sequential:
    "A body (conv, BatchNorm) and a head: two layer groups, so freezing means something."
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 2))
    return nn.Sequential(body, head)


def tiny_learner(dls, **kwargs) -> Learner:
    model = tiny_model()
    return Learner(dls, model, metrics=accuracy, layer_groups=[model[0], model[1]], num_threads=1, **kwargs)


def weights(learn) -> dict:
    return {k: v.detach().clone() for k, v in learn.model.state_dict().items()}


def out_dir() -> Path:
    "Where a script writes what the test reads (every rank its own files, named by rank)."
    return Path(os.environ["DDP_TEST_OUT"])


def me() -> int:
    return rank()
