"""Differentiable augmentation (Zhao et al. 2020, "DiffAugment") for every discriminator input.

Each policy is vectorised over the batch (no per-sample Python loops) and draws its randomness
from an explicit ``torch.Generator`` so a resumed run replays exactly the same augmentations.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> DiffAugment(["translation", "cutout"])(torch.zeros(4, 1, 8, 8), g).shape
    torch.Size([4, 1, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _rand(n: int, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=gen, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    x = x + (_rand(n, x, gen) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(n, x, gen) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(n, x, gen) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, gen: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size, filling with zeros (as the reference code)."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=gen, device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=gen, device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + ty + 1).clamp_(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + tx + 1).clamp_(0, w + 1)
    padded = torch.nn.functional.pad(x, [1, 1, 1, 1])
    flat = (rows * (w + 2) + cols).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, flat).view_as(x)


def cutout(x: torch.Tensor, gen: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` of the size at a random position in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen, device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows - oy + ch // 2) >= 0) & ((rows - oy + ch // 2) < ch)
    inside = inside & ((cols - ox + cw // 2) >= 0) & ((cols - ox + cw // 2) < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


class DiffAugment:
    """Apply the named policies in the reference order (color, translation, cutout)."""

    def __init__(self, policies: Sequence[str]) -> None:
        unknown = [p for p in policies if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown DiffAugment policy {unknown[0]!r}; choose from {sorted(POLICIES)}")
        self.policies = [p for p in POLICIES if p in policies]

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        for name in self.policies:
            x = POLICIES[name](x, gen)
        return x

    def __repr__(self) -> str:
        return f"DiffAugment({self.policies})"
