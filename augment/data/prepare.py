"""Per-class limiting, long-tail profiles, stratified splits and the data fingerprint.

Selection is seeded per class (``numpy.random.default_rng([seed, class_index])``), so adding a
class or changing another class's limit never changes which images a class keeps.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from augment.config import DataConfig
from augment.data.sources import SourceData, load_source
from augment.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class ImageSet:
    """One split: uint8 images ``(N, C, H, W)``, int64 labels, ids."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    def as_float(self) -> torch.Tensor:
        """Images as float32 in [-1, 1] (the GAN's range)."""
        return self.images.float().div_(127.5).sub_(1.0)


@dataclass
class PreparedData:
    """The limited, split dataset of one run and the fingerprint that identifies it."""

    class_names: list[str]
    train: ImageSet
    val: ImageSet
    test: ImageSet
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> ImageSet:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{split: {class_name: count}}``."""
        return {s: dict(zip(self.class_names, self.split(s).counts(self.num_classes), strict=True)) for s in SPLITS}

    def summary(self) -> dict:
        return {"class_names": self.class_names, "fingerprint": self.fingerprint, "counts": self.counts()}


def class_limits(cfg: DataConfig, class_names: list[str], available: list[int]) -> list[int]:
    """How many images each class keeps for train+val(+test) after per_class / imbalance."""
    k = len(class_names)
    if cfg.imbalance is not None:
        order = cfg.imbalance.order or class_names
        unknown = [c for c in order if c not in class_names]
        if unknown or sorted(order) != sorted(class_names):
            bad = unknown[0] if unknown else sorted(set(class_names) - set(order))
            raise ConfigError(f"data.imbalance.order must list every class exactly once (problem: {bad!r})")
        limits = [0] * k
        for rank, name in enumerate(order):
            frac = rank / (k - 1) if k > 1 else 0.0
            n = round(cfg.imbalance.max_per_class * cfg.imbalance.ratio**frac)
            limits[class_names.index(name)] = max(n, 1)
    elif isinstance(cfg.per_class, dict):
        unknown = [c for c in cfg.per_class if c not in class_names]
        if unknown:
            raise ConfigError(f"data.per_class names class {unknown[0]!r}, which is not one of {class_names}")
        limits = [cfg.per_class.get(name, n) for name, n in zip(class_names, available, strict=True)]
    elif isinstance(cfg.per_class, int):
        limits = [cfg.per_class] * k
    else:
        limits = list(available)
    for name, want, have in zip(class_names, limits, available, strict=True):
        if have == 0:
            raise DataError(f"class {name!r} has no images")
        if want > have:
            raise DataError(f"class {name!r} has {have} images but the limit asks for {want}")
    return limits


def prepare(source: SourceData, cfg: DataConfig, seed: int) -> PreparedData:
    """Limit per class, then split each class into train/val/test by seed."""
    k = len(source.class_names)
    labels = source.labels.numpy()
    available = np.bincount(labels, minlength=k).tolist()
    limits = class_limits(cfg, source.class_names, available)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c, name in enumerate(source.class_names):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.random.default_rng([seed, c]).permutation(len(idx))]
        chosen, rest = idx[: limits[c]], idx[limits[c] :]
        n = len(chosen)
        if cfg.split.test_per_class is not None:
            if len(rest) < cfg.split.test_per_class:
                raise DataError(
                    f"class {name!r}: split.test_per_class={cfg.split.test_per_class} needs that many images "
                    f"outside the limited set, only {len(rest)} are left"
                )
            test = rest[: cfg.split.test_per_class]
            n_test = 0
        else:
            n_test = round(n * cfg.split.test)
            test = chosen[:n_test]
        n_val = round(n * cfg.split.val)
        val = chosen[n_test : n_test + n_val]
        train = chosen[n_test + n_val :]
        if len(train) == 0:
            raise DataError(f"class {name!r} keeps {n} image(s), none left for training after the val/test split")
        parts["train"].append(train)
        parts["val"].append(val)
        parts["test"].append(test)
    sets = {}
    for s in SPLITS:
        sel = torch.from_numpy(np.sort(np.concatenate(parts[s])).astype(np.int64))
        sets[s] = ImageSet(source.images[sel], source.labels[sel], [source.ids[i] for i in sel.tolist()])
    fp = fingerprint(source.class_names, sets, cfg)
    return PreparedData(source.class_names, sets["train"], sets["val"], sets["test"], fp)


def fingerprint(class_names: list[str], sets: dict[str, ImageSet], cfg: DataConfig) -> str:
    """sha256 of the class names, each split's ids, labels and pixels: what was trained on."""
    h = hashlib.sha256()
    h.update(json.dumps({"classes": class_names, "size": cfg.image_size, "channels": cfg.channels}).encode())
    for s in SPLITS:
        part = sets[s]
        h.update(s.encode())
        h.update("\n".join(part.ids).encode())
        h.update(part.labels.numpy().tobytes())
        h.update(part.images.numpy().tobytes())
    return h.hexdigest()[:16]


def load_data(cfg: DataConfig, seed: int) -> PreparedData:
    """Load the configured source and return its limited train/val/test splits.

    Example:
        >>> from augment.config import DataConfig
        >>> data = load_data(DataConfig(source="digits", per_class=20), seed=0)
        >>> data.counts()["train"]["3"]
        14
    """
    data = prepare(load_source(cfg), cfg, seed)
    log.info("data %s: %s", data.fingerprint, {s: len(data.split(s)) for s in SPLITS})
    return data
