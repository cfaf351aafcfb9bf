"""The downstream verdict: does GAN augmentation beat classic augmentation on a real test set?

A classifier is trained from scratch under each *regime*, with the same number of optimizer steps
and the same batch size in every regime, for several seeds, and scored on the real test split:

* ``real``: the real train split, no augmentation;
* ``real+classic``: the real train split with the classic baseline (the best of
  ``evaluate.classic`` on the validation split: crop; crop+flip; crop+flip+affine);
* ``real+gan``: each batch takes ``synthetic_share`` of its images from the synthetic pool
  (classes drawn to even out the real class imbalance, ``synthetic_sampling: balance``);
* ``real+gan+classic``: the same, with the classic baseline applied to the whole batch;
* ``gan-only``: synthetic images only, classes uniform (Classification Accuracy Score);
* ``gan-augmenter``: what ``AugmentedDataset(train, GanAugmenter(p=synthetic_share))`` feeds a
  classifier: real images drawn uniformly, each replaced with probability p by a synthetic image
  of its own class (the real class frequencies stay; no classic augmentation);
* ``balanced-dataset``: what ``BalancedDataset(train, augmenter)`` feeds it: the real train split
  plus synthetic images topping every class up to the largest class's count, drawn uniformly from
  the union (left out of the grid where the split is balanced: it would add no image).

The two deployed regimes draw from the whole synthetic pool (no confidence filter, hard labels),
as the augmenter does.

With ``soft_labels``, the synthetic images of a batch are trained against the probabilities the
confidence-filter classifier (real train split) gives them instead of their one-hot class; real
images keep their hard labels. A generated image of a class can look like another one: a soft
label says so instead of teaching the classifier a confident wrong answer.

The work separates into picklable pieces so an orchestrator (Prefect/Dask) can run the
regime x seed grid as parallel tasks::

    plan = prepare(data, synthetic_images, synthetic_labels, cfg.evaluate, seed=cfg.seed)
    cells = [run_cell(plan, regime, seed) for regime in plan.regimes for seed in plan.seeds]
    result = summarize(plan, cells)

* ``prepare(data, synthetic_images, synthetic_labels, cfg, *, seed=0, map_fn=map) -> Plan``:
  copies what the cells need (uint8 tensors, no model), chooses the classic baseline and, with
  ``cfg.tune``, the synthetic share, confidence threshold and soft labels, *on the validation
  split only* (``map_fn`` runs those selection cells; pass a parallel map to spread them). Trains
  the confidence-filter classifier (real train split) when a threshold or soft labels are set or
  tuned.
* ``run_cell(plan, regime, seed) -> dict``: trains one classifier and scores it on the test
  split. Pure and deterministic given its arguments (CPU; parameter init, batch draws and
  augmentation all come from ``seed``). Returns plain JSON-able values.
* ``run_grid_item(plan, (regime, seed)) -> dict``: the same, for a ``map_fn`` over the grid's pairs
  (``evaluate_run(..., map_fn=...)`` maps it over ``[(regime, seed), ...]``).
* ``summarize(plan, cells) -> dict``: means with 95% t-intervals over seeds, paired deltas against
  ``real+classic``, per-class recall, summed confusion matrices and the plain-text verdict.
* ``per_class_synthetic_share(plan) -> dict``: the expected fraction of each class's images in a
  ``real+gan`` batch that are synthetic (the tail's share is what ``balance`` sampling raises).

Example:
    >>> plan = prepare(data, syn_images, syn_labels, cfg.evaluate, seed=0)   # doctest: +SKIP
    >>> cells = [run_cell(plan, r, s) for r in plan.regimes for s in plan.seeds]  # doctest: +SKIP
    >>> summarize(plan, cells)["verdict"]["text"]  # doctest: +SKIP
    'No measurable benefit: ...'
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from augment.config import EvaluateConfig
from augment.data import PreparedData
from augment.devices import keep_freed_memory
from augment.errors import ConfigError
from augment.metrics.regimes import (
    BASELINE,
    DEPLOYED_REGIMES,
    GAN_REGIMES,
    MIN_VERDICT_SEEDS,
    REGIMES,
    VERDICT_METRIC,
)
from augment.models.classifier import build_classifier

log = logging.getLogger(__name__)

CLASSIC_OPS = ("crop", "flip", "affine")
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
#: Seeds of the validation-split selection cells start here, past any grid's ``seed, seed + 1, ...``.
SELECT_SEED_OFFSET = 100
#: AdamW's decoupled weight decay of every downstream classifier.
WEIGHT_DECAY = 5e-4

# Parameter initialisation draws from torch's global RNG: seed it under a lock so cells running
# in parallel threads cannot interleave their draws.
_INIT_LOCK = threading.Lock()

MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]


# ------------------------------------------------------------------------------------------------
# Classic augmentation: parameters drawn per image from the cell's generator, applied batched.


def parse_classic(policy: str) -> tuple[str, ...]:
    """``"crop+flip"`` -> ``("crop", "flip")``; ``"none"`` -> ``()``; unknown ops are a ConfigError."""
    if policy == "none":
        return ()
    ops = tuple(policy.split("+"))
    bad = [op for op in ops if op not in CLASSIC_OPS]
    if bad or not ops or len(set(ops)) != len(ops):
        raise ConfigError(f"evaluate.classic: bad policy {policy!r} (ops joined by '+' from {CLASSIC_OPS}, or 'none')")
    return ops


CLASSIC_BACKENDS = ("torch", "torchvision")


def torchvision_policy(policy: str, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The classic policy as a torchvision v2 pipeline for one float image in [-1, 1] (fill -1)."""
    from torchvision.transforms import v2

    ops = parse_classic(policy)
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if "crop" in ops:
        steps.append(v2.RandomCrop(size, padding=max(1, size // 8), fill=-1.0))
    if "flip" in ops:
        steps.append(v2.RandomHorizontalFlip())
    if "affine" in ops:
        steps.append(
            v2.RandomAffine(
                degrees=10,
                translate=(0.1, 0.1),
                scale=(0.9, 1.1),
                fill=-1.0,
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    return v2.Compose(steps)


def classic_augment(x: torch.Tensor, policy: str, gen: torch.Generator, backend: str = "torch") -> torch.Tensor:
    """Apply a classic policy to a float batch in [-1, 1] (background -1 fills the borders).

    ``backend="torch"`` (the default): the ops follow torchvision's ``RandomCrop(size, padding=size // 8)``,
    ``RandomHorizontalFlip()`` and ``RandomAffine(degrees=10, translate=(0.1, 0.1),
    scale=(0.9, 1.1))``, but draw one parameter set per image from ``gen`` (deterministic under
    parallel tasks) and apply them to the whole batch at once (CPU speed).

    ``backend="torchvision"``: those very torchvision v2 transforms, image by image (much slower
    on these small images); their random draws come from torch's global RNG, seeded from ``gen``
    under a lock, so a cell stays reproducible when cells run in threads.
    """
    if backend == "torchvision":
        if not parse_classic(policy):
            return x
        transform = torchvision_policy(policy, x.shape[-1])
        seed = int(torch.randint(1 << 62, (1,), generator=gen))
        with _INIT_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([transform(img) for img in x])
    if backend != "torch":
        raise ConfigError(f"unknown classic backend {backend!r} (one of {CLASSIC_BACKENDS})")
    ops = parse_classic(policy)
    return apply_classic(x, ops, classic_params(ops, len(x), x.shape[-2], gen))


def classic_params(ops: tuple[str, ...], n: int, size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The random parameters of ``ops`` for ``n`` images of ``size`` pixels, drawn from ``gen`` on the
    CPU in a fixed order (crop offsets, flips, then angle, scale and shift): what one
    :func:`classic_augment` call draws. Parameters of many batches concatenate along dim 0."""
    params: dict[str, torch.Tensor] = {}
    if "crop" in ops:
        p = max(1, size // 8)
        params["oy"] = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        params["ox"] = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    if "flip" in ops:
        params["flip"] = torch.rand(n, generator=gen) < 0.5
    if "affine" in ops:
        params["angle"] = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
        params["scale"] = 0.9 + torch.rand(n, generator=gen) * 0.2
        params["shift"] = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.2  # 10% of the size = 0.2 in [-1, 1] units
    return params


def apply_classic(x: torch.Tensor, ops: tuple[str, ...], params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply ``ops`` with :func:`classic_params`'s parameters (one row per image) to a float batch
    in [-1, 1], all images at once: every output image depends only on its own input and row."""
    n, _, h, w = x.shape
    dev = x.device  # the parameters come from the CPU, the pixels stay where they are
    if "crop" in ops:
        p = max(1, h // 8)
        padded = F.pad(x, (p, p, p, p), value=-1.0)
        oy, ox = params["oy"], params["ox"]
        rows = (torch.arange(h)[None, :] + oy[:, None])[:, :, None].to(dev)  # (n, h, 1)
        cols = (torch.arange(w)[None, :] + ox[:, None])[:, None, :].to(dev)  # (n, 1, w)
        batch = torch.arange(n, device=dev)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if "flip" in ops:
        x = torch.where(params["flip"].to(dev)[:, None, None, None], x.flip(3), x)
    if "affine" in ops:
        angle, scale, shift = params["angle"], params["scale"], params["shift"]
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(dev, x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0
    return x.contiguous()


# ------------------------------------------------------------------------------------------------
# The plan.


@dataclass
class Plan:
    """Everything a cell needs: uint8 splits, the synthetic pool, the chosen settings (picklable)."""

    class_names: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    synthetic_images: torch.Tensor
    synthetic_labels: torch.Tensor
    regimes: list[str]
    seeds: list[int]
    classifier: str = "smallcnn"
    steps: int = 500
    batch_size: int = 128
    lr: float = 2e-3
    synthetic_share: float = 0.5
    synthetic_sampling: str = "balance"
    confidence_threshold: float | None = None
    #: Probability the filter classifier gives each synthetic image's own class (None = no filter).
    synthetic_confidence: torch.Tensor | None = None
    #: Train synthetic images against ``synthetic_probs`` instead of their one-hot class.
    soft_labels: bool = False
    #: The filter classifier's softmax, (N, K) row for row with ``synthetic_images`` (None = not trained).
    synthetic_probs: torch.Tensor | None = None
    classic: str = "crop"
    #: "torch" (vectorised, the default) or "torchvision" (the v2 transforms themselves, per image).
    classic_backend: str = "torch"
    selection: dict[str, Any] = field(default_factory=dict)
    #: Intra-op threads: None = every core for a stacked grid, 1 for a lone cell.
    threads: int | None = None
    #: Most cells per stacked network (:mod:`augment.metrics.stacked`).
    stack_cells: int = 16
    data_fingerprint: str = ""
    #: Where the classifiers train and predict ("cpu" or "cuda"); batches are drawn on the CPU.
    device: str = "cpu"
    #: Regimes of ``evaluate.regimes`` left out of the grid, and why (regime -> reason).
    skipped_regimes: dict[str, str] = field(default_factory=dict)

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
            ConfigError: the plan has no ``synthetic_probs`` (``prepare`` trains the filter
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


def _composition(plan: Plan, regime: str, syn_labels: torch.Tensor) -> tuple[int, int, torch.Tensor | None]:
    """``(n_real, n_syn, q)`` of one regime's batches: how many real images (drawn uniformly over
    the real train split), how many synthetic, and the synthetic part's class distribution."""
    k = plan.num_classes
    available = torch.bincount(syn_labels, minlength=k).tolist()
    q = None
    if regime == "gan-only":
        n_syn = plan.batch_size
        q = synthetic_class_probs([1] * k, available, 1.0, "uniform")
    elif regime in ("real+gan", "real+gan+classic"):
        n_syn = round(plan.synthetic_share * plan.batch_size)
        q = synthetic_class_probs(
            plan.train_labels.bincount(minlength=k).tolist(),
            available,
            plan.synthetic_share,
            plan.synthetic_sampling,
        )
    else:
        n_syn = 0
    return plan.batch_size - n_syn, n_syn, q


def per_class_synthetic_share(plan: Plan) -> dict[str, float]:
    """Expected fraction of each class's images in a ``real+gan`` batch that are synthetic.

    The real part of a batch is drawn uniformly over the real train split and the synthetic part
    from ``synthetic_class_probs`` (the plan's share, sampling and filtered pool), so class c gets
    E[real] = n_real r_c and E[syn] = n_syn q_c images and s_c = E[syn] / (E[syn] + E[real]).
    ``balance`` sampling gives the tail classes the largest s_c. A class with no image in either
    part gets 0.

    Raises:
        ValueError: the plan holds no real train images (a plan rebuilt from a summary).
        ConfigError: the filtered synthetic pool is empty.

    Example:
        >>> per_class_synthetic_share(plan)  # doctest: +SKIP
        {'T-shirt/top': 0.12, ..., 'Ankle boot': 0.93}
    """
    if len(plan.train_labels) == 0:
        raise ValueError("per_class_synthetic_share needs the plan's real train split, it is empty")
    n_real, n_syn, q = _composition(plan, "real+gan", plan.synthetic_pool()[1])
    counts = plan.train_labels.bincount(minlength=plan.num_classes).double()
    real = n_real * counts / counts.sum()
    syn = n_syn * q.double()
    total = real + syn
    share = torch.where(total > 0, syn / total.clamp(min=1e-300), torch.zeros_like(total))
    return dict(zip(plan.class_names, share.tolist(), strict=True))


def balanced_topup(plan: Plan) -> torch.Tensor:
    """Rows of ``plan.synthetic_images`` that ``BalancedDataset(train, augmenter)`` adds, class by class.

    Every class the train split holds is topped up to the largest class's count with synthetic
    images ``0, 1, ...`` of that class (a class it does not hold gets none, as in
    :class:`augment.augmenter.BalancedDataset`). Where a class needs more images than the pool
    holds (``evaluate.synthetic_per_class``), the pool's images repeat so the class counts stay
    those of the dataset users get.

    Raises:
        ConfigError: a class needs images and the pool has none of it.
    """
    counts = plan.train_labels.bincount(minlength=plan.num_classes).tolist()
    goal = max(counts, default=0)
    rows = []
    for c, n in enumerate(counts):
        need = goal - n if n > 0 else 0
        if need == 0:
            continue
        members = torch.nonzero(plan.synthetic_labels == c).flatten()
        if len(members) == 0:
            raise ConfigError(
                f"balanced-dataset: class {plan.class_names[c]!r} needs {need} synthetic images, none generated"
            )
        rows.append(members[torch.arange(need) % len(members)])
    return torch.cat(rows) if rows else torch.empty(0, dtype=torch.int64)


def _uses_pool_settings(regime: str) -> bool:
    """Whether a regime draws through the confidence filter and soft labels (not the deployed ones)."""
    return "gan" in regime and regime not in DEPLOYED_REGIMES


class _Batches:
    """Draws one regime's minibatches: real and synthetic indices and the classic policy.

    A batch is ``(x, y)``: ``y`` holds class indices, or, when the plan trains on soft labels and
    the regime draws synthetic images, (B, K) probabilities (one-hot rows for the real images).
    ``draw()`` makes the random draws of one batch (indices, then the classic parameters) without
    touching pixels; ``images=False`` keeps no float copy of the images (a stacked grid gathers
    every cell's pixels from one shared copy: :mod:`augment.metrics.stacked`).
    """

    def __init__(
        self,
        plan: Plan,
        regime: str,
        gen: torch.Generator,
        device: torch.device | str = "cpu",
        *,
        images: bool = True,
    ) -> None:
        # The images live on ``device`` (one copy per cell); the draws stay on the CPU generator,
        # so a batch is the same on every device and only small index tensors cross over.
        self.gen, self.device = gen, torch.device(device)
        self.regime, self.batch_size = regime, plan.batch_size
        self.real_y = plan.train_labels.to(self.device)
        self.real_labels = plan.train_labels  # on the CPU, for the draws
        deployed = regime in DEPLOYED_REGIMES
        # The deployed regimes draw from every generated image, as the augmenter does.
        syn_images, syn_labels = (plan.synthetic_images, plan.synthetic_labels) if deployed else plan.synthetic_pool()
        keep = None if deployed else plan._pool_keep()
        #: Row of each pool image in ``plan.synthetic_images`` (the pool is the filter's subset).
        self.syn_rows = torch.arange(len(syn_labels)) if keep is None else torch.nonzero(keep).flatten()
        if images:
            self.real_x = _as_float(plan.train_images).to(self.device)
            self.syn_x = _as_float(syn_images).to(self.device)
        self.syn_y = syn_labels.to(self.device)
        k = plan.num_classes
        # Checked for every regime: a plan that asks for soft labels without probabilities is wrong.
        syn_probs = plan.synthetic_pool_probs() if plan.soft_labels and not deployed else None
        self.by_class = [torch.nonzero(syn_labels == c).flatten() for c in range(k)]
        self.n_real, self.n_syn, self.q = _composition(plan, regime, syn_labels)
        self.p = plan.synthetic_share if regime == "gan-augmenter" else 0.0
        #: balanced-dataset: the synthetic rows the dataset adds (drawn uniformly with the real ones).
        self.topup = balanced_topup(plan) if regime == "balanced-dataset" else _NO_INDEX
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
        self.policy = plan.classic if regime in ("real+classic", "real+gan+classic") else "none"
        self.ops = parse_classic(self.policy)
        self.backend = plan.classic_backend
        self.size = plan.train_images.shape[-2]

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
            idx = torch.randint(len(self.real_y), (self.n_real,), generator=self.gen) if self.n_real else _NO_INDEX
            pick = _NO_INDEX
            if self.n_syn:
                pick = self._of_classes(torch.multinomial(self.q, self.n_syn, replacement=True, generator=self.gen))
        self.seen_real += len(idx)
        self.seen_synthetic += len(pick)
        params = None
        if self.ops and self.backend == "torch":
            params = classic_params(self.ops, self.batch_size, self.size, self.gen)
        return idx, pick, params

    def _of_classes(self, cls: torch.Tensor) -> torch.Tensor:
        """A random synthetic image (an index into the pool) of each class in ``cls``."""
        pick = torch.empty(len(cls), dtype=torch.int64)
        for c in cls.unique().tolist():
            members, where = self.by_class[c], cls == c
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
            x = apply_classic(x, self.ops, params)
        elif self.ops:
            x = classic_augment(x, self.policy, self.gen, self.backend)
        return x, self.targets(idx, pick)


_NO_INDEX = torch.empty(0, dtype=torch.int64)


def init_classifier(plan: Plan, seed: int) -> torch.nn.Module:
    """The classifier of a cell with ``seed``, initialised from torch's global RNG seeded under a lock
    (the same weights in any thread, process or stack)."""
    size, channels = plan.train_images.shape[-1], plan.train_images.shape[1]
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_classifier(plan.classifier, plan.num_classes, channels, size)


def lr_scale(step: int, steps: int) -> float:
    """Linear warm-up over the first 5% of ``steps``, then cosine decay to 0 (every regime's schedule)."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_classifier(plan: Plan, regime: str, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train one classifier for ``plan.steps`` steps under ``regime``; returns it and its counters."""
    if regime not in REGIMES:
        raise ConfigError(f"unknown regime {regime!r} (one of {REGIMES})")
    # Cells often run in Dask worker processes, whose nanny sets MALLOC_TRIM_THRESHOLD_=65536: glibc
    # then returns every freed activation to the OS and re-faults it the next step, which made a
    # Fashion-MNIST cell take 2.0x as long there as in the main process (benchmarks/RESULTS.md).
    keep_freed_memory()
    with torch_threads(plan.threads or 1):
        return _train_classifier(plan, regime, seed)


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


def _train_classifier(plan: Plan, regime: str, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    model = init_classifier(plan, seed)
    device = torch.device(plan.device)
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    batches = _Batches(plan, regime, gen, device)
    opt = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=WEIGHT_DECAY)
    model.train()
    for step in range(plan.steps):
        for group in opt.param_groups:
            group["lr"] = plan.lr * lr_scale(step, plan.steps)
        x, y = batches()  # already on the device
        # y is class indices, or (B, K) probabilities with soft labels: the same cross-entropy,
        # -sum_k y_k log softmax_k, which for one-hot rows is the hard-label loss.
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model, cell_counters(plan, batches)


def cell_counters(plan: Plan, batches: _Batches) -> dict[str, Any]:
    """What a cell trained on: steps, batch size, real and synthetic images seen, classic policy."""
    return {
        "steps": plan.steps,
        "batch_size": plan.batch_size,
        "images_real": batches.seen_real,
        "images_synthetic": batches.seen_synthetic,
        "classic": batches.policy,
    }


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Softmax probabilities for uint8 images (on the CPU, whatever the model's device)."""
    model.eval()
    device = next(model.parameters()).device
    out = [
        torch.softmax(model(_as_float(images[i : i + batch_size].to(device))), dim=1).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, 0)


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


def split_of(plan: Plan, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of the split a cell is scored on: "val" (selection) or "test" (the grid)."""
    return (plan.val_images, plan.val_labels) if split == "val" else (plan.test_images, plan.test_labels)


def cell_result(
    plan: Plan, regime: str, seed: int, split: str, counters: dict[str, Any], preds: torch.Tensor, seconds: float
) -> dict[str, Any]:
    """The JSON-able row of one trained cell: its settings, counters and scores on ``split``."""
    return {
        "regime": regime,
        "seed": seed,
        "split": split,
        **counters,
        **score(split_of(plan, split)[1], preds, plan.num_classes),
        "synthetic_share": plan.synthetic_share if "gan" in regime else None,  # gan-augmenter: its p
        "confidence_threshold": plan.confidence_threshold if _uses_pool_settings(regime) else None,
        "soft_labels": plan.soft_labels if _uses_pool_settings(regime) else None,
        "seconds": seconds,
    }


def _fit_score(plan: Plan, regime: str, seed: int, split: str) -> dict[str, Any]:
    start = time.time()
    model, counters = train_classifier(plan, regime, seed)
    with torch_threads(plan.threads or 1):
        preds = predict_proba(model, split_of(plan, split)[0]).argmax(dim=1)
    return cell_result(plan, regime, seed, split, counters, preds, time.time() - start)


def run_cell(plan: Plan, regime: str, seed: int) -> dict[str, Any]:
    """Train one classifier under ``regime`` with ``seed`` and score it on the real test split."""
    return _fit_score(plan, regime, seed, "test")


def run_grid_item(plan: Plan, item: tuple[str, int]) -> dict[str, Any]:
    """``run_cell(plan, *item)``: the form a ``map_fn`` over ``(regime, seed)`` pairs calls."""
    regime, seed = item
    return run_cell(plan, regime, seed)


def run_grid(plan: Plan, map_fn: MapFn | None = None, *, progress: bool = False) -> Iterable[dict[str, Any]]:
    """Every ``(regime, seed)`` cell of the plan on the test split, in grid order.

    ``map_fn=None`` trains the whole grid as stacked networks in this process
    (:func:`augment.metrics.stacked.fit_score_many`; ``progress`` shows a bar over its steps); a
    ``map_fn`` (builtin ``map``, Prefect tasks, Dask) runs :func:`run_grid_item` cell by cell, lazily
    where the map is.
    """
    grid = [(r, s) for r in plan.regimes for s in plan.seeds]
    if map_fn is None:
        from augment.metrics.stacked import fit_score_many

        return fit_score_many([(plan, r, s, "test") for r, s in grid], progress=progress, desc="downstream grid")
    return map_fn(functools.partial(run_grid_item, plan), grid)


def _selection_plan(plan: Plan, spec: dict[str, Any]) -> Plan | None:
    """The plan of a validation-split selection cell; None where a threshold lets no image through."""
    p = dataclasses.replace(plan, **spec["settings"])
    if "gan" in spec["regime"] and len(p.synthetic_pool()[1]) == 0:
        return None
    return p


def _selection_row(spec: dict[str, Any], out: dict[str, Any] | None) -> dict[str, Any]:
    if out is None:
        return {**spec, "balanced_accuracy": None, "accuracy": None, "skipped": "no synthetic image passes"}
    return {**spec, "balanced_accuracy": out["balanced_accuracy"], "accuracy": out["accuracy"]}


def _selection_cell(plan: Plan, spec: dict[str, Any]) -> dict[str, Any]:
    """A validation-split cell of the baseline choice or the tuning (never the test split)."""
    p = _selection_plan(plan, spec)
    return _selection_row(spec, None if p is None else _fit_score(p, spec["regime"], spec["seed"], "val"))


def _run_selection(plan: Plan, specs: list[dict[str, Any]], map_fn: MapFn | None) -> list[dict[str, Any]]:
    """The selection cells of ``specs`` on the validation split: stacked (``map_fn=None``) or mapped."""
    if map_fn is not None:
        return list(map_fn(functools.partial(_selection_cell, plan), specs))
    from augment.metrics.stacked import fit_score_many

    plans = [_selection_plan(plan, spec) for spec in specs]
    jobs = [(p, spec["regime"], spec["seed"], "val") for p, spec in zip(plans, specs, strict=True) if p is not None]
    outs = iter(fit_score_many(jobs, desc=f"selection ({specs[0]['stage']})" if specs else "selection"))
    return [_selection_row(spec, None if p is None else next(outs)) for p, spec in zip(plans, specs, strict=True)]


# ------------------------------------------------------------------------------------------------
# prepare: copy the data, choose the baseline and the GAN settings on the validation split.


def prepare(
    data: PreparedData,
    synthetic_images: torch.Tensor,
    synthetic_labels: torch.Tensor,
    cfg: EvaluateConfig,
    *,
    seed: int = 0,
    map_fn: MapFn | None = None,
    device: torch.device | str = "cpu",
) -> Plan:
    """Build the plan of the downstream grid; selection happens on the validation split only.

    Args:
        data: the run's splits; the GAN was trained on ``data.train`` only.
        synthetic_images: uint8 ``(N, C, H, W)`` from the run's generator; ``synthetic_labels`` int64.
        cfg: the ``evaluate`` section.
        seed: base seed; the grid's seeds are ``seed, seed + 1, ...``.
        map_fn: runs the selection cells one by one (builtin ``map``, a parallel map); None (the
            default) trains them as stacked networks here (:mod:`augment.metrics.stacked`).
        device: where the classifiers train ("cpu" or "cuda").
    """
    for regime in cfg.regimes:
        if regime not in REGIMES:
            raise ConfigError(f"evaluate.regimes: unknown regime {regime!r} (one of {REGIMES})")
    for policy in cfg.classic:
        parse_classic(policy)
    if synthetic_images.dtype != torch.uint8:
        raise ValueError(f"synthetic images must be uint8 (N, C, H, W), got {synthetic_images.dtype}")
    if synthetic_images.shape[1:] != data.train.images.shape[1:]:
        raise ValueError(
            f"synthetic images are {tuple(synthetic_images.shape[1:])}, the data {tuple(data.train.images.shape[1:])}"
        )
    plan = Plan(
        class_names=list(data.class_names),
        train_images=data.train.images,
        train_labels=data.train.labels,
        val_images=data.val.images,
        val_labels=data.val.labels,
        test_images=data.test.images,
        test_labels=data.test.labels,
        synthetic_images=synthetic_images,
        synthetic_labels=synthetic_labels,
        regimes=list(cfg.regimes),
        seeds=[seed + i for i in range(cfg.seeds)],
        classifier=cfg.classifier,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        synthetic_share=cfg.synthetic_share,
        synthetic_sampling=cfg.synthetic_sampling,
        confidence_threshold=cfg.confidence_threshold,
        classic=cfg.classic[0],
        classic_backend=cfg.classic_backend,
        threads=cfg.threads,
        stack_cells=cfg.stack_cells,
        data_fingerprint=data.fingerprint,
        device=str(device),
    )
    if "balanced-dataset" in plan.regimes and len(balanced_topup(plan)) == 0:
        plan.regimes.remove("balanced-dataset")
        plan.skipped_regimes["balanced-dataset"] = (
            "the train split is balanced: BalancedDataset would add no image (it is the real regime)"
        )
    select_seeds = [seed + SELECT_SEED_OFFSET + i for i in range(cfg.select_seeds)]
    needs_val = len(cfg.classic) > 1 or cfg.tune
    if needs_val and len(data.val) == 0:
        raise ConfigError(
            "evaluate: choosing the classic baseline or tuning needs a validation split "
            "(data.split.val > 0), or give a single evaluate.classic policy and tune: false"
        )
    selection: dict[str, Any] = {"split": "val", "n_val": len(data.val), "seeds": select_seeds}

    # Classic baseline: the best policy on the validation split.
    if len(cfg.classic) > 1:
        specs = [
            {"stage": "classic", "regime": BASELINE, "seed": s, "settings": {"classic": pol}}
            for pol in cfg.classic
            for s in select_seeds
        ]
        rows = _run_selection(plan, specs, map_fn)
        scores = {
            pol: float(np.mean([r["balanced_accuracy"] for r in rows if r["settings"]["classic"] == pol]))
            for pol in cfg.classic
        }
        plan.classic = max(cfg.classic, key=lambda pol: scores[pol])  # ties: the earlier (simpler) policy
        selection["classic"] = {"scores": scores, "chosen": plan.classic}
        log.info("classic baseline on val: %s -> %s", scores, plan.classic)

    # Confidence filter and soft labels: a classifier trained on the real train split scores every
    # synthetic image once; its probabilities serve both (the filter reads each image's own class).
    thresholds = list(cfg.tune_thresholds) if cfg.tune else [cfg.confidence_threshold]
    softs = list(cfg.tune_soft_labels) if cfg.tune else [cfg.soft_labels]
    if any(t is not None for t in thresholds) or any(softs):
        model, _ = train_classifier(plan, BASELINE, select_seeds[0])
        with torch_threads(plan.threads or 1):
            probs = predict_proba(model, synthetic_images)
        plan.synthetic_probs = probs
        plan.synthetic_confidence = probs.gather(1, synthetic_labels[:, None]).flatten()
        selection["filter"] = {"trained_on": "train", "regime": BASELINE, "seed": select_seeds[0]}
    plan.soft_labels = cfg.soft_labels

    # Tuning: synthetic share, threshold and soft labels on the validation split.
    if cfg.tune:
        regime = next((r for r in GAN_REGIMES if r in cfg.regimes), "real+gan+classic")
        grid = [
            {"synthetic_share": sh, "confidence_threshold": th, "soft_labels": soft}
            for sh in cfg.tune_shares
            for th in thresholds
            for soft in softs
        ]
        specs = [{"stage": "tune", "regime": regime, "seed": s, "settings": g} for g in grid for s in select_seeds]
        rows = _run_selection(plan, specs, map_fn)
        table = {}
        for g in grid:
            vals = [r["balanced_accuracy"] for r in rows if r["settings"] == g]
            score_ = None if any(v is None for v in vals) else float(np.mean(vals))
            key = f"share={g['synthetic_share']},threshold={g['confidence_threshold']}"
            if softs != [False]:  # the key names soft labels only where they are in play
                key += f",soft_labels={g['soft_labels']}"
            table[key] = {**g, "balanced_accuracy": score_}
        valid = [row for row in table.values() if row["balanced_accuracy"] is not None]
        if not valid:
            raise ConfigError("evaluate.tune: no candidate threshold keeps any synthetic image")
        best = max(valid, key=lambda row: row["balanced_accuracy"])  # ties: the earlier candidate
        plan.synthetic_share, plan.confidence_threshold = best["synthetic_share"], best["confidence_threshold"]
        plan.soft_labels = best["soft_labels"]
        selection["tune"] = {
            "regime": regime,
            "candidates": table,
            "chosen": {
                "synthetic_share": plan.synthetic_share,
                "confidence_threshold": plan.confidence_threshold,
                "soft_labels": plan.soft_labels,
            },
        }
        log.info(
            "tuned on val: share=%s threshold=%s soft_labels=%s",
            plan.synthetic_share,
            plan.confidence_threshold,
            plan.soft_labels,
        )
    if plan.synthetic_confidence is not None and plan.confidence_threshold is not None:
        kept = torch.bincount(plan.synthetic_pool()[1], minlength=plan.num_classes).tolist()
        selection["synthetic_kept"] = dict(zip(plan.class_names, kept, strict=True))
    plan.selection = selection
    return plan


# ------------------------------------------------------------------------------------------------
# summarize: intervals, paired deltas, the verdict.


def mean_ci(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean and the t-distribution interval of the mean (None with fewer than 2 values)."""
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"mean": float(arr.mean()) if len(arr) else None, "n": len(arr), "values": arr.tolist()}
    if len(arr) >= 2:
        half = float(stats.t.ppf(0.5 + level / 2, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
        out.update(ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    else:
        out.update(ci_low=None, ci_high=None)
    return out


def _judge(ci: dict[str, Any]) -> str:
    if ci["ci_low"] is None or ci["n"] < MIN_VERDICT_SEEDS:
        return "not enough seeds for an interval"
    if ci["ci_low"] > 0:
        return "helped"
    if ci["ci_high"] < 0:
        return "hurt"
    return "no measurable benefit"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _summary_share_per_class(plan: Plan) -> dict[str, float] | None:
    """:func:`per_class_synthetic_share` where the grid mixes synthetic and real images; None
    without such a regime, or for a plan re-summarising stored cells without its images
    (``benchmarks/evaluate_fashion.py``): the batch composition is unknown there, not zero."""
    if not any(r in plan.regimes for r in GAN_REGIMES):
        return None
    if len(plan.train_labels) == 0 or len(plan.synthetic_pool()[1]) == 0:
        return None
    return per_class_synthetic_share(plan)


def _summary_topup(plan: Plan) -> dict[str, int] | None:
    """Synthetic images per class that the balanced-dataset regime adds (None where not in the grid)."""
    if "balanced-dataset" not in plan.regimes or len(plan.train_labels) == 0:
        return None
    added = plan.synthetic_labels[balanced_topup(plan)].bincount(minlength=plan.num_classes).tolist()
    return dict(zip(plan.class_names, added, strict=True))


def summarize(plan: Plan, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate the grid: per regime mean/CI, paired deltas vs ``real+classic``, the verdict."""
    names = plan.class_names
    by: dict[str, dict[int, dict]] = {}
    for cell in cells:
        by.setdefault(cell["regime"], {})[cell["seed"]] = cell
    regimes: dict[str, Any] = {}
    for regime in [r for r in plan.regimes if r in by]:
        rows = [by[regime][s] for s in sorted(by[regime])]
        recall = np.array([r["per_class_recall"] for r in rows])
        regimes[regime] = {
            "seeds": [r["seed"] for r in rows],
            **{m: mean_ci([r[m] for r in rows]) for m in METRICS},
            "per_class_recall": dict(zip(names, recall.mean(axis=0).tolist(), strict=True)),
            "confusion": np.sum([r["confusion"] for r in rows], axis=0).tolist(),
            "steps": rows[0]["steps"],
            "batch_size": rows[0]["batch_size"],
            # Mean over seeds: the deployed regimes' real/synthetic mix varies with the draws.
            "images_real": round(float(np.mean([r["images_real"] for r in rows]))),
            "images_synthetic": round(float(np.mean([r["images_synthetic"] for r in rows]))),
        }
    baseline = BASELINE if BASELINE in regimes else ("real" if "real" in regimes else None)
    deltas: dict[str, Any] = {}
    if baseline is not None:
        for regime in regimes:
            if regime == baseline:
                continue
            seeds = sorted(set(by[regime]) & set(by[baseline]))  # paired by seed
            d = {m: mean_ci([by[regime][s][m] - by[baseline][s][m] for s in seeds]) for m in METRICS}
            rec = np.array(
                [np.subtract(by[regime][s]["per_class_recall"], by[baseline][s]["per_class_recall"]) for s in seeds]
            )
            d["per_class_recall"] = {n: mean_ci(rec[:, c].tolist()) for c, n in enumerate(names)}
            deltas[regime] = d
    # The GAN regimes against real-only training too: the verdict's guard against a weak baseline.
    deltas_vs_real: dict[str, Any] = {}
    if baseline == BASELINE and "real" in regimes:
        for regime in [r for r in GAN_REGIMES if r in regimes]:
            seeds = sorted(set(by[regime]) & set(by["real"]))
            deltas_vs_real[regime] = {m: mean_ci([by[regime][s][m] - by["real"][s][m] for s in seeds]) for m in METRICS}
    out = {
        "baseline": baseline,
        "classic_policy": plan.classic,
        "classic_backend": plan.classic_backend,
        "synthetic_share": plan.synthetic_share,
        "synthetic_sampling": plan.synthetic_sampling,
        "confidence_threshold": plan.confidence_threshold,
        "soft_labels": plan.soft_labels,
        "synthetic_share_per_class": _summary_share_per_class(plan),
        "skipped_regimes": dict(plan.skipped_regimes),
        "balanced_topup": _summary_topup(plan),
        "classifier": plan.classifier,
        "steps": plan.steps,
        "batch_size": plan.batch_size,
        "seeds": plan.seeds,
        "n_test": len(plan.test_labels),
        "selection": plan.selection,
        "regimes": regimes,
        "deltas": deltas,
        "deltas_vs_real": deltas_vs_real,
    }
    out["verdict"] = verdict(out)
    return out


def _ci_text(d: dict[str, Any]) -> str:
    ci = f"95% CI [{_pts(d['ci_low'])}, {_pts(d['ci_high'])}] pts" if d["ci_low"] is not None else "no interval"
    return f"{_pts(d['mean'])} pts ({ci}, {d['n']} seeds)"


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """The plain answer: did a GAN regime beat the classic baseline, by how much, for which classes.

    "Helped" needs the paired interval against ``real+classic`` above zero *and*, when the grid
    has ``real``, the interval against ``real`` above zero too: a classic baseline that the small
    validation split chose badly must not flatter the GAN (the real-only regime is the check).
    """
    base, m = summary["baseline"], VERDICT_METRIC
    deltas, vs_real = summary["deltas"], summary.get("deltas_vs_real", {})
    candidates = [r for r in GAN_REGIMES if r in deltas]
    if base != BASELINE or not candidates:
        return {"status": "not evaluated", "text": "No verdict: the grid needs real+classic and a real+gan regime."}

    def beats_real(r: str) -> bool:
        return r not in vs_real or _judge(vs_real[r][m]) == "helped"

    winners = [r for r in candidates if _judge(deltas[r][m]) == "helped" and beats_real(r)]
    best = max(winners or candidates, key=lambda r: deltas[r][m]["mean"])
    d = deltas[best][m]
    status = "helped" if winners else _judge(d)
    weak_baseline = not winners and status == "helped"  # beat real+classic, not real-only training
    base_desc = f"the classic baseline ({BASELINE} with {summary['classic_policy']})"
    metric_name = m.replace("_", " ")
    real_note = f" and real-only training by {_ci_text(vs_real[best][m])}" if best in vs_real else ""
    if weak_baseline:
        status = "no measurable benefit"
        real_vs_base = ""
        if "real" in deltas:
            real_vs_base = f" (real-only vs the classic baseline: {_ci_text(deltas['real'][m])})"
        text = (
            f"No measurable benefit: {best} beat {base_desc} by {_ci_text(d)} {metric_name}, but not real-only "
            f"training ({_ci_text(vs_real[best][m])}), so the gain is no evidence for the GAN: the classic "
            f"baseline chosen on the validation split is weak on this data{real_vs_base}."
        )
    elif status == "helped":
        text = f"GAN augmentation helped: {best} beat {base_desc} by {_ci_text(d)} {metric_name}{real_note}."
    elif status == "hurt":
        text = (
            f"GAN augmentation hurt: the best GAN regime, {best}, scored {_ci_text(d)} {metric_name} "
            f"against {base_desc}."
        )
    elif status == "no measurable benefit":
        text = (
            f"No measurable benefit: the best GAN regime, {best}, differs from {base_desc} by {_ci_text(d)} "
            f"{metric_name}; the interval includes 0."
        )
    else:
        text = (
            f"Not enough seeds for a verdict (needs {MIN_VERDICT_SEEDS}, evaluate.seeds): {best} vs {base_desc}: "
            f"{_ci_text(d)} {metric_name}."
        )
    per_class = deltas[best]["per_class_recall"]
    helped = [c for c, v in per_class.items() if _judge(v) == "helped"]
    hurt = [c for c, v in per_class.items() if _judge(v) == "hurt"]
    if helped:
        text += (
            f" Classes whose recall rose against {BASELINE} (interval above 0): "
            + ", ".join(f"{c} {_pts(per_class[c]['mean'])}" for c in helped)
            + "."
        )
    if hurt:
        text += (
            f" Classes whose recall fell against {BASELINE} (interval below 0): "
            + ", ".join(f"{c} {_pts(per_class[c]['mean'])}" for c in hurt)
            + "."
        )
    if not helped and not hurt and status != "not enough seeds for an interval":
        text += " No class's recall changed measurably."
    return {
        "status": status,
        "metric": m,
        "regime": best,
        "baseline": BASELINE,
        "classic_policy": summary["classic_policy"],
        "delta": d,
        "delta_vs_real": vs_real.get(best, {}).get(m),
        "classes_helped": helped,
        "classes_hurt": hurt,
        "text": text,
    }


# ------------------------------------------------------------------------------------------------
# deployment: the verdict as a line of code the user can copy.

DEPLOY_IMPORT = "from augment import AugmentedDataset, BalancedDataset, GanAugmenter"


def deploy_code(regime: str, run_dir: str, p: float) -> str:
    """The line that gives a user's ``train_set`` what the deployed ``regime`` trained on."""
    if regime == "gan-augmenter":
        return f'train_set = AugmentedDataset(train_set, GanAugmenter.from_checkpoint("{run_dir}", p={p:g}))'
    if regime == "balanced-dataset":
        return f'train_set = BalancedDataset(train_set, GanAugmenter.from_checkpoint("{run_dir}"))'
    raise ValueError(f"{regime!r} is not a deployed regime ({DEPLOYED_REGIMES})")


def deployment(summary: dict[str, Any], run_dir: str) -> dict[str, Any] | None:
    """What to put in training code, from the deployed regimes' test results (None: none in the grid).

    A deployed regime is recommended only by the verdict's rule: its paired interval against the
    classic baseline above 0 and, where the grid has ``real``, against real-only training too.
    Otherwise the text says not to deploy, and every measured line is still given with its delta.
    """
    m, deltas, vs_real = VERDICT_METRIC, summary.get("deltas", {}), summary.get("deltas_vs_real", {})
    rows: dict[str, Any] = {}
    for r in DEPLOYED_REGIMES:
        if r not in deltas:
            continue
        d, vr = deltas[r][m], vs_real.get(r, {}).get(m)
        helped = _judge(d) == "helped" and (vr is None or _judge(vr) == "helped")
        code = deploy_code(r, run_dir, summary["synthetic_share"])
        rows[r] = {"code": code, "delta": d, "delta_vs_real": vr, "helped": helped}
    if not rows:
        return None
    winners = [r for r in rows if rows[r]["helped"]]
    best = max(winners, key=lambda r: rows[r]["delta"]["mean"]) if winners else None
    base = f"{BASELINE} with {summary.get('classic_policy')}"

    def measured(r: str) -> str:
        real = f", vs real-only {_ci_text(rows[r]['delta_vs_real'])}" if rows[r]["delta_vs_real"] else ""
        return f"{r} {_ci_text(rows[r]['delta'])} vs {base}{real}"

    if best is not None:
        text = f"Deploy it as measured ({measured(best)}): `{rows[best]['code']}`."
    else:
        text = (
            "Do not deploy it on this evidence: no way users deploy the generator measurably beat "
            f"{base} and real-only training ({'; '.join(measured(r) for r in rows)}). "
            "Keep training without it; the lines measured are below."
        )
    return {"recommended": best, "import": DEPLOY_IMPORT, "regimes": rows, "text": text}
