"""Classic augmentation, the baseline a GAN must beat: random crop, horizontal flip, small affine.

A policy is ops joined by ``+`` (``"crop+flip"``) or ``"none"``. The parameters of every image are
drawn from the caller's ``torch.Generator`` (:func:`classic_params`) apart from their application
(:func:`apply_classic`), as torchvision v2 and kornia separate them, so a batch is the same on any
device and a stack of classifiers can apply one policy to all its cells at once.

Example:
    >>> gen = torch.Generator().manual_seed(0)
    >>> classic_augment(torch.zeros(4, 1, 8, 8), "crop+flip", gen).shape
    torch.Size([4, 1, 8, 8])
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import torch
from torch.nn import functional as F

from augment.errors import ConfigError

CLASSIC_OPS = ("crop", "flip", "affine")
CLASSIC_BACKENDS = ("torch", "torchvision")

#: Held while a block seeds and draws from torch's global RNG (classifier initialisation, the
#: torchvision backend), so cells running in parallel threads cannot interleave their draws.
GLOBAL_RNG_LOCK = threading.Lock()


def parse_classic(policy: str) -> tuple[str, ...]:
    """``"crop+flip"`` -> ``("crop", "flip")``; ``"none"`` -> ``()``; unknown ops are a ConfigError."""
    if policy == "none":
        return ()
    ops = tuple(policy.split("+"))
    bad = [op for op in ops if op not in CLASSIC_OPS]
    if bad or not ops or len(set(ops)) != len(ops):
        raise ConfigError(f"evaluate.classic: bad policy {policy!r} (ops joined by '+' from {CLASSIC_OPS}, or 'none')")
    return ops


def classic_label(policy: str, sampling: str = "natural") -> str:
    """The classic baseline as reports name it: ``"crop+flip"``, or with class-balanced resampling
    ``"crop+flip, class-balanced"`` (``evaluate.classic_sampling``)."""
    return policy if sampling == "natural" else f"{policy}, class-balanced"


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
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
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


def apply_classic(
    x: torch.Tensor, ops: tuple[str, ...], params: dict[str, torch.Tensor], apply: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply ``ops`` with :func:`classic_params`'s parameters (one row per image) to a float batch
    in [-1, 1], all images at once: every output image depends only on its own input and row.
    ``apply`` (boolean, one per image; None = all) leaves the images whose entry is False as they are."""
    n, _, h, w = x.shape
    given = x
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
    if apply is not None:
        x = torch.where(apply.to(dev)[:, None, None, None], x, given)
    return x.contiguous()
