"""Train a small Fashion-MNIST classifier on a long-tailed subset, with a trained GAN as augmentation.

The augmenter is used three ways (``--mode``):

* ``transform``: ``GanAugmenter`` as the ``transforms=`` of a torchvision dataset; with probability
  ``p`` an image becomes a synthetic image of its own class;
* ``balanced``: ``BalancedDataset`` tops every class up to the largest with synthetic images;
* ``albumentations``: the augmenter inside an albumentations pipeline, which passes it the label;
* ``none``: the same script without the augmenter (the baseline for accuracy and epoch time).

Usage (a run directory or a ``network-*.pt`` file trained on Fashion-MNIST 28x28)::

    augment train configs/fashion_mnist.yaml --out runs/fashion
    python examples/train_fashion_with_augmenter.py runs/fashion --mode all --epochs 3

Each epoch logs its wall time (data loading + training, not the test pass); filling the pool of
synthetic images is timed on its own because it happens once, before the first epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision.datasets import VisionDataset  # noqa: E402

from augment import BalancedDataset, GanAugmenter  # noqa: E402
from augment.config import DataConfig  # noqa: E402
from augment.data import load_data  # noqa: E402
from augment.data.sources import FASHION_CLASSES  # noqa: E402
from augment.errors import AugmentError  # noqa: E402

log = logging.getLogger("example")
MODES = ("none", "transform", "balanced", "albumentations")


class FashionSubset(VisionDataset):
    """uint8 ``(1, 28, 28)`` image tensors and int labels, with torchvision's ``transforms=`` hook."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transforms=None) -> None:
        super().__init__(root=None, transforms=transforms)
        self.images, self.targets = images, labels.tolist()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img, target = self.images[i], self.targets[i]
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target


class AlbumentationsFashion(Dataset):
    """The same images as ``(H, W, 1)`` numpy arrays through an albumentations pipeline given the label."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, pipeline: A.Compose) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()
        self.targets, self.pipeline = labels.tolist(), pipeline

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        out = self.pipeline(image=self.images[i], label=self.targets[i])
        return torch.from_numpy(out["image"]).permute(2, 0, 1), out["label"]


def small_cnn(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes),
    )  # fmt: skip


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 batch -> float in [-1, 1] (normalising after the augmenter, on the whole batch)."""
    return x.float().div_(127.5).sub_(1.0)


def build_dataset(mode: str, images, labels, class_names, args) -> tuple[Dataset, float]:
    """The training dataset of one mode and the seconds spent filling the synthetic pool."""
    if mode == "none":
        return FashionSubset(images, labels), 0.0
    augmenter = GanAugmenter.from_checkpoint(
        args.checkpoint, p=args.p, pool_size=args.pool_size, classes=class_names, seed=args.seed
    )
    start = time.perf_counter()
    if mode == "transform":
        augmenter.prefill()  # once, here: DataLoader workers inherit the pool instead of regenerating it
        ds: Dataset = FashionSubset(images, labels, transforms=augmenter)
    elif mode == "balanced":
        ds = BalancedDataset(FashionSubset(images, labels), augmenter, target="max")
        log.info("balanced: real %s + synthetic %s", ds.real_counts, ds.synthetic_counts)
    else:
        augmenter.prefill()
        pipeline = A.Compose([augmenter.albumentations(p=args.p), A.HorizontalFlip(p=0.5)], seed=args.seed)
        ds = AlbumentationsFashion(images, labels, pipeline)
    return ds, time.perf_counter() - start


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(to_input(images[i : i + 512])).argmax(1) for i in range(0, len(images), 512)])
    return (pred == labels).float().mean().item()


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader) -> tuple[float, int, float]:
    """One pass over the loader: ``(seconds, images, mean loss)``."""
    model.train()
    start, total, n = time.perf_counter(), 0.0, 0
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(to_input(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, n = total + loss.item() * len(y), n + len(y)
    return time.perf_counter() - start, n, total / max(n, 1)


def setup(mode: str, data, args) -> tuple[DataLoader, nn.Module, torch.optim.Optimizer, float]:
    """Loader, model and optimizer of one mode (same seed in every mode), and the pool-filling time."""
    torch.manual_seed(args.seed)
    ds, pool_s = build_dataset(mode, data.train.images, data.train.labels, data.class_names, args)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True)
    model = small_cnn(len(data.class_names))
    return loader, model, torch.optim.Adam(model.parameters(), lr=1e-3), pool_s


def run(mode: str, data, args) -> dict:
    loader, model, opt, pool_s = setup(mode, data, args)
    epoch_s = []
    for epoch in range(args.epochs):
        seconds, n, loss = train_epoch(model, opt, loader)
        epoch_s.append(seconds)
        acc = accuracy(model, data.test.images, data.test.labels)
        log.info("%-14s epoch %d/%d  %.2f s  %d images  loss %.3f  test acc %.1f%%",
                 mode, epoch + 1, args.epochs, seconds, n, loss, 100 * acc)  # fmt: skip
    return {
        "mode": mode,
        "pool_fill_s": round(pool_s, 3),
        "epoch_s": [round(t, 3) for t in epoch_s],
        "median_epoch_s": round(statistics.median(epoch_s), 3),
        "images_per_epoch": n,
        "test_accuracy": round(acc, 4),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="run directory or network-*.pt trained on Fashion-MNIST 28x28")
    parser.add_argument("--mode", choices=(*MODES, "all"), default="all")
    parser.add_argument("--p", type=float, default=0.5, help="replacement probability (transform, albumentations)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-per-class", type=int, default=300, help="images of the largest class")
    parser.add_argument("--ratio", type=float, default=0.1, help="smallest class / largest class")
    parser.add_argument("--pool-size", type=int, default=128, help="synthetic images per class in the pool")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the per-mode results here")
    return parser.parse_args(argv)


def load_fashion(args: argparse.Namespace):
    """A long tail cut from Fashion-MNIST; the test split is 200 real images per class the cut left out."""
    cfg = DataConfig(
        source="fashion_mnist", image_size=28, channels=1,
        imbalance={"ratio": args.ratio, "max_per_class": args.max_per_class},
        split={"val": 0.0, "test": 0.0, "test_per_class": 200},
    )  # fmt: skip
    return load_data(cfg, seed=args.seed)


NEEDS = "a run trained on Fashion-MNIST at 28x28 (augment train configs/fashion_mnist.yaml --out runs/fashion)"


def check_run(checkpoint: Path) -> None:
    """Exit 2 with one line saying what the script needs when ``checkpoint`` cannot serve Fashion-MNIST."""
    try:
        aug = GanAugmenter.from_checkpoint(checkpoint)
        shape = (aug.image_size, aug.channels, list(aug.class_names))
    except (AugmentError, ValueError, OSError) as err:
        fail(f"{checkpoint}: {str(err).splitlines()[0] if str(err) else type(err).__name__}; the script needs {NEEDS}")
    if shape != (28, 1, list(FASHION_CLASSES)):
        fail(
            f"{checkpoint}: its generator makes {shape[0]}x{shape[0]}x{shape[1]} images of classes {shape[2]}; "
            f"the script needs {NEEDS}"
        )


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    args = parse_args()
    check_run(args.checkpoint)  # before loading data or training anything (and before logging is on)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    # Load dataset.
    data = load_fashion(args)
    log.info("train per class: %s", data.train.counts(len(data.class_names)))

    # Train, once per mode.
    results = [run(mode, data, args) for mode in (MODES if args.mode == "all" else (args.mode,))]
    for r in results:
        log.info("%-14s pool %.1f s  median epoch %.2f s  test acc %.1f%%",
                 r["mode"], r["pool_fill_s"], r["median_epoch_s"], 100 * r["test_accuracy"])  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
