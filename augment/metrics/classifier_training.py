"""Training one downstream classifier: the batches each regime draws, the optimizer, the scores.

A :class:`TrainSpec` holds what a classifier trains on (the real train split and a synthetic pool)
and how (architecture, steps, batch size, learning rate, classic policy, synthetic share). Every
*regime* gets the same optimizer steps and batch size; its batches are what differs:

* ``real``: the real train split, no augmentation;
* ``real+classic``: the real train split with the classic policy (:mod:`augment.metrics.classic`),
  drawn uniformly (``classic_sampling: natural``) or class by class (``balance``: a class uniformly,
  then one of its images, the resampling a long tail's practitioner would use);
* ``real+gan``: each batch takes ``synthetic_share`` of its images from the synthetic pool
  (classes drawn to even out the real class imbalance, ``synthetic_sampling: balance``), the rest
  real images drawn uniformly, or as the classic baseline draws them (``gan_real_sampling: baseline``);
* ``real+gan+classic``: the same, with the classic policy applied to the whole batch (or to its
  real images only: ``classic_on_synthetic=False``); in both,
  ``synthetic_until < 1`` ends the synthetic draws after that fraction of the steps (the rest of the
  steps' batches are real images only, as ``real`` / ``real+classic`` draw them);
* ``gan-only``: synthetic images only, classes uniform (Classification Accuracy Score);
* ``gan-augmenter``: what ``AugmentedDataset(train, GanAugmenter(p=synthetic_share))`` feeds a
  classifier: real images drawn uniformly, each replaced with probability p by a synthetic image
  of its own class (the real class frequencies stay; no classic augmentation);
* ``balanced-dataset``: what ``BalancedDataset(train, augmenter)`` feeds it: the real train split
  plus synthetic images topping every class up to the largest class's count, drawn uniformly from
  the union.

The two deployed regimes draw from the whole synthetic pool (no confidence filter, hard labels),
as the augmenter does. With ``soft_labels``, the synthetic images of a batch are trained against
the probabilities ``synthetic_probs`` gives them instead of their one-hot class; real images keep
their hard labels. With a teacher (``teacher_train_probs``, ``evaluate.teacher``), ``real+classic``
is distilled the same way: it draws ``real+gan+classic``'s batches with the real train images in the
pool's place, trained against the teacher's probabilities there (:func:`teacher_baseline_spec`).

Parameter initialisation, batch draws and augmentation all come from the seed, so a classifier
depends only on ``(spec, regime, seed)``, in any thread or process. The downstream grid
(:mod:`augment.metrics.downstream`) scores such classifiers on held-out splits; the domain
feature extractor (:mod:`augment.metrics.extractor`) is one of them.

Example:
    >>> spec = TrainSpec(class_names=["a", "b"], train_images=images, train_labels=labels, steps=50)  # doctest: +SKIP
    >>> model, counters = train_classifier(spec, "real+classic", seed=0)  # doctest: +SKIP
    >>> predict_proba(model, test_images).argmax(dim=1)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from augment.devices import keep_freed_memory, resolve_precision
from augment.errors import ConfigError
from augment.metrics.classic import GLOBAL_RNG_LOCK, apply_classic, classic_augment, classic_params, parse_classic
from augment.metrics.regimes import BASELINE, DEPLOYED_REGIMES, GAN_REGIMES, REGIMES, SHARE_REGIMES
from augment.models.classifier import SYNTHETIC_BN, SplitBatchNorm2d, build_classifier, split_batchnorms

#: AdamW's decoupled weight decay of every downstream classifier.
WEIGHT_DECAY = 5e-4


def _no_images() -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8)


def _no_labels() -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64)


@dataclass
class TrainSpec:
    """What a classifier trains on and how: the real train split, the synthetic pool, the settings (picklable)."""

    class_names: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    #: uint8 ``(N, C, H, W)`` and int64 ``(N,)``; empty where no regime draws synthetic images.
    synthetic_images: torch.Tensor = field(default_factory=_no_images)
    synthetic_labels: torch.Tensor = field(default_factory=_no_labels)
    classifier: str = "smallcnn"
    steps: int = 500
    batch_size: int = 128
    lr: float = 2e-3
    synthetic_share: float = 0.5
    synthetic_sampling: str = "balance"
    #: Fraction of the steps (from the start) whose real+gan batches hold synthetic images.
    synthetic_until: float = 1.0
    confidence_threshold: float | None = None
    #: Probability the filter classifier gives each synthetic image's own class (None = no filter).
    synthetic_confidence: torch.Tensor | None = None
    #: Train synthetic images against ``synthetic_probs`` instead of their one-hot class.
    soft_labels: bool = False
    #: The filter classifier's softmax, (N, K) row for row with ``synthetic_images`` (None = not trained).
    synthetic_probs: torch.Tensor | None = None
    #: A teacher's softmax over ``train_images`` (``evaluate.teacher``; None = no teacher). With it the
    #: baseline is distilled as the GAN regimes are: :func:`teacher_baseline_spec`.
    teacher_train_probs: torch.Tensor | None = None
    classic: str = "crop"
    #: How ``real+classic`` draws its real images: "natural" (uniformly) or "balance" (classes uniformly).
    classic_sampling: str = "natural"
    #: How the real+gan regimes draw their real images: "natural", or "baseline" (as ``real+classic``).
    gan_real_sampling: str = "natural"
    #: "torch" (vectorised, the default) or "torchvision" (the v2 transforms themselves, per image).
    classic_backend: str = "torch"
    #: real+gan+classic applies the classic policy to its synthetic images too (else the real ones only).
    classic_on_synthetic: bool = True
    #: How BatchNorm treats a batch of real and synthetic images: "joint", "split" or "auxiliary"
    #: (:data:`augment.models.classifier.SYNTHETIC_BN`); real-only batches are the same in all three.
    synthetic_bn: str = "joint"
    #: Intra-op threads: None = every core for a stacked grid, 1 for a lone cell.
    threads: int | None = None
    #: Where the classifiers train and predict ("cpu" or "cuda"); batches are drawn on the CPU.
    device: str = "cpu"
    #: "fp32", "bf16" (autocast for the training steps' convolutions and matmuls; weights, optimizer,
    #: loss and predictions stay fp32) or "auto" (bf16 where the device computes it natively).
    precision: str = "fp32"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _pool_keep(self) -> torch.Tensor | None:
        """The confidence filter's mask over the synthetic images (None = keep them all)."""
        if self.confidence_threshold is None or self.synthetic_confidence is None:
            return None
        return self.synthetic_confidence >= self.confidence_threshold

    def synthetic_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The synthetic images the cells may draw from (after the confidence filter)."""
        keep = self._pool_keep()
        if keep is None:
            return self.synthetic_images, self.synthetic_labels
        return self.synthetic_images[keep], self.synthetic_labels[keep]

    def synthetic_pool_probs(self) -> torch.Tensor:
        """The soft labels of :meth:`synthetic_pool`'s images, row for row (the same filter mask).

        Raises:
            ConfigError: no ``synthetic_probs`` (the downstream ``prepare`` trains the filter
                classifier that gives them when ``soft_labels`` is on or tuned).
            ValueError: ``synthetic_probs`` is not (N, K) for the N synthetic images.
        """
        if self.synthetic_probs is None:
            raise ConfigError(
                "evaluate.soft_labels: the plan has no synthetic_probs (prepare trains the filter "
                "classifier that gives them when soft_labels is on or in tune_soft_labels)"
            )
        want = (len(self.synthetic_labels), self.num_classes)
        if tuple(self.synthetic_probs.shape) != want:
            raise ValueError(f"synthetic_probs is {tuple(self.synthetic_probs.shape)}, the synthetic pool needs {want}")
        keep = self._pool_keep()
        return self.synthetic_probs if keep is None else self.synthetic_probs[keep]


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(127.5).sub(1.0)


def nhwc(x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) with NHWC strides, the layout oneDNN's fast convolutions take.

    ``contiguous(memory_format=torch.channels_last)`` leaves a one-channel batch with its NCHW
    strides (both layouts are "contiguous" there), and a convolution reads the layout from the
    strides: such a batch ran 1.4-1.6x slower than the same pixels with NHWC strides
    (benchmarks/RESULTS.md). For one channel the two layouts are the same bytes, so a view does it.
    """
    if x.shape[1] != 1:
        return x.contiguous(memory_format=torch.channels_last)
    x = x.contiguous()  # dense: image n's pixels start at n * H * W
    _, _, h, w = x.shape
    return x.as_strided(x.shape, (h * w, 1, w, 1))


def synthetic_class_probs(real_counts: list[int], available: list[int], share: float, sampling: str) -> torch.Tensor:
    """Class distribution of the synthetic part of a batch.

    ``balance``: top up the real class frequencies so the whole batch is as close to uniform as
    the share allows (q_c proportional to max(1/K - (1 - share) r_c, 0)); uniform for balanced
    data. Classes without synthetic images get 0.
    """
    k = len(real_counts)
    has = torch.tensor([a > 0 for a in available], dtype=torch.float64)
    if has.sum() == 0:
        raise ConfigError("no synthetic images left (the confidence filter removed them all)")
    if sampling == "uniform" or share <= 0:
        q = has.clone()
    else:
        r = torch.tensor(real_counts, dtype=torch.float64)
        r = r / r.sum()
        q = torch.clamp(1.0 / k - (1.0 - share) * r, min=0.0) * has
        if q.sum() <= 1e-12:
            q = has.clone()
    return (q / q.sum()).float()


def real_draw(spec: TrainSpec, regime: str) -> str:
    """How ``regime``'s batches draw their real images: "natural" (uniformly over the train split) or
    "balance" (a class uniformly, then one of its images): the classic baseline as val chose it, and
    the real+gan regimes with ``gan_real_sampling: baseline``."""
    if spec.gan_real_sampling not in ("natural", "baseline"):
        raise ConfigError(f"gan_real_sampling must be natural or baseline, got {spec.gan_real_sampling!r}")
    if regime == BASELINE or (regime in SHARE_REGIMES and spec.gan_real_sampling == "baseline"):
        if spec.classic_sampling not in ("natural", "balance"):
            raise ConfigError(f"classic_sampling must be natural or balance, got {spec.classic_sampling!r}")
        return spec.classic_sampling
    return "natural"


def _real_class_counts(spec: TrainSpec, regime: str) -> torch.Tensor:
    """Relative class weights of ``regime``'s real draws: the train split's counts, or 1 per class it
    holds where :func:`real_draw` is "balance"."""
    counts = spec.train_labels.bincount(minlength=spec.num_classes)
    return (counts > 0).long() if real_draw(spec, regime) == "balance" else counts


def _composition(spec: TrainSpec, regime: str, syn_labels: torch.Tensor) -> tuple[int, int, torch.Tensor | None]:
    """``(n_real, n_syn, q)`` of one regime's batches: how many real images (drawn as
    :func:`real_draw` says), how many synthetic, and the synthetic part's class distribution."""
    k = spec.num_classes
    available = torch.bincount(syn_labels, minlength=k).tolist()
    q = None
    if regime == "gan-only":
        n_syn = spec.batch_size
        q = synthetic_class_probs([1] * k, available, 1.0, "uniform")
    elif regime in SHARE_REGIMES:
        n_syn = round(spec.synthetic_share * spec.batch_size)
        q = synthetic_class_probs(
            _real_class_counts(spec, regime).tolist(),
            available,
            spec.synthetic_share,
            spec.synthetic_sampling,
        )
    else:
        n_syn = 0
    return spec.batch_size - n_syn, n_syn, q


def per_class_synthetic_share(spec: TrainSpec) -> dict[str, float]:
    """Expected fraction of each class's images in a ``real+gan`` batch that are synthetic.

    The real part of a batch is drawn as :func:`real_draw` says (r_c: the train split's class
    frequencies, or uniform over its classes) and the synthetic part from ``synthetic_class_probs``
    (the spec's share, sampling and filtered pool), so class c gets E[real] = n_real r_c and
    E[syn] = n_syn q_c images and s_c = E[syn] / (E[syn] + E[real]).
    ``balance`` sampling gives the tail classes the largest s_c. A class with no image in either
    part gets 0.

    Raises:
        ValueError: the spec holds no real train images (a downstream plan rebuilt from a summary).
        ConfigError: the filtered synthetic pool is empty.

    Example:
        >>> per_class_synthetic_share(spec)  # doctest: +SKIP
        {'T-shirt/top': 0.12, ..., 'Ankle boot': 0.93}
    """
    if len(spec.train_labels) == 0:
        raise ValueError("per_class_synthetic_share needs the plan's real train split, it is empty")
    n_real, n_syn, q = _composition(spec, "real+gan", spec.synthetic_pool()[1])
    counts = _real_class_counts(spec, "real+gan").double()
    real = n_real * counts / counts.sum()
    syn = n_syn * q.double()
    total = real + syn
    share = torch.where(total > 0, syn / total.clamp(min=1e-300), torch.zeros_like(total))
    return dict(zip(spec.class_names, share.tolist(), strict=True))


def balanced_topup(spec: TrainSpec) -> torch.Tensor:
    """Rows of ``spec.synthetic_images`` that ``BalancedDataset(train, augmenter)`` adds, class by class.

    Every class the train split holds is topped up to the largest class's count with synthetic
    images ``0, 1, ...`` of that class (a class it does not hold gets none, as in
    :class:`augment.augmenter.BalancedDataset`). Where a class needs more images than the pool
    holds (``evaluate.synthetic_per_class``), the pool's images repeat so the class counts stay
    those of the dataset users get.

    Raises:
        ConfigError: a class needs images and the pool has none of it.
    """
    counts = spec.train_labels.bincount(minlength=spec.num_classes).tolist()
    goal = max(counts, default=0)
    rows = []
    for c, n in enumerate(counts):
        need = goal - n if n > 0 else 0
        if need == 0:
            continue
        members = torch.nonzero(spec.synthetic_labels == c).flatten()
        if len(members) == 0:
            raise ConfigError(
                f"balanced-dataset: class {spec.class_names[c]!r} needs {need} synthetic images, none generated"
            )
        rows.append(members[torch.arange(need) % len(members)])
    return torch.cat(rows) if rows else torch.empty(0, dtype=torch.int64)


def teacher_baseline_spec(spec: TrainSpec) -> TrainSpec:
    """The spec the classic baseline trains on when a teacher labels the synthetic images: ``real+gan+classic``'s
    batches with the real train images in the synthetic pool's place, trained against the teacher's
    probabilities (``teacher_train_probs``) there. The two cells then differ only in where the
    teacher-labelled share of each batch comes from, so the verdict credits the synthetic images, not the teacher.
    """
    return dataclasses.replace(
        spec,
        synthetic_images=spec.train_images,
        synthetic_labels=spec.train_labels,
        synthetic_probs=spec.teacher_train_probs,
        synthetic_confidence=None,
        confidence_threshold=None,
        soft_labels=True,
        teacher_train_probs=None,
    )


def synthetic_stop(spec: TrainSpec) -> int | None:
    """The first step of the real-data finish of ``spec``'s real+gan regimes (None: synthetic to the end).

    ``synthetic_until`` is a fraction of ``spec.steps``; the synthetic phase keeps at least one step.

    Raises:
        ConfigError: ``synthetic_until`` is not in (0, 1].
    """
    if not 0.0 < spec.synthetic_until <= 1.0:
        raise ConfigError(f"synthetic_until must be in (0, 1], got {spec.synthetic_until}")
    stop = max(1, round(spec.synthetic_until * spec.steps))
    return None if stop >= spec.steps else stop


class _Batches:
    """Draws one regime's minibatches: real and synthetic indices and the classic policy.

    A batch is ``(x, y)``: ``y`` holds class indices, or, when the spec trains on soft labels and
    the regime draws synthetic images, (B, K) probabilities (one-hot rows for the real images).
    ``draw()`` makes the random draws of one batch (indices, then the classic parameters) without
    touching pixels; ``images=False`` keeps no float copy of the images (a stacked grid gathers
    every cell's pixels from one shared copy: :mod:`augment.metrics.stacked`).
    """

    def __init__(
        self,
        spec: TrainSpec,
        regime: str,
        gen: torch.Generator,
        device: torch.device | str = "cpu",
        *,
        images: bool = True,
    ) -> None:
        # The images live on ``device`` (one copy per cell); the draws stay on the CPU generator,
        # so a batch is the same on every device and only small index tensors cross over.
        self.gen, self.device = gen, torch.device(device)
        #: The classic baseline distilled from a teacher: it draws as real+gan+classic, the real images as its pool.
        self.teacher_baseline = regime == BASELINE and spec.teacher_train_probs is not None
        if self.teacher_baseline:
            spec, regime = teacher_baseline_spec(spec), "real+gan+classic"
        self.regime, self.batch_size = regime, spec.batch_size
        self.real_y = spec.train_labels.to(self.device)
        self.real_labels = spec.train_labels  # on the CPU, for the draws
        deployed = regime in DEPLOYED_REGIMES
        # The deployed regimes draw from every generated image, as the augmenter does.
        syn_images, syn_labels = (spec.synthetic_images, spec.synthetic_labels) if deployed else spec.synthetic_pool()
        keep = None if deployed else spec._pool_keep()
        #: The images :attr:`syn_rows` index (the real train split for a teacher's baseline).
        self.syn_source = spec.synthetic_images
        #: Row of each pool image in ``spec.synthetic_images`` (the pool is the filter's subset).
        self.syn_rows = torch.arange(len(syn_labels)) if keep is None else torch.nonzero(keep).flatten()
        if images:
            self.real_x = _as_float(spec.train_images).to(self.device)
            self.syn_x = _as_float(syn_images).to(self.device)
        self.syn_y = syn_labels.to(self.device)
        k = spec.num_classes
        # Checked for every regime: a spec that asks for soft labels without probabilities is wrong.
        syn_probs = spec.synthetic_pool_probs() if spec.soft_labels and not deployed else None
        self.by_class = [torch.nonzero(syn_labels == c).flatten() for c in range(k)]
        #: The baseline's class-balanced resampling: a class the train split holds, then one of its images.
        self.real_sampling = real_draw(spec, regime)
        self.real_by_class = [torch.nonzero(self.real_labels == c).flatten() for c in range(k)]
        self.real_classes = torch.tensor([c for c in range(k) if len(self.real_by_class[c])], dtype=torch.int64)
        self.n_real, self.n_syn, self.q = _composition(spec, regime, syn_labels)
        #: Batches drawn so far, and the first batch of the real-only finish (None: no finish).
        self.drawn = 0
        self.real_from = synthetic_stop(spec) if regime in SHARE_REGIMES and self.n_syn else None
        self.p = spec.synthetic_share if regime == "gan-augmenter" else 0.0
        #: balanced-dataset: the synthetic rows the dataset adds (drawn uniformly with the real ones).
        self.topup = balanced_topup(spec) if regime == "balanced-dataset" else _NO_INDEX
        if (self.n_syn > 0 or deployed) and len(syn_labels) == 0:
            raise ConfigError(f"regime {regime!r} needs synthetic images, the pool is empty")
        #: Images drawn so far (the deployed regimes' mix varies from batch to batch).
        self.seen_real = self.seen_synthetic = 0
        # The targets the draws index: class indices, or with soft labels (only where the batch
        # has synthetic images, so the real-only regimes are the hard-label ones bit for bit)
        # one-hot rows for the real images and the filter's probabilities for the synthetic ones.
        self.soft = syn_probs is not None and self.n_syn > 0
        self.real_t, self.syn_t = self.real_y, self.syn_y
        if self.soft:
            self.real_t = torch.eye(k, device=self.device)[self.real_y]
            self.syn_t = syn_probs.float().to(self.device)
        self.policy = spec.classic if regime in ("real+classic", "real+gan+classic") else "none"
        self.ops = parse_classic(self.policy)
        self.backend = spec.classic_backend
        self.size = spec.train_images.shape[-2]
        #: The classic policy transforms the batch's real rows only (they come first in a batch).
        self.real_rows_only = regime == "real+gan+classic" and not spec.classic_on_synthetic
        #: Leading rows of the last batch drawn that the classic policy transforms.
        self.classic_rows = 0

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
        """One batch's draws: real indices (into the train split), synthetic indices (into the pool),
        and the classic parameters (None for the torchvision backend, which draws its own)."""
        if self.regime == "gan-augmenter":
            # GanAugmenter(p) on a uniformly drawn real batch: each image swapped for a synthetic
            # image of its own class with probability p.
            idx = torch.randint(len(self.real_y), (self.batch_size,), generator=self.gen)
            swap = torch.rand(self.batch_size, generator=self.gen) < self.p
            pick = self._of_classes(self.real_labels[idx[swap]])
            idx = idx[~swap]
        elif self.regime == "balanced-dataset":
            # A uniform draw from BalancedDataset: items past the real ones are its synthetic top-up.
            n = len(self.real_y)
            u = torch.randint(n + len(self.topup), (self.batch_size,), generator=self.gen)
            idx, pick = u[u < n], self.topup[u[u >= n] - n]
        else:
            n_real, n_syn = self.n_real, self.n_syn
            if self.real_from is not None and self.drawn >= self.real_from:
                n_real, n_syn = self.batch_size, 0  # the real-data finish
            if not n_real:
                idx = _NO_INDEX
            elif self.real_sampling == "balance":
                cls = self.real_classes[torch.randint(len(self.real_classes), (n_real,), generator=self.gen)]
                idx = self._of_classes(cls, self.real_by_class)
            else:
                idx = torch.randint(len(self.real_y), (n_real,), generator=self.gen)
            pick = _NO_INDEX
            if n_syn:
                pick = self._of_classes(torch.multinomial(self.q, n_syn, replacement=True, generator=self.gen))
        self.drawn += 1
        #: Real rows at the head of the last batch drawn (the synthetic ones follow them).
        self.last_real = len(idx)
        self.seen_real += len(idx)
        self.seen_synthetic += len(pick)
        params = None
        self.classic_rows = len(idx) if self.real_rows_only else len(idx) + len(pick)
        if self.ops and self.backend == "torch":
            # Drawn for the whole batch either way, so the random stream does not depend on the option.
            params = classic_params(self.ops, self.batch_size, self.size, self.gen)
        return idx, pick, params

    def classic_mask(self) -> torch.Tensor | None:
        """Which rows of the last batch drawn the classic policy transforms (None: every row)."""
        if not self.real_rows_only:
            return None
        return torch.arange(self.batch_size) < self.classic_rows

    def _of_classes(self, cls: torch.Tensor, by_class: list[torch.Tensor] | None = None) -> torch.Tensor:
        """A random image of each class in ``cls``: an index into the synthetic pool, or into the
        real train split with ``by_class=self.real_by_class``."""
        by_class = self.by_class if by_class is None else by_class
        pick = torch.empty(len(cls), dtype=torch.int64)
        for c in cls.unique().tolist():
            members, where = by_class[c], cls == c
            pick[where] = members[torch.randint(len(members), (int(where.sum()),), generator=self.gen)]
        return pick

    def targets(self, idx: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
        """The batch's targets for the draws ``idx`` (real) and ``pick`` (synthetic), on the device."""
        ys = []
        if len(idx):
            ys.append(self.real_t[idx.to(self.device)])
        if len(pick):
            ys.append(self.syn_t[pick.to(self.device)])
        return torch.cat(ys)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx, pick, params = self.draw()
        xs = []
        if len(idx):
            xs.append(self.real_x[idx.to(self.device)])
        if len(pick):
            xs.append(self.syn_x[pick.to(self.device)])
        x = torch.cat(xs)
        # The images only: a crop or flip keeps the class and its soft label.
        if params is not None:
            x = apply_classic(x, self.ops, params, self.classic_mask())
        elif self.ops:
            x = self.classic_torchvision(x)
        return x, self.targets(idx, pick)

    def classic_torchvision(self, x: torch.Tensor) -> torch.Tensor:
        """The last batch drawn, ``x``, through the classic policy with a backend that draws its own
        parameters (torchvision): its first :attr:`classic_rows` rows; the rest as they are."""
        n = self.classic_rows
        if n == len(x):
            return classic_augment(x, self.policy, self.gen, self.backend)
        if n == 0:
            return x
        return torch.cat([classic_augment(x[:n], self.policy, self.gen, self.backend), x[n:]])


_NO_INDEX = torch.empty(0, dtype=torch.int64)


def init_classifier(spec: TrainSpec, seed: int) -> torch.nn.Module:
    """The classifier of a cell with ``seed``, initialised from torch's global RNG seeded under a lock
    (the same weights in any thread, process or stack)."""
    size, channels = spec.train_images.shape[-1], spec.train_images.shape[1]
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_classifier(spec.classifier, spec.num_classes, channels, size)


def lr_scale(step: int, steps: int) -> float:
    """Linear warm-up over the first 5% of ``steps``, then cosine decay to 0 (every regime's schedule)."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_classifier(spec: TrainSpec, regime: str, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train one classifier for ``spec.steps`` steps under ``regime``; returns it and its counters."""
    if regime not in REGIMES:
        raise ConfigError(f"unknown regime {regime!r} (one of {REGIMES})")
    # Cells often run in Dask worker processes, whose nanny sets MALLOC_TRIM_THRESHOLD_=65536: glibc
    # then returns every freed activation to the OS and re-faults it the next step, which slows a cell
    # there well below its speed in the main process (measured in benchmarks/RESULTS.md).
    keep_freed_memory()
    with torch_threads(spec.threads or 1):
        return _train_classifier(spec, regime, seed)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (None: unchanged); the setting is process-wide, so
    it is restored afterwards."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def classifier_autocast(spec: TrainSpec, device: torch.device) -> torch.autocast:
    """The training steps' autocast context: bf16 where ``spec.precision`` resolves to it, else off.

    Raises:
        ConfigError: ``spec.precision`` is not auto, fp32 or bf16.
    """
    precision = resolve_precision(spec.precision, device, "evaluate.precision")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def split_bn_layers(spec: TrainSpec, regime: str, model: torch.nn.Module) -> list[SplitBatchNorm2d]:
    """``model``'s BatchNorm layers made :class:`SplitBatchNorm2d` where ``spec.synthetic_bn`` asks for it and
    ``regime`` mixes real and synthetic images (:data:`GAN_REGIMES`; else none: the joint BatchNorm, bit
    for bit; ``gan-only`` has no real rows to take the running statistics from).

    Raises:
        ConfigError: ``spec.synthetic_bn`` is not one of :data:`SYNTHETIC_BN`.
    """
    if spec.synthetic_bn not in SYNTHETIC_BN:
        raise ConfigError(f"synthetic_bn must be one of {', '.join(SYNTHETIC_BN)}, got {spec.synthetic_bn!r}")
    if spec.synthetic_bn == "joint" or regime not in GAN_REGIMES:
        return []
    return split_batchnorms(model, spec.synthetic_bn)


def _train_classifier(spec: TrainSpec, regime: str, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    model = init_classifier(spec, seed)
    split_layers = split_bn_layers(spec, regime, model)
    device = torch.device(spec.device)
    model.to(device)
    autocast = classifier_autocast(spec, device)
    gen = torch.Generator().manual_seed(seed)
    batches = _Batches(spec, regime, gen, device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=WEIGHT_DECAY)
    model.train()
    for step in range(spec.steps):
        for group in opt.param_groups:
            group["lr"] = spec.lr * lr_scale(step, spec.steps)
        x, y = batches()  # already on the device
        for layer in split_layers:
            layer.split = batches.last_real
        with autocast:
            logits = model(nhwc(x))
        # y is class indices, or (B, K) probabilities with soft labels: the same cross-entropy,
        # -sum_k y_k log softmax_k, which for one-hot rows is the hard-label loss (in fp32).
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model, cell_counters(spec, batches)


def cell_counters(spec: TrainSpec, batches: _Batches) -> dict[str, Any]:
    """What a cell trained on: steps, batch size, real and synthetic images seen, classic policy."""
    out = {
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "images_real": batches.seen_real,
        "images_synthetic": batches.seen_synthetic,
        "classic": batches.policy,
        "real_draw": batches.real_sampling,
    }
    if batches.teacher_baseline:  # its pool is the real images: every image it saw is real
        out.update(images_real=batches.seen_real + batches.seen_synthetic, images_synthetic=0)
        out["images_teacher_labelled"] = batches.seen_synthetic
    return out


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Softmax probabilities for uint8 images (on the CPU, whatever the model's device), in fp32."""
    model.eval()
    device = next(model.parameters()).device
    out = [
        torch.softmax(model(_as_float(images[i : i + batch_size].to(device))), dim=1).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, 0)


def balanced_accuracy_se(recall: list[float], counts: list[int]) -> float:
    """Binomial standard error of a balanced accuracy scored on ``counts`` images per class: the classes'
    recalls as independent proportions, ``sqrt(sum_c p_c (1 - p_c) / n_c) / K`` over the K classes present,
    with ``p_c = (r_c n_c + 1) / (n_c + 2)`` (Laplace's rule: a class of one image is not a proportion
    known exactly)."""
    terms = []
    for r, n in zip(recall, counts, strict=True):
        if n > 0:
            p = (r * n + 1) / (n + 2)
            terms.append(p * (1 - p) / n)
    return math.sqrt(sum(terms)) / len(terms)


def score(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, per-class recall and the confusion matrix.

    Same definitions as scikit-learn's ``accuracy_score``, ``balanced_accuracy_score`` (mean recall
    over the classes present) and ``f1_score(average="macro", zero_division=0)`` over all classes.
    """
    cm = np.bincount(labels.numpy() * num_classes + preds.numpy(), minlength=num_classes**2)
    cm = cm.reshape(num_classes, num_classes).astype(np.int64)  # rows: true class, columns: predicted
    tp, true_n, pred_n = np.diag(cm).astype(np.float64), cm.sum(axis=1), cm.sum(axis=0)
    recall = np.divide(tp, true_n, out=np.zeros_like(tp), where=true_n > 0)
    precision = np.divide(tp, pred_n, out=np.zeros_like(tp), where=pred_n > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "balanced_accuracy": float(recall[true_n > 0].mean()) if (true_n > 0).any() else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class_recall": recall.tolist(),
        "confusion": cm.tolist(),
    }
