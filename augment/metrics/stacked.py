"""The downstream grid trained as stacked networks: many cells' classifiers as one.

A cell trains one small CNN under one regime and seed (:mod:`augment.metrics.classifier_training`). The
cells of a grid share the architecture, the steps, the batch size and the learning rate, so they
can train side by side as one network, as ``torch.func.vmap`` would batch them: every convolution
is grouped (``groups`` = cells, cell g's filters see only cell g's input channels), BatchNorm's
channels are the cells' channels side by side (per-channel statistics are per-cell statistics),
and the heads are one batched matmul. Cell g's batch rides in input channels ``g*C:(g+1)*C``.

Each cell keeps what makes it that cell:

* its initial weights: the lone cell's ``init_classifier(plan, seed)``, copied in;
* its batches: its own generator draws its real and synthetic indices and classic parameters in
  the lone cell's order (``classifier_training._Batches.draw``), so its images are the lone cell's bit for
  bit; the pixels of all cells are then gathered from one shared copy in one indexing op and each
  classic policy is applied to all the cells that use it at once (tensor ops, no per-image loop);
* its optimizer step: AdamW is elementwise, and the summed loss gives each cell's parameters the
  gradient of its own loss only, so one step over the stacked parameters is every cell's own step.

The math is the lone cell's; a grouped convolution adds its products in another order, so a
stacked cell's logits match the lone cell's to ~1e-6 after one step and drift by float rounding
over training (tests/metrics/test_metrics_stacked.py). The numbers depend only on the config and
seed: the same grid stacks the same way every time. Used by default (``map_fn=None`` in
``downstream.prepare`` / ``run_grid``); a ``map_fn`` (Dask, Prefect tasks) runs lone cells instead.

Example:
    >>> cells = fit_score_many([(plan, "real", 0, "test"), (plan, "real+gan", 0, "test")])  # doctest: +SKIP
    >>> [c["balanced_accuracy"] for c in cells]  # doctest: +SKIP
    [0.81, 0.83]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from augment.devices import keep_freed_memory
from augment.metrics import downstream
from augment.metrics.classic import apply_classic
from augment.metrics.classifier_training import (
    WEIGHT_DECAY,
    _as_float,
    _Batches,
    cell_counters,
    classifier_autocast,
    init_classifier,
    lr_scale,
    nhwc,
    torch_threads,
)
from augment.metrics.downstream import Plan
from augment.metrics.regimes import GAN_REGIMES
from augment.models.classifier import SmallCNN

#: A cell to train and score: (plan, regime, seed, split), split "val" (selection) or "test" (the grid).
Job = tuple[Plan, str, int, str]

#: Images per forward pass when a stack predicts a split (each carries every cell's activations).
PREDICT_CHUNK = 256


class StackedSmallCNN(nn.Module):
    """``len(nets)`` :class:`SmallCNN` of one architecture as one network (grouped convolutions).

    ``forward`` takes ``(B, G*C, H, W)`` (cell g's images in channels ``g*C:(g+1)*C``) and returns
    logits ``(G, B, K)``. :meth:`unstack` gives the cells back as lone ``SmallCNN``.
    """

    def __init__(self, nets: Sequence[SmallCNN]) -> None:
        super().__init__()
        if not nets or not all(isinstance(n, SmallCNN) for n in nets):
            raise TypeError("StackedSmallCNN stacks SmallCNN networks (one or more)")
        ref = nets[0]
        shape = [tuple(p.shape) for p in ref.parameters()]
        if any([tuple(p.shape) for p in n.parameters()] != shape or len(n.body) != len(ref.body) for n in nets):
            raise ValueError("StackedSmallCNN: the networks differ in architecture")
        g = self.cells = len(nets)
        self.num_features, self.num_classes = ref.num_features, ref.num_classes
        self.channels, self.image_size = ref.channels, ref.image_size
        layers: list[nn.Module] = []
        for i, mod in enumerate(ref.body):
            if isinstance(mod, nn.MaxPool2d):
                layers.append(nn.MaxPool2d(mod.kernel_size, mod.stride))
                continue
            conv, bn = mod[0], mod[1]
            gconv = nn.Conv2d(
                g * conv.in_channels,
                g * conv.out_channels,
                conv.kernel_size,
                padding=conv.padding,
                bias=False,
                groups=g,
            )
            gbn = nn.BatchNorm2d(g * bn.num_features, eps=bn.eps, momentum=bn.momentum)
            with torch.no_grad():
                gconv.weight.copy_(torch.cat([n.body[i][0].weight for n in nets]))
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(gbn, name).copy_(torch.cat([getattr(n.body[i][1], name) for n in nets]))
                gbn.num_batches_tracked.copy_(bn.num_batches_tracked)
            layers.append(nn.Sequential(gconv, gbn, nn.ReLU(inplace=True)))
        self.body = nn.Sequential(*layers)
        self.head_weight = nn.Parameter(torch.stack([n.head.weight.detach() for n in nets]).clone())  # (G, K, F)
        self.head_bias = nn.Parameter(torch.stack([n.head.bias.detach() for n in nets]).clone())  # (G, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x).mean(dim=(2, 3))  # (B, G*F)
        f = f.view(len(f), self.cells, self.num_features).transpose(0, 1)  # (G, B, F)
        return torch.baddbmm(self.head_bias[:, None, :], f, self.head_weight.transpose(1, 2))

    def unstack(self) -> list[SmallCNN]:
        """The cells as lone ``SmallCNN`` (CPU, eval mode) with the stack's current weights."""
        out = []
        for g in range(self.cells):
            net = SmallCNN(self.num_classes, self.channels, self.image_size)
            with torch.no_grad():
                for i, mod in enumerate(self.body):
                    if isinstance(mod, nn.MaxPool2d):
                        continue
                    conv, bn = net.body[i][0], net.body[i][1]
                    conv.weight.copy_(mod[0].weight.view(self.cells, *conv.weight.shape)[g])
                    for name in ("weight", "bias", "running_mean", "running_var"):
                        getattr(bn, name).copy_(getattr(mod[1], name).view(self.cells, -1)[g])
                    bn.num_batches_tracked.copy_(mod[1].num_batches_tracked)
                net.head.weight.copy_(self.head_weight[g])
                net.head.bias.copy_(self.head_bias[g])
            out.append(net.eval())
        return out


class StackedBatches:
    """Every cell's minibatch of one step as one input ``(B, G*C, H, W)`` and G target tensors.

    The pixels come from one float copy of each distinct image set the cells draw from (the train
    split and the synthetic pool are shared by the cells of one plan and its selection variants).
    """

    def __init__(self, jobs: Sequence[Job], device: torch.device) -> None:
        self.device = device
        sources: dict[int, int] = {}  # id(uint8 tensor) -> its first row in self.pixels
        parts: list[torch.Tensor] = []

        def offset(images: torch.Tensor) -> int:
            if id(images) not in sources:
                sources[id(images)] = sum(len(p) for p in parts)
                parts.append(images)
            return sources[id(images)]

        self.cells: list[tuple[_Batches, int, int]] = []  # (draws, real offset, synthetic offset)
        for plan, regime, seed, _split in jobs:
            draws = _Batches(plan, regime, torch.Generator().manual_seed(seed), device, images=False)
            self.cells.append((draws, offset(plan.train_images), offset(draws.syn_source)))
        self.pixels = _as_float(torch.cat(parts)).to(device)
        # Cells with one classic policy (torch backend) are augmented together.
        self.groups: dict[tuple[str, ...], list[int]] = {}
        for g, (draws, _, _) in enumerate(self.cells):
            if draws.ops and draws.backend == "torch":
                self.groups.setdefault(draws.ops, []).append(g)

    def __call__(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        rows, targets, params = [], [], []
        for draws, real_off, syn_off in self.cells:
            idx, pick, p = draws.draw()
            rows += [idx + real_off, draws.syn_rows[pick] + syn_off]
            targets.append(draws.targets(idx, pick))
            params.append(p)
        g = len(self.cells)
        x = self.pixels[torch.cat(rows).to(self.device)]
        x = x.view(g, -1, *x.shape[1:])  # (G, B, C, H, W)
        for ops, members in self.groups.items():
            sel = torch.tensor(members, device=self.device)
            batch = {k: torch.cat([params[m][k] for m in members]) for k in params[members[0]]}
            masks = [self.cells[m][0].classic_mask() for m in members]
            apply = None  # cells that leave their synthetic rows alone mask them; the others take every row
            if any(mask is not None for mask in masks):
                every = torch.ones(x.shape[1], dtype=torch.bool)
                apply = torch.cat([every if mask is None else mask for mask in masks])
            flat = x[sel].reshape(-1, *x.shape[2:])
            x[sel] = apply_classic(flat, ops, batch, apply).view(len(members), *x.shape[1:])
        for m, (draws, _, _) in enumerate(self.cells):  # the torchvision backend: per cell, its own draws
            if draws.ops and draws.backend != "torch":
                x[m] = draws.classic_torchvision(x[m])
        b, c, h, w = x.shape[1:]
        x = nhwc(x.transpose(0, 1).reshape(b, g * c, h, w))  # NHWC strides even for one cell of one channel
        return x, targets


def _stack_key(job: Job) -> tuple[Any, ...] | None:
    """Jobs with equal keys can share a stack; None: the job trains alone (not a SmallCNN, or a cell
    whose BatchNorm splits real and synthetic rows)."""
    plan, regime, _seed, split = job
    if plan.classifier != "smallcnn" or (plan.synthetic_bn != "joint" and regime in GAN_REGIMES):
        return None  # split BatchNorm statistics: a lone cell
    images = downstream.split_of(plan, split)[0]
    return (
        plan.steps,
        plan.batch_size,
        plan.lr,
        plan.device,
        plan.num_classes,
        tuple(plan.train_images.shape[1:]),
        id(images),
        plan.threads,
        plan.precision,
    )


def fit_score_many(
    jobs: Sequence[Job], *, max_cells: int | None = None, progress: bool = False, desc: str = "downstream"
) -> list[dict[str, Any]]:
    """Train and score every job, stacking those that can share a network; rows in job order.

    Each row is what ``downstream._fit_score`` returns for the job (``seconds`` is the job's share of
    its stack's wall time). Jobs whose classifier is not the small CNN train alone.

    Args:
        jobs: ``(plan, regime, seed, split)`` tuples.
        max_cells: most cells per stack (memory grows with it); None = each plan's ``stack_cells``.
        progress: a bar over the optimizer steps of all stacks, with an ETA.
        desc: the bar's label.
    """
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    stacks: dict[Any, list[int]] = {}
    for i, job in enumerate(jobs):
        key = _stack_key(job)
        if key is None:
            out[i] = downstream._fit_score(*job)
        else:
            stacks.setdefault(key, []).append(i)
    chunks = []
    for members in stacks.values():
        size = max_cells or jobs[members[0]][0].stack_cells
        chunks += [members[j : j + size] for j in range(0, len(members), size)]
    total = sum(jobs[c[0]][0].steps for c in chunks)
    with tqdm(total=total, desc=desc, unit="step", disable=not progress or not chunks, dynamic_ncols=True) as bar:
        for chunk in chunks:
            rows = train_stack([jobs[i] for i in chunk], bar=bar)
            for i, row in zip(chunk, rows, strict=True):
                out[i] = row
    return [row for row in out if row is not None]


def train_stack(jobs: Sequence[Job], bar: tqdm | None = None) -> list[dict[str, Any]]:
    """Train the jobs (one stack key) as one :class:`StackedSmallCNN`; score each on its split."""
    start = time.time()
    plan = jobs[0][0]
    keep_freed_memory()  # as a lone cell does: workers' malloc settings (see train_classifier)
    with torch_threads(plan.threads):
        model, draws = _train(jobs, torch.device(plan.device), bar)
        preds = predict(model, downstream.split_of(plan, jobs[0][3])[0])
    end = time.time()
    seconds = (end - start) / len(jobs)
    return [
        downstream.cell_result(p, regime, seed, split, cell_counters(p, d), preds[g], seconds, (start, end))
        for g, ((p, regime, seed, split), d) in enumerate(zip(jobs, draws, strict=True))
    ]


def _train(jobs: Sequence[Job], device: torch.device, bar: tqdm | None) -> tuple[StackedSmallCNN, list[_Batches]]:
    plan = jobs[0][0]
    nets = [init_classifier(p, seed) for p, _regime, seed, _split in jobs]
    model = StackedSmallCNN(nets).to(device).to(memory_format=torch.channels_last)
    batches = StackedBatches(jobs, device)
    autocast = classifier_autocast(plan, device)
    opt = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=WEIGHT_DECAY)
    model.train()
    for step in range(plan.steps):
        for group in opt.param_groups:
            group["lr"] = plan.lr * lr_scale(step, plan.steps)
        x, targets = batches()
        with autocast:
            logits = model(x).float()  # (G, B, K)
        # Each cell's own mean cross-entropy (class indices or soft-label rows); their sum gives
        # every cell's parameters the gradient of its own loss.
        loss = sum(F.cross_entropy(logits[g], y) for g, y in enumerate(targets))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
    model.eval()
    return model, [draws for draws, _, _ in batches.cells]


@torch.no_grad()
def predict(model: StackedSmallCNN, images: torch.Tensor, chunk: int = PREDICT_CHUNK) -> torch.Tensor:
    """Every cell's predicted class for uint8 ``images``: ``(G, N)`` int64 on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    preds = []
    for i in range(0, len(images), chunk):
        x = _as_float(images[i : i + chunk].to(device)).repeat(1, model.cells, 1, 1)
        preds.append(model(x.contiguous(memory_format=torch.channels_last)).argmax(dim=2).cpu())
    return torch.cat(preds, dim=1) if preds else torch.empty(model.cells, 0, dtype=torch.int64)
