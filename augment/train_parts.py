"""The training loop's parts: the networks, what a training state holds, ticks and the best snapshot.

They keep :func:`augment.train.training_loop` a page that reads top to bottom; each owns one piece of
state the loop would otherwise carry in local variables.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from augment import checkpoint, rundir
from augment.data import PreparedData
from augment.diffaug import AdaptiveAugment
from augment.losses import GanLoss
from augment.models import ConditionalGenerator, ProjectionDiscriminator
from augment.models.generator import normalised_weights, with_spectral_norm
from augment.train_options import NetworkOptions, PerformanceOptions

log = logging.getLogger(__name__)

MetricFn = Callable[[torch.nn.Module], dict[str, float]]


#: Batches (of the training batch size) and the latent seed of G_ema's standing statistics.
STANDING_BATCHES, STANDING_SEED = 16, 0


@dataclass
class StepModules:
    """The modules the two players' steps call (wrapped for DDP and/or compiled, or the eager ones)."""

    G: torch.nn.Module
    D: torch.nn.Module
    #: The G step needs gradients through D, not of D's weights: it runs D frozen and unwrapped
    #: (no DDP all-reduce for gradients nobody uses), as StyleGAN2-ADA's phases do.
    D_frozen: torch.nn.Module
    D_r1: torch.nn.Module | None = None  #: eager D for the R1 pass when the adversarial passes are compiled
    compiled: bool = False


@dataclass
class Networks:
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    g_kwargs: dict[str, Any]
    d_kwargs: dict[str, Any]
    #: G trains under spectral normalisation; G_ema is a plain generator averaging its normalised weights.
    g_spectral_norm: bool = False

    def __post_init__(self) -> None:
        # The EMA update's operands, listed once by name: load_state_dict copies into these same tensors.
        # Under spectral normalisation G stores W (``fc.parametrizations.weight.original``) where
        # G_ema has ``fc.weight``: those are averaged from W / sigma, computed at each update.
        g_params, g_bufs = dict(self.G.named_parameters()), dict(self.G.named_buffers())
        self._ema_params, self._g_params, self._ema_sn, self._sn_names = [], [], [], []
        for name, p in self.G_ema.named_parameters():
            if name in g_params:
                self._ema_params.append(p)
                self._g_params.append(g_params[name])
            else:
                self._ema_sn.append(p)
                self._sn_names.append(name)
        ema_bufs = list(self.G_ema.named_buffers())  # BatchNorm statistics (G's power-iteration vectors stay out)
        self._ema_bufs, self._g_bufs = [b for _, b in ema_bufs], [g_bufs[name] for name, _ in ema_bufs]

    @classmethod
    def build(
        cls,
        opts: NetworkOptions,
        data: PreparedData,
        device: torch.device,
        state: dict[str, Any] | None,
        channels_last: bool,
        aux_classifier: bool = False,
        contrast_dim: int = 0,
        recon: bool = False,
        uncond_low: bool = False,
    ) -> Networks:
        size, channels = data.train.images.shape[-1], data.train.images.shape[1]
        shared = dict(num_classes=data.num_classes, image_size=size, channels=channels, max_mult=opts.max_mult)
        g_kwargs = dict(shared, z_dim=opts.z_dim, width=opts.g_channels, residual=opts.g_arch == "resnet")
        d_kwargs = dict(shared, width=opts.d_channels, spectral=opts.d_spectral_norm)
        if aux_classifier:  # D's class head (LossOptions.aux_class_weight); only then in the checkpoint's kwargs
            d_kwargs["aux_classifier"] = True
        if contrast_dim:  # D's instance head (LossOptions.fake_contrast); likewise
            d_kwargs["contrast_dim"] = contrast_dim
        if recon:  # D's decoder (LossOptions.d_recon); likewise
            d_kwargs["recon"] = True
        if uncond_low:  # UTLO's layers in G and D (LossOptions.uncond_low); likewise
            g_kwargs["uncond_low"] = d_kwargs["uncond_low"] = True
        g_sn = opts.g_spectral_norm
        if state is not None:  # on resume the architecture comes from the checkpoint
            g_kwargs, d_kwargs = dict(state["generator_kwargs"]), dict(state["discriminator_kwargs"])
            g_sn = any(".parametrizations." in k for k in state["G"])  # G's stored W, not its W / sigma
        G = ConditionalGenerator(**g_kwargs).to(device).train()
        D = ProjectionDiscriminator(**d_kwargs).to(device).train()
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)  # the same initial weights either way
        if g_sn:
            G = with_spectral_norm(G)
        if channels_last:
            G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
            G_ema = G_ema.to(memory_format=torch.channels_last)
        nets = cls(G, D, G_ema, g_kwargs, d_kwargs, g_sn)
        if g_sn:
            nets.update_ema(0.0)  # G_ema starts at G's normalised weights
        return nets

    def step_modules(
        self, wrap: Callable[[torch.nn.Module], torch.nn.Module] | None, perf: PerformanceOptions
    ) -> StepModules:
        G_step, D_step = (wrap(self.G), wrap(self.D)) if wrap is not None else (self.G, self.D)
        if not perf.compile:
            return StepModules(G_step, D_step, self.D)
        mode = perf.compile_mode
        D_frozen = torch.compile(D_step if wrap is None else self.D, mode=mode)
        return StepModules(torch.compile(G_step, mode=mode), torch.compile(D_step, mode=mode), D_frozen, D_step, True)

    def set_cond_strength(self, strength: float) -> None:
        """The class conditioning's scale of G, its EMA copy and D (transitional training)."""
        if strength != self.G.cond_strength:
            for G in (self.G, self.G_ema):
                G.set_cond_strength(strength)
            self.D.cond_strength = strength

    @torch.no_grad()
    def standing_stats(self, labels: torch.Tensor, batch_size: int, batches: int = STANDING_BATCHES) -> None:
        """BigGAN's standing statistics: G_ema's BatchNorm running statistics recomputed for its own
        (averaged) weights, as the cumulative mean over ``batches`` batches of G_ema in training mode,
        with latents and classes (drawn from ``labels``, the train split's) of a fixed seed. Touches
        no training random stream, so the training runs as it would without it."""
        norms = [m for m in self.G_ema.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        device = labels.device
        gen = torch.Generator(device).manual_seed(STANDING_SEED)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts the same
            m.train()
        try:
            for _ in range(batches):
                y = labels[torch.randint(len(labels), (batch_size,), generator=gen, device=device)]
                z = torch.randn(batch_size, self.G_ema.z_dim, generator=gen, device=device)
                self.G_ema(z, y)
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
                m.eval()

    @torch.no_grad()
    def update_ema(self, beta: float) -> None:
        """Parameters averaged, BatchNorm statistics copied (``train.ema_bn: standing`` recomputes
        them with :meth:`standing_stats` before each check and snapshot)."""
        torch._foreach_lerp_(self._ema_params, self._g_params, 1.0 - beta)
        if self._ema_sn:
            torch._foreach_lerp_(self._ema_sn, normalised_weights(self.G, self._sn_names), 1.0 - beta)
        for b_ema, b in zip(self._ema_bufs, self._g_bufs, strict=True):
            b_ema.copy_(b)


@dataclass
class TrainingState:
    """Everything a resume needs, and the inference snapshot made from it."""

    nets: Networks
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    gen: torch.Generator
    loss_fn: GanLoss
    data: PreparedData
    config: dict[str, Any]
    cur_nimg: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"value": float("inf"), "kimg": None})
    #: The snapshot ensemble's candidates: the best checks, ``{"kimg", "value", "generator"}``, best first.
    pool: list[dict[str, Any]] = field(default_factory=list)

    def restore(self, state: dict[str, Any], rank: int) -> None:
        self.nets.G.load_state_dict(state["G"])
        self.nets.D.load_state_dict(state["D"])
        self.nets.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.gen.set_state(state["rng"])
        if rank > 0:  # only rank 0's stream is saved; the others continue from a fresh, distinct one
            self.gen.manual_seed(int(torch.randint(1 << 62, (1,), generator=self.gen)) + rank)
        self.cur_nimg = int(state["cur_nimg"])
        self.best = dict(state.get("best", self.best))
        self.pool = [dict(entry) for entry in state.get("ensemble_pool", [])]
        for name, controller in self.loss_fn.controllers.items():
            if state.get(name) is not None:
                controller.load_state_dict(state[name])
        if self.loss_fn.lecam is not None and state.get("lecam_ema") is not None:
            self.loss_fn.lecam.ema.copy_(state["lecam_ema"].to(self.loss_fn.lecam.ema.device))

    def ema_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the EMA generator's weights."""
        return {k: v.detach().cpu().clone() for k, v in self.nets.G_ema.state_dict().items()}

    def snapshot(self, nimg: int, metrics: dict[str, float] | None = None) -> checkpoint.Snapshot:
        return checkpoint.Snapshot(
            generator_state=self.ema_state(),
            generator_kwargs=self._snapshot_kwargs(),
            class_names=list(self.data.class_names),
            class_counts=self.data.train.counts(self.data.num_classes),
            config=self.config,
            kimg=nimg / 1000,
            data_fingerprint=self.data.fingerprint,
            metrics=metrics or {},
        )

    def _snapshot_kwargs(self) -> dict[str, Any]:
        """G's kwargs, with the class conditioning's scale where a transitional training's ramp is
        not over (so a snapshot samples what was trained, not a fully conditional generator)."""
        strength = self.nets.G_ema.cond_strength
        return self.nets.g_kwargs if strength == 1.0 else {**self.nets.g_kwargs, "cond_strength": strength}

    def save(self, path: Path, nimg: int) -> None:
        lecam = self.loss_fn.lecam
        checkpoint.save(
            {
                "format": checkpoint.STATE_FORMAT,
                "G": self.nets.G.state_dict(),
                "D": self.nets.D.state_dict(),
                "G_ema": self.nets.G_ema.state_dict(),
                "opt_G": self.opt_G.state_dict(),
                "opt_D": self.opt_D.state_dict(),
                "rng": self.gen.get_state(),
                "cur_nimg": nimg,
                "best": self.best,
                "ensemble_pool": self.pool,
                **{name: None for name in ("ada", "apa")},
                **{name: c.state_dict() for name, c in self.loss_fn.controllers.items()},
                "lecam_ema": lecam.ema.detach().cpu() if lecam is not None else None,
                "generator_kwargs": self.nets.g_kwargs,
                "discriminator_kwargs": self.nets.d_kwargs,
                "class_names": list(self.data.class_names),
                "data_fingerprint": self.data.fingerprint,
                "config": self.config,
            },
            path,
        )


class Ticker:
    """Losses averaged over a tick, speed, ``stats.jsonl`` and the progress bar.

    A tick reads the losses back (a host sync): every kimg on the CPU, every 64 steps on a GPU.
    """

    def __init__(
        self,
        run_dir: Path,
        total_kimg: float,
        cur_nimg: int,
        step_nimg: int,
        snap_nimg: int,
        device: torch.device,
        progress: bool,
        start_time: float,
    ) -> None:
        self.stats_path = run_dir / rundir.STATS
        self.total_nimg = int(total_kimg * 1000)
        self.tick_nimg = min(max(1000, 64 * step_nimg if device.type == "cuda" else 0), snap_nimg)
        self.loss_sum = torch.zeros(2, device=device)
        self.loss_steps = self.g_steps = 0
        self.start_nimg, self.start_time, self.run_start = cur_nimg, time.time(), start_time
        self.on_tick: Callable[[dict[str, float]], None] | None = None
        self.bar = tqdm(
            total=total_kimg,
            initial=cur_nimg / 1000,
            unit="kimg",
            disable=not progress,
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} kimg [{elapsed}<{remaining}{postfix}]",
        )

    def add(self, loss_D: torch.Tensor, loss_G: torch.Tensor | None) -> None:
        """One step's losses (``loss_G`` None: a D-only step of ``train.d_steps`` > 1)."""
        with torch.no_grad():  # no host sync per step
            if loss_G is None:
                self.loss_sum[0] += loss_D.detach()
            else:
                self.loss_sum += torch.stack([loss_D.detach(), loss_G.detach()])
                self.g_steps += 1
        self.loss_steps += 1

    def maybe_tick(
        self,
        prev_nimg: int,
        cur_nimg: int,
        done: bool,
        controllers: dict[str, AdaptiveAugment],
        write: bool,
        cond: float | None = None,
        lr_scale: float | None = None,
    ) -> None:
        if not (done or cur_nimg // self.tick_nimg > prev_nimg // self.tick_nimg):
            return
        now = time.time()
        ld, lg = (self.loss_sum / self.loss_sum.new_tensor([max(self.loss_steps, 1), max(self.g_steps, 1)])).tolist()
        tick = {
            "kimg": cur_nimg / 1000,
            "loss_D": ld,
            "loss_G": lg,
            "images_per_s": (cur_nimg - self.start_nimg) / max(now - self.start_time, 1e-9),
            "elapsed_s": now - self.run_start,
        }
        for name, c in controllers.items():
            tick[f"{name}_p"], tick[f"{name}_rt"] = float(c.p), float(c.rt)
        if cond is not None:
            tick["cond_strength"] = float(cond)
        if lr_scale is not None:
            tick["lr_scale"] = float(lr_scale)
        self.loss_sum.zero_()
        self.loss_steps = self.g_steps = 0
        self.start_nimg, self.start_time = cur_nimg, now
        extra = "".join(f" {name}={tick[f'{name}_p']:.2f}" for name in controllers)
        extra += f" cond={cond:.2f}" if cond is not None else ""
        extra += f" lr={lr_scale:.2f}x" if lr_scale is not None else ""
        self.bar.set_postfix_str(f"img/s={tick['images_per_s']:.0f} D={ld:.3f} G={lg:.3f}{extra}", refresh=False)
        self.bar.update(min(cur_nimg, self.total_nimg) / 1000 - self.bar.n)
        if write:
            with open(self.stats_path, "a") as fh:
                fh.write(json.dumps(tick) + "\n")
        if self.on_tick is not None:
            self.on_tick(tick)

    def close(self) -> None:
        self.bar.close()


class BestSnapshot:
    """Every ``eval_nimg``: the metric of the EMA generator, ``metrics-train.jsonl``, and the best snapshot.

    With ``ensemble`` > 1 it also keeps the ``3 * ensemble`` best checked generators and, once
    training is done, makes the best snapshot their mixture (:func:`select_ensemble`).
    """

    def __init__(
        self,
        run_dir: Path,
        metric_fn: MetricFn | None,
        best_metric: str,
        eval_nimg: int,
        trained: TrainingState,
        start_time: float,
        ensemble: int = 1,
        first_nimg: int = 0,
    ) -> None:
        self.run_dir, self.metric_fn, self.best_metric, self.eval_nimg = run_dir, metric_fn, best_metric, eval_nimg
        self.trained, self.start_time, self.eval_seconds = trained, start_time, 0.0
        self.ensemble = ensemble
        #: No check before this many images (a transitional training's generator is not yet conditional).
        self.first_nimg = first_nimg

    def due(self, prev_nimg: int, cur_nimg: int, done: bool) -> bool:
        """Whether the step from ``prev_nimg`` to ``cur_nimg`` ends with a check."""
        if self.metric_fn is None or self.eval_nimg <= 0 or cur_nimg < self.first_nimg:
            return False
        return done or cur_nimg // self.eval_nimg > prev_nimg // self.eval_nimg

    def maybe_evaluate(
        self, prev_nimg: int, cur_nimg: int, done: bool, on_tick: Callable[[dict[str, float]], None] | None
    ) -> None:
        if not self.due(prev_nimg, cur_nimg, done):
            return
        eval_start = time.time()
        metrics = self.metric_fn(self.trained.nets.G_ema)
        self.eval_seconds += time.time() - eval_start
        value = metrics[self.best_metric]
        log.info("kimg %.1f: %s", cur_nimg / 1000, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        # Wall time with and without the evaluations themselves (for time-to-quality curves).
        elapsed = time.time() - self.start_time
        timing = {"elapsed_s": elapsed, "train_s": elapsed - self.eval_seconds}
        with open(self.run_dir / rundir.TRAIN_METRICS, "a") as fh:
            fh.write(json.dumps({"kimg": cur_nimg / 1000, **metrics, **timing}) + "\n")
        if on_tick is not None:
            on_tick({"kimg": cur_nimg / 1000, **metrics})
        if value < self.trained.best["value"]:
            self.trained.best = {"value": value, "kimg": cur_nimg / 1000}
            checkpoint.save_snapshot(self.trained.snapshot(cur_nimg, metrics), self.run_dir / rundir.BEST_SNAPSHOT)
        if self.ensemble > 1:
            self._add_to_pool(cur_nimg / 1000, value)
            if done:
                self._save_ensemble()

    def _add_to_pool(self, kimg: float, value: float) -> None:
        pool = self.trained.pool
        if len(pool) >= 3 * self.ensemble and value >= pool[-1]["value"]:
            return
        pool.append({"kimg": kimg, "value": value, "generator": self.trained.ema_state()})
        pool.sort(key=lambda e: (e["value"], e["kimg"]))
        del pool[3 * self.ensemble :]

    def _save_ensemble(self) -> None:
        """Replace the best snapshot by the mixture :func:`ensemble_snapshot` picks from the pool."""
        assert self.metric_fn is not None
        path = self.run_dir / rundir.BEST_SNAPSHOT
        best = checkpoint.load_snapshot(path)
        device = next(self.trained.nets.G_ema.parameters()).device
        snap = ensemble_snapshot(best, self.trained.pool, self.ensemble, self.metric_fn, self.best_metric, device)
        if snap.members or best.members:  # a single best replaces a mixture an earlier stop of this run chose
            checkpoint.save_snapshot(snap, path)


def ensemble_snapshot(
    best: checkpoint.Snapshot,
    pool: list[dict[str, Any]],
    k: int,
    metric_fn: MetricFn,
    best_metric: str,
    device: torch.device | str = "cpu",
) -> checkpoint.Snapshot:
    """The best snapshot as the mixture of up to ``k`` of the ``pool``'s checks (``{"kimg", "value",
    "generator"}``, best first) that :func:`select_ensemble` builds by ``metric_fn``; ``best`` alone
    (its head the pool's best, no members) when no mixture scores lower."""
    head = dataclasses.replace(best, generator_state=pool[0]["generator"], kimg=pool[0]["kimg"])

    def score(others: list[int]) -> float:
        trial = dataclasses.replace(head, members=[pool[i]["generator"] for i in others])
        return metric_fn(trial.generator(device))[best_metric]

    chosen, value = select_ensemble(len(pool), k, pool[0]["value"], score)
    if len(chosen) == 1:
        log.info("Snapshot ensemble: no check lowered %s below the best snapshot's", best_metric)
        single = {**best.metrics, best_metric: pool[0]["value"]}
        single.pop(f"{best_metric}_single", None)
        return dataclasses.replace(head, members=[], member_kimg=[], metrics=single)
    members = [pool[i] for i in chosen[1:]]
    log.info(
        "Snapshot ensemble of %d checks (kimg %s): %s %.4g against %.4g for the best alone",
        len(chosen),
        ", ".join(f"{pool[i]['kimg']:g}" for i in chosen),
        best_metric,
        value,
        pool[0]["value"],
    )
    return dataclasses.replace(
        head,
        members=[m["generator"] for m in members],
        member_kimg=[m["kimg"] for m in members],
        metrics={**best.metrics, best_metric: value, f"{best_metric}_single": pool[0]["value"]},
    )


def select_ensemble(n: int, k: int, first_value: float, score: Callable[[list[int]], float]) -> tuple[list[int], float]:
    """Greedy forward selection (Caruana et al. 2004, without replacement) of up to ``k`` of ``n``
    candidates: start from candidate 0 (score ``first_value``) and add, one at a time, the candidate
    whose mixture scores lowest, while that lowers the score. ``score(others)`` is the score of the
    mixture of candidate 0 and the candidates ``others``. Returns ``(chosen, their score)``.

    Example:
        >>> values = {(0,): 1.0, (0, 1): 0.9, (0, 2): 0.7, (0, 2, 1): 0.8}
        >>> select_ensemble(3, 3, 1.0, lambda idx: values[(0, *idx)])
        ([0, 2], 0.7)
    """
    chosen, best = [0], first_value
    while len(chosen) < k:
        trials = [(score([*chosen[1:], i]), i) for i in range(n) if i not in chosen]
        if not trials:
            break
        value, i = min(trials)
        if value >= best:
            break
        chosen, best = [*chosen, i], value
    return chosen, best
