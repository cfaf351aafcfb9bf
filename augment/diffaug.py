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


def geometric(x: torch.Tensor, gen: torch.Generator | None, std: float = 0.2) -> torch.Tensor:
    """StyleGAN2-ADA's general geometric group without its translation (DiffAugment's own is
    separate): an isotropic scale ``2**N(0, std)``, a rotation uniform in [-180, 180] degrees and an
    anisotropic scale ``2**N(0, std)`` (x by it, y by its inverse), bilinear, reflection-padded."""
    shape = (x.shape[0],)
    iso = torch.exp2(torch.randn(shape, generator=gen, device=x.device, dtype=x.dtype) * std)
    aniso = torch.exp2(torch.randn(shape, generator=gen, device=x.device, dtype=x.dtype) * std)
    angle = (torch.rand(shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * torch.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps each output pixel to where it samples the input (affine_grid's convention): a
    # rotation, then x scaled by 1 / (iso * aniso) and y by aniso / iso, so the content grows by iso.
    sx, sy = 1 / (iso * aniso), aniso / iso
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos * sx, -sin * sx, zero], 1), torch.stack([sin * sy, cos * sy, zero], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


#: In StyleGAN2-ADA's order (geometric, then color) with DiffAugment's reference order for the rest.
POLICIES = {"geometric": geometric, "color": color, "translation": translation, "cutout": cutout}


class DiffAugment:
    """Apply the named policies in the reference order (geometric, color, translation, cutout).

    With ``p`` (a float or a 0-d tensor, e.g. :attr:`AdaptiveAugment.p`), each policy is applied
    to each image independently with probability ``p`` (StyleGAN2-ADA's per-image, per-op
    probability); without it every policy is applied to every image, as in DiffAugment.
    """

    def __init__(self, policies: Sequence[str]) -> None:
        unknown = [p for p in policies if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown DiffAugment policy {unknown[0]!r}; choose from {sorted(POLICIES)}")
        self.policies = [p for p in POLICIES if p in policies]

    def __call__(
        self, x: torch.Tensor, gen: torch.Generator | None = None, p: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        for name in self.policies:
            augmented = POLICIES[name](x, gen)
            if p is None:
                x = augmented
            else:  # a tensor p stays on the device: no host sync per step
                keep = torch.rand(x.shape[0], 1, 1, 1, generator=gen, device=x.device) >= p
                x = torch.where(keep, x, augmented)
        return x

    def __repr__(self) -> str:
        return f"DiffAugment({self.policies})"


class AdaptiveAugment:
    """StyleGAN2-ADA's controller (Karras et al. 2020) of the augmentation probability ``p``.

    D's outputs on the (augmented) real images are watched through the overfitting heuristic
    ``r_t = E[sign(D(real))]``: every ``interval`` D steps, ``p`` moves by ``sign(r_t - target)``
    times the images seen since the last adjustment over ``speed_kimg`` thousand, clamped to
    [0, 1]. It starts at ``p = 0`` (no augmentation until D starts to overfit). Everything stays on
    the device (a 0-d tensor ``p``), so the training loop never waits for it.

    Example:
        >>> import torch
        >>> ada = AdaptiveAugment(target=0.6, speed_kimg=0.001, interval=1)
        >>> ada.observe(torch.ones(8))  # D is sure every real image is real: r_t = 1 > 0.6
        >>> float(ada.p)
        1.0
    """

    def __init__(
        self, target: float = 0.6, speed_kimg: float = 20.0, interval: int = 4, device: torch.device | str = "cpu"
    ) -> None:
        if not 0.0 < target < 1.0:
            raise ValueError(f"ada target must be in (0, 1), got {target}")
        if speed_kimg <= 0 or interval < 1:
            raise ValueError(f"ada speed_kimg must be > 0 and interval >= 1, got {speed_kimg}, {interval}")
        self.target, self.speed_kimg, self.interval = target, speed_kimg, interval
        self.p = torch.zeros((), device=device)
        self.rt = torch.zeros((), device=device)  # the last adjustment's r_t (for the logs)
        self._sign_sum = torch.zeros((), device=device)
        self._count = torch.zeros((), device=device)
        self._calls = 0

    def observe(self, real_logits: torch.Tensor) -> None:
        """Record D's logits on one real batch; adjust ``p`` every ``interval`` calls."""
        with torch.no_grad():
            self._sign_sum += real_logits.detach().float().sign().sum()
            self._count += real_logits.numel()
            self._calls += 1
            if self._calls % self.interval:
                return
            sums = torch.stack([self._sign_sum, self._count])
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(sums)  # every rank steers the same p
            self.rt = sums[0] / sums[1].clamp(min=1)
            step = torch.sign(self.rt - self.target) * sums[1] / (self.speed_kimg * 1000)
            self.p = (self.p + step).clamp(0.0, 1.0)
            self._sign_sum.zero_()
            self._count.zero_()

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {
            "p": self.p.detach().cpu(),
            "rt": self.rt.detach().cpu(),
            "sign_sum": self._sign_sum.detach().cpu(),
            "count": self._count.detach().cpu(),
            "calls": self._calls,
        }

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        device = self.p.device
        self.p = torch.as_tensor(state["p"]).to(device)
        self.rt = torch.as_tensor(state["rt"]).to(device)
        self._sign_sum = torch.as_tensor(state["sign_sum"]).to(device).clone()
        self._count = torch.as_tensor(state["count"]).to(device).clone()
        self._calls = int(state["calls"])
