"""The trained generator as a drop-in augmentation: a dataset transform, a torchvision v2 transform,
an albumentations transform, and two datasets (class-balanced top-up, purely synthetic).

Every synthetic image is ``G(z(seed', c, i), c)`` for a class ``c`` and an index ``i``, where the
latent comes from :func:`augment.generate.latents` and ``seed' = seed`` at epoch 0 (so epoch 0 shows
the same images ``augment generate --seed`` writes). Images are produced in fixed batches of
``batch_size`` indices (chunk ``k`` holds indices ``k*batch_size ... (k+1)*batch_size-1``) and kept
in a pool, so an image is determined by ``(seed, epoch, class, index)`` alone: never by which
worker asked first, by the order of requests or by when the pool was filled.

The random transform draws (replace?, index) from torch's RNG (albumentations: from its own RNG) and
takes index ``i`` uniformly from ``[0, pool_size)``: a fixed pool of ``pool_size`` images per class,
filled on demand and reused from then on. Reuse is what makes the transform cheap: one generator
forward pass costs more per image than a small classifier's whole training step, serving a pool
image costs far less (measured in ``benchmarks/RESULTS.md``).

Modules: :mod:`~augment.augmenter.core` (:class:`GanAugmenter`, loading, the pool),
:mod:`~augment.augmenter.formats` (the image formats it takes and hands back),
:mod:`~augment.augmenter.adapters` (torchvision v2 and albumentations transforms),
:mod:`~augment.augmenter.datasets` (:class:`AugmentedDataset`, :class:`SyntheticDataset`, :class:`BalancedDataset`).

Example:
    >>> import torch
    >>> from augment.checkpoint import Snapshot
    >>> from augment.models import ConditionalGenerator
    >>> G = ConditionalGenerator(num_classes=2, image_size=8, channels=1, z_dim=4, width=4)
    >>> snap = Snapshot(G.state_dict(), dict(num_classes=2, image_size=8, channels=1, z_dim=4, width=4),
    ...                 ["cat", "dog"], [10, 3], {}, 0.0, "doc")
    >>> aug = GanAugmenter.from_snapshot(snap, p=1.0, pool_size=8, batch_size=8)
    >>> img, target = aug(torch.zeros(1, 8, 8, dtype=torch.uint8), 1)
    >>> img.dtype, tuple(img.shape), target
    (torch.uint8, (1, 8, 8), 1)
"""

from augment.augmenter.adapters import GanAlbumentations, GanTransform
from augment.augmenter.core import GanAugmenter
from augment.augmenter.datasets import AugmentedDataset, BalancedDataset, SyntheticDataset
from augment.augmenter.formats import ImageFormat, OutputKind, Target, output_format

__all__ = [
    "AugmentedDataset",
    "BalancedDataset",
    "GanAlbumentations",
    "GanAugmenter",
    "GanTransform",
    "ImageFormat",
    "OutputKind",
    "SyntheticDataset",
    "Target",
    "output_format",
]
