"""The contract every augmenter entry point keeps: it pickles, it runs in a 2-worker DataLoader, each
image it hands back is its own real image or a synthetic image of its label's class, and the result
is reproducible (deterministic datasets: identical to loading without workers).

The generator's weights are set so that class c is the constant image VALUES[c], which makes "a
synthetic image of the label's class" an exact check.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import albumentations as A
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import VisionDataset

from augment import AugmentedDataset, BalancedDataset, GanAugmenter, SyntheticDataset
from augment.checkpoint import Snapshot
from augment.models import ConditionalGenerator

VALUES = [40, 128, 220]
REAL = 7
LABELS = [0] * 10 + [1] * 4 + [2] * 2


def constant_snapshot() -> Snapshot:
    """3 classes, 8x8 grayscale; class c comes out as VALUES[c] in every pixel whatever the latent."""
    kw = dict(num_classes=3, image_size=8, channels=1, z_dim=4, width=4)
    G = ConditionalGenerator(**kw)
    with torch.no_grad():
        last = G.blocks[-1].norm
        last.gamma.weight.zero_()
        last.beta.weight.zero_()
        G.to_img.weight.zero_()
        G.to_img.weight[0, 0, 1, 1] = 1.0
        G.to_img.bias.fill_(-3.0)
        for c, v in enumerate(VALUES):
            last.beta.weight[c, 0] = math.atanh(v / 127.5 - 1.0) + 3.0
    return Snapshot(G.state_dict(), kw, ["a", "b", "c"], [10, 4, 2], {}, 0.0, "constant")


class ToyVision(VisionDataset):
    """A torchvision VisionDataset of uint8 (1, 8, 8) tensors filled with REAL."""

    def __init__(self, transforms: Callable | None = None) -> None:
        super().__init__(root=None, transforms=transforms)
        self.targets = list(LABELS)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img, target = torch.full((1, 8, 8), REAL, dtype=torch.uint8), self.targets[i]
        return self.transforms(img, target) if self.transforms is not None else (img, target)


class ToyAlbumentations(Dataset):
    """Numpy (H, W, 1) images through an albumentations pipeline that gets the label, back to tensors."""

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(LABELS)

    def __getitem__(self, i: int):
        out = self.pipeline(image=np.full((8, 8, 1), REAL, np.uint8), label=LABELS[i])
        return torch.from_numpy(out["image"]).permute(2, 0, 1).contiguous(), out["label"]


def augmenter(**kw) -> GanAugmenter:
    return GanAugmenter(constant_snapshot(), pool_size=8, batch_size=4, **kw)


def augmenter_of(ds: Dataset) -> GanAugmenter:
    if isinstance(ds, ToyAlbumentations):
        return ds.pipeline.transforms[0].augmenter
    t = ds.transforms
    return t if isinstance(t, GanAugmenter) else t.augmenter


# name -> (dataset factory, deterministic?)
ENTRY_POINTS: dict[str, tuple[Callable[[], Dataset], bool]] = {
    "GanAugmenter": (lambda: ToyVision(transforms=augmenter(p=0.5)), False),
    "GanTransform": (lambda: ToyVision(transforms=augmenter().v2(p=0.5)), False),
    "GanAlbumentations": (lambda: ToyAlbumentations(A.Compose([augmenter().albumentations(p=0.5)], seed=0)), False),
    "AugmentedDataset": (lambda: AugmentedDataset(ToyVision(), augmenter(p=0.5)), False),
    "BalancedDataset": (lambda: BalancedDataset(ToyVision(), augmenter()), True),
    "SyntheticDataset": (lambda: SyntheticDataset(augmenter(), per_class=5), True),
}


def load(ds: Dataset, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)  # the DataLoader derives every worker's seed from this
    batches = list(DataLoader(ds, batch_size=4, num_workers=workers))
    return torch.cat([x for x, _ in batches]), torch.cat([torch.as_tensor(y) for _, y in batches])


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_point_pickles_and_runs_in_two_workers(name: str) -> None:
    make, deterministic = ENTRY_POINTS[name]
    ds = pickle.loads(pickle.dumps(make()))
    images, labels = load(ds, workers=2)
    assert len(images) == len(ds) and images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8)
    flat = images.flatten(1)
    constant = (flat == flat[:, :1]).all(1)
    assert constant.all()
    value = flat[:, 0]
    synthetic = value == torch.tensor(VALUES)[labels]
    assert (synthetic | (value == REAL)).all()  # each image is real or of its own label's class
    assert synthetic.any()
    if name == "BalancedDataset":
        assert torch.bincount(labels).tolist() == [10, 10, 10] and synthetic.sum() == 14
    if not deterministic:
        assert (~synthetic).any()  # p = 0.5 kept some real images
        assert augmenter_of(ds)._G is None  # the parent never built the generator: each worker built its own
    again = load(pickle.loads(pickle.dumps(make())), workers=2)
    assert torch.equal(again[0], images) and torch.equal(again[1], labels)  # reproducible
    if deterministic:
        single = load(make(), workers=0)
        assert torch.equal(single[0], images) and torch.equal(single[1], labels)
