"""Datasets built on the augmenter: any ``(img, target)`` transform over a dataset, a purely synthetic
dataset, and a dataset topped up with synthetic images until its classes are balanced.

Synthetic item ``j`` of label ``k`` is always synthetic image ``j`` of that class: the same image every
epoch and in every DataLoader worker, until :meth:`set_epoch` switches to a fresh set on purpose.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from augment.augmenter.formats import ImageFormat, OutputKind, output_format

if TYPE_CHECKING:
    from augment.augmenter.core import GanAugmenter

log = logging.getLogger(__name__)


class AugmentedDataset(Dataset):
    """``dataset`` with every ``(img, target)`` item passed through ``transforms(img, target)``.

    torchvision's classification datasets (MNIST, FashionMNIST, CIFAR, ImageFolder, ...) take only
    ``transform`` (image alone) and ``target_transform``, not the joint ``transforms=`` that a
    class-conditional replacement needs. Wrap them instead; any ``(img, target)`` callable works
    (a :class:`GanAugmenter`, a ``v2.Compose`` holding a :class:`GanTransform`).

    Example:
        >>> ds = AugmentedDataset(FashionMNIST("data", transform=None), aug)  # doctest: +SKIP
    """

    def __init__(self, dataset: Any, transforms: Any) -> None:
        if not callable(transforms):
            raise ValueError(f"transforms must be a callable (img, target) -> (img, target), got {transforms!r}")
        self.dataset = dataset
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img, target = self.dataset[index][:2]
        return self.transforms(img, target)


def _dataset_labels(dataset: Any) -> list[int]:
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return [int(t) for t in (targets.tolist() if isinstance(targets, torch.Tensor) else targets)]
    log.info(
        "BalancedDataset: %s has no .targets; reading %d items once for their labels",
        type(dataset).__name__,
        len(dataset),
    )
    return [int(dataset[i][1]) for i in range(len(dataset))]


class _SyntheticItems(Dataset):
    """The synthetic tail both datasets share: ``counts[k]`` images of label ``k`` after item ``first``.

    Holds the epoch, fills the augmenter's pool for it when ``prefill``, and maps an item index to
    ``(label, synthetic index)``.
    """

    augmenter: GanAugmenter
    format: ImageFormat
    transform: Any

    def _init_synthetic(
        self, augmenter: GanAugmenter, counts: list[int], first: int, epoch: int, prefill: bool
    ) -> None:
        self.augmenter = augmenter
        self.epoch = int(epoch)
        self.prefill = prefill
        self._synthetic = counts
        self._starts = np.cumsum([first, *counts]).tolist()
        if prefill:
            self._prefill()

    def _prefill(self) -> None:
        self.augmenter.prefill(self._synthetic, self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use the synthetic images of ``epoch`` from now on (prefilled here when ``prefill``)."""
        self.epoch = int(epoch)
        if self.prefill:
            self._prefill()

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, index: int) -> tuple[int, int]:
        """``(label, synthetic index)`` of item ``index`` (at or after ``first``; not range-checked)."""
        label = bisect.bisect_right(self._starts, index) - 1
        return label, index - self._starts[label]

    def _synthetic_image(self, label: int, index: int) -> Any:
        return self.augmenter.image(label, index, self.format, self.epoch)

    def _transformed(self, img: Any) -> Any:
        return self.transform(img) if self.transform is not None else img


class SyntheticDataset(_SyntheticItems):
    """``per_class`` synthetic images of every label, class-major: item ``i`` is a fixed image.

    Item ``k * per_class + i`` (for an int ``per_class``) is synthetic image ``i`` of label ``k``:
    the same image every epoch and in every DataLoader worker; :meth:`set_epoch` switches to a
    fresh set on purpose. ``output`` picks the image type (``uint8`` / ``float`` ``(C, H, W)``
    tensors, ``pil``, ``numpy`` ``(H, W, C)``).

    Example:
        >>> ds = SyntheticDataset(aug, per_class=100, output="float")  # doctest: +SKIP
        >>> img, label = ds[0]                                          # doctest: +SKIP
    """

    def __init__(
        self,
        augmenter: GanAugmenter,
        per_class: int | Sequence[int],
        *,
        output: OutputKind = "uint8",
        transform: Any = None,
        epoch: int = 0,
        prefill: bool = True,
    ) -> None:
        k = augmenter.num_labels
        counts = [per_class] * k if isinstance(per_class, int) else list(per_class)
        if len(counts) != k or any(not isinstance(n, int) or n < 0 for n in counts):
            raise ValueError(f"per_class must be a count >= 0 or {k} of them (one per label), got {per_class!r}")
        self.per_class = counts
        self.format = output_format(output)
        self.transform = transform
        self._init_synthetic(augmenter, counts, 0, epoch, prefill)

    def locate(self, index: int) -> tuple[int, int]:
        """``(label, synthetic index)`` of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} synthetic images")
        return self._locate(index)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        label, i = self.locate(index)
        return self._transformed(self._synthetic_image(label, i)), label


class BalancedDataset(_SyntheticItems):
    """A dataset topped up with synthetic images until every class has ``target`` items.

    Items ``0 .. len(dataset)-1`` are the dataset's own; then come synthetic images, label by label
    (``target="max"``: up to the largest class; an int: up to that count, never removing real
    items; a class of the augmenter that the dataset does not hold gets none). Synthetic item ``j``
    of label ``k`` is synthetic image ``j`` of that class: the same image
    every epoch and in every DataLoader worker (:meth:`set_epoch` switches to a fresh set on purpose).
    Synthetic images come in the type, dtype and range of the dataset's own images (read from its
    first item) and labels in its label type; ``transform`` is applied to every image, real or
    synthetic (put random label-preserving augmentation there, not in the wrapped dataset).

    Example:
        >>> ds = BalancedDataset(ImageFolder("data/train"), aug)      # doctest: +SKIP
        >>> ds.real_counts, ds.synthetic_counts                       # doctest: +SKIP
        ([500, 40, 12], [0, 460, 488])
    """

    def __init__(
        self,
        dataset: Any,
        augmenter: GanAugmenter,
        target: Literal["max"] | int = "max",
        *,
        labels: Sequence[int] | None = None,
        transform: Any = None,
        epoch: int = 0,
        prefill: bool = True,
    ) -> None:
        if len(dataset) == 0:
            raise ValueError("BalancedDataset needs a non-empty dataset")
        labels = _dataset_labels(dataset) if labels is None else [int(t) for t in labels]
        if len(labels) != len(dataset):
            raise ValueError(f"{len(labels)} labels for a dataset of {len(dataset)} items")
        k = augmenter.num_labels
        bad = [t for t in labels if not 0 <= t < k]
        if bad:
            names = augmenter.classes if augmenter.classes is not None else augmenter.class_names
            raise ValueError(f"dataset label {bad[0]} is not one of the augmenter's {k} classes {names}")
        real = np.bincount(labels, minlength=k).tolist()
        if target == "max":
            goal = max(real)
        elif isinstance(target, int) and not isinstance(target, bool) and target >= 1:
            goal = target
        else:
            raise ValueError(f"target must be 'max' or a positive count per class, got {target!r}")
        img, label = dataset[0][:2]
        self.format = augmenter.format_of(img)  # fail now on a size/channel/range mismatch
        self._tensor_labels = isinstance(label, torch.Tensor)
        self.dataset = dataset
        self.target = goal
        self.real_counts: list[int] = real
        # A class the dataset does not hold is not topped up: it is no class of this dataset (a
        # split or subset of the augmenter's classes), and adding it would change the task.
        self.synthetic_counts: list[int] = [max(goal - n, 0) if n > 0 else 0 for n in real]
        self.transform = transform
        self._init_synthetic(augmenter, self.synthetic_counts, len(dataset), epoch, prefill)

    @property
    def counts(self) -> list[int]:
        """Items per label after the top-up."""
        return [r + s for r, s in zip(self.real_counts, self.synthetic_counts, strict=True)]

    def is_synthetic(self, index: int) -> bool:
        return index >= len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if index < len(self.dataset):
            img, label = self.dataset[index][:2]
        else:
            label, i = self._locate(index)
            img = self._synthetic_image(label, i)
            label = torch.tensor(label) if self._tensor_labels else label
        return self._transformed(img), label
