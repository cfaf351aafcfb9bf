"""The training loop's options, grouped as EDM groups ``G_kwargs`` / ``D_kwargs`` / ``loss_kwargs``,
and :func:`loop_kwargs`, which reads them off a config. Every field says its unit."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from augment.config import Config
from augment.devices import resolve_precision


@dataclass(frozen=True)
class NetworkOptions:
    """Architecture of G and D (fixed for a run: a resume takes it from the training state)."""

    z_dim: int = 64  #: latent dimensions per image
    g_channels: int = 64  #: G's channels at the output resolution (doubling per halving, capped by max_mult)
    g_arch: str = "dcgan"  #: ``dcgan`` (a convolution per resolution) or ``resnet`` (residual blocks of two)
    d_channels: int = 64  #: D's channels at the input resolution
    max_mult: int = 4  #: cap on the channel multiplier at low resolutions
    d_spectral_norm: bool = False  #: spectral normalisation of D's layers
    g_spectral_norm: bool = False  #: spectral normalisation of the trained G's layers (not of its EMA copy)


@dataclass(frozen=True)
class LossOptions:
    """The adversarial recipe: loss, regularisers and what D's inputs are augmented with."""

    loss: str = "hinge"  #: ``hinge``, ``nonsaturating`` or ``rpgan`` (relativistic pairing)
    r1_gamma: float = 0.1  #: R1 penalty weight on real images
    r2_gamma: float = 0.0  #: R2 penalty weight on G's images (with R1, on its interval)
    r1_interval: int = 1  #: D steps per (lazy) R1 pass; the penalty is scaled by it
    d_steps: int = 1  #: D steps per G step (n_dis)
    diffaug: tuple[str, ...] = ("translation", "cutout")  #: DiffAugment policies on every D input
    ada_target: float | None = None  #: ADA's r_t target for E[sign(D(real))]; None: fixed DiffAugment
    ada_kimg: float = 20.0  #: kimg for ADA's (and APA's) p to move by 1
    ada_extra: tuple[str, ...] = ()  #: policies ADA's p steers on top of fixed DiffAugment; (): it steers diffaug
    apa_target: float | None = None  #: APA's r_t target: reals replaced by fakes with an adaptive p; None: off
    lecam_weight: float = 0.0  #: LeCam regulariser weight (0: off)
    bcr_weight: float = 0.0  #: balanced consistency regularisation weight, reals and fakes (0: off)
    mode_seeking: float = 0.0  #: MSGAN mode-seeking weight for G (0: off)
    gsr_weight: float = 0.0  #: group spectral regularisation weight for G's class-conditional BatchNorm (0: off)
    aux_class_weight: float = 0.0  #: auxiliary classifier weight: D's class head on reals, G's on fakes (0: off)
    class_noise: float = 0.0  #: noise on G's class codes for the rarest class, in RMS of each table (0: off)
    fake_contrast: float = 0.0  #: fake instance discrimination weight in D's and G's losses (0: off)
    d_recon: float = 0.0  #: FastGAN's self-supervised reconstruction weight in D's loss (0: off)
    uncond_low: float = 0.0  #: UTLO's unconditional low-resolution objective's weight (0: off)
    g_labels: str = "data"  #: classes of G's step: ``data`` (the real batch's) or ``uniform``
    mirror: bool = False  #: mirror each real image left-right with probability 0.5 (dataset x-flips)
    real_class_power: float = 1.0  #: q of the reals' class draw, n_c^q (1: every image equally often, 0: every class)
    top_k: float | None = None  #: top-k training's floor: the share of G's batch its adversarial term keeps; None: off
    #: ``(start, end)`` kimg of the unconditional-to-conditional ramp of transitional training; None: off
    cond_transition: tuple[float, float] | None = None

    @property
    def conditional_nimg(self) -> int:
        """Images shown from which the networks are fully class-conditional (0 without a transition)."""
        return int(self.cond_transition[1] * 1000) if self.cond_transition is not None else 0

    def top_k_keep(self, nimg: int, batch: int, n_train: int) -> int | None:
        """How many of G's ``batch`` fakes top-k training keeps after ``nimg`` images shown on a train
        split of ``n_train`` (Sinha et al.: ``max(floor, 0.99 ** epoch) * batch``); None when off.

        Example:
            >>> opts = LossOptions(top_k=0.5)
            >>> [opts.top_k_keep(n, 64, 100) for n in (0, 1000, 10_000, 100_000)]
            [64, 58, 32, 32]
        """
        if self.top_k is None:
            return None
        share = max(self.top_k, 0.99 ** (nimg // max(n_train, 1)))
        return max(1, min(batch, math.ceil(share * batch)))

    def cond_strength(self, nimg: int) -> float:
        """The class conditioning's scale after ``nimg`` images shown: 0 before the transition, 1 after."""
        if self.cond_transition is None:
            return 1.0
        start, end = int(self.cond_transition[0] * 1000), self.conditional_nimg
        return min(max((nimg - start) / (end - start), 0.0), 1.0)


@dataclass(frozen=True)
class ScheduleOptions:
    """How long, how fast and how often: every length in kimg (thousands of real images shown to D)."""

    total_kimg: float = 50.0  #: training length
    batch_size: int = 64  #: real images per step, all ranks together
    lr_g: float = 2e-4  #: Adam learning rate of G
    lr_d: float = 2e-4  #: Adam learning rate of D
    betas: tuple[float, float] = (0.0, 0.99)  #: Adam betas of both players
    ema_kimg: float = 1.0  #: half-life of G's EMA weights (0: no averaging)
    ema_bn: str = "copy"  #: G_ema's BatchNorm statistics: ``copy`` (G's) or ``standing`` (recomputed for it)
    snapshot_kimg: float = 10.0  #: interval of snapshots, sample grids and the training state
    eval_kimg: float = 0.0  #: interval of best-snapshot evaluations (0: off)
    ensemble: int = 1  #: most EMA snapshots mixed into the best snapshot (1: the single best)
    max_minutes: float | None = None  #: wall-clock budget; stops early, with a final snapshot
    #: share of the budget after which both rates fall linearly to 0 (None: constant)
    lr_decay_from: float | None = None

    def lr_scale(self, nimg: int, elapsed_s: float) -> float:
        """The learning rates' factor after ``nimg`` images and ``elapsed_s`` seconds: 1 until
        ``lr_decay_from`` of the budget, then linearly down to 0 at its end. The budget's progress is
        the larger of the images shown and, under ``max_minutes``, the wall time spent."""
        if self.lr_decay_from is None:
            return 1.0
        progress = nimg / (self.total_kimg * 1000)
        if self.max_minutes is not None:
            progress = max(progress, elapsed_s / (self.max_minutes * 60))
        return min(1.0, max(0.0, (1.0 - progress) / (1.0 - self.lr_decay_from)))


@dataclass(frozen=True)
class PerformanceOptions:
    """How the steps run; none of these changes what is computed beyond float rounding."""

    precision: str = "fp32"  #: ``fp32`` or ``bf16`` autocast (``auto`` is resolved by :func:`loop_kwargs`)
    channels_last: bool = False  #: NHWC memory layout
    compile: bool = False  #: torch.compile the adversarial passes (R1 stays eager)
    compile_mode: str = "default"  #: torch.compile's mode (``reduce-overhead``: CUDA graphs on CUDA)


def loop_kwargs(cfg: Config, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The keyword arguments of :func:`training_loop` that a config decides (on ``device``: on
    CUDA, ``train.cuda`` replaces the batch size, learning rates, precision, layout, compile (and
    its mode) and R1 interval; ``precision: auto`` comes back as the ``fp32`` or ``bf16`` that ``device`` gets)."""
    t, m = cfg.train, cfg.model
    cuda = torch.device(device).type == "cuda"
    gpu = t.cuda
    networks = NetworkOptions(
        z_dim=m.z_dim,
        g_channels=m.g_channels,
        g_arch=m.g_arch,
        d_channels=m.d_channels,
        max_mult=m.max_mult,
        d_spectral_norm=m.d_spectral_norm,
        g_spectral_norm=m.g_spectral_norm,
    )
    loss = LossOptions(
        loss=t.loss,
        r1_gamma=t.r1_gamma,
        r2_gamma=t.r2_gamma,
        r1_interval=gpu.r1_interval if cuda else t.r1_interval,
        d_steps=t.d_steps,
        diffaug=tuple(t.diffaug),
        ada_target=t.ada_target,
        ada_kimg=t.ada_kimg,
        ada_extra=tuple(t.ada_extra),
        apa_target=t.apa_target,
        lecam_weight=t.lecam_weight,
        bcr_weight=t.bcr_weight,
        mode_seeking=t.mode_seeking,
        gsr_weight=t.gsr_weight,
        aux_class_weight=t.aux_class_weight,
        class_noise=t.class_noise,
        fake_contrast=t.fake_contrast,
        d_recon=t.d_recon,
        uncond_low=t.uncond_low,
        g_labels=t.g_labels,
        mirror=t.mirror,
        real_class_power=t.real_class_power,
        top_k=t.top_k,
        cond_transition=tuple(t.cond_transition_kimg) if t.cond_transition_kimg is not None else None,
    )
    schedule = ScheduleOptions(
        total_kimg=t.kimg,
        batch_size=gpu.batch_size if cuda else t.batch_size,
        lr_g=(gpu.lr_g or t.lr_g) if cuda else t.lr_g,
        lr_d=(gpu.lr_d or t.lr_d) if cuda else t.lr_d,
        betas=tuple(t.betas),
        ema_kimg=t.ema_kimg,
        ema_bn=t.ema_bn,
        snapshot_kimg=t.snapshot_kimg,
        eval_kimg=t.eval_kimg,
        ensemble=t.ensemble,
        max_minutes=t.max_minutes,
        lr_decay_from=t.lr_decay_from,
    )
    performance = PerformanceOptions(
        precision=resolve_precision(gpu.precision if cuda else t.precision, device),
        channels_last=gpu.channels_last if cuda else t.channels_last,
        compile=gpu.compile if cuda else t.compile,
        compile_mode=gpu.compile_mode if cuda else t.compile_mode,
    )
    return dict(
        config=cfg.to_dict(),
        seed=cfg.seed if t.seed is None else t.seed,
        networks=networks,
        loss=loss,
        schedule=schedule,
        performance=performance,
    )


_GROUPS = {
    "networks": NetworkOptions,
    "loss": LossOptions,
    "schedule": ScheduleOptions,
    "performance": PerformanceOptions,
}


def flat_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """:func:`loop_kwargs`' grouped options as one flat ``{field: value}`` (for tables and comparisons)."""
    return {k: v for g in _GROUPS for k, v in dataclasses.asdict(kwargs[g]).items()}


def replace_options(kwargs: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A copy of :func:`loop_kwargs`' result with some fields replaced by name, whichever group holds them.

    Raises:
        TypeError: a name no group has.
    """
    out = dict(kwargs)
    for group, cls in _GROUPS.items():
        mine = {k: v for k, v in fields.items() if k in {f.name for f in dataclasses.fields(cls)}}
        if mine:
            out[group] = dataclasses.replace(out[group], **mine)
    unknown = set(fields) - {f.name for cls in _GROUPS.values() for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"no training-loop option named {sorted(unknown)}")
    return out
