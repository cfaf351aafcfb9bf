"""Adversarial losses. The loss owns the recipe (as in EDM): it applies DiffAugment to every
discriminator input, real and fake, and computes each player's term.

Example:
    >>> import torch
    >>> from augment.models import ConditionalGenerator, ProjectionDiscriminator
    >>> G = ConditionalGenerator(2, 8, 1, z_dim=8, width=8)
    >>> D = ProjectionDiscriminator(2, 8, 1, width=8)
    >>> loss = GanLoss("hinge", ["translation"])
    >>> y = torch.tensor([0, 1])
    >>> loss.discriminator(G, D, torch.zeros(2, 1, 8, 8), y, torch.randn(2, 8)).ndim
    0
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from augment.diffaug import DiffAugment

LOSSES = ("hinge", "nonsaturating")


class GanLoss:
    """Hinge (Lim & Ye 2017; Miyato et al. 2018) or non-saturating (Goodfellow et al. 2014) loss."""

    def __init__(
        self, kind: str = "hinge", diffaug: Sequence[str] = ("translation", "cutout"), r1_gamma: float = 0.0
    ) -> None:
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose from {LOSSES}")
        if r1_gamma < 0:
            raise ValueError(f"r1_gamma must be >= 0, got {r1_gamma}")
        self.kind = kind
        self.augment = DiffAugment(diffaug)
        self.r1_gamma = r1_gamma

    def discriminator(
        self,
        G: nn.Module,
        D: nn.Module,
        real: torch.Tensor,
        labels: torch.Tensor,
        z: torch.Tensor,
        gen: torch.Generator | None = None,
        *,
        r1: bool = True,
        r1_scale: float = 1.0,
        D_r1: nn.Module | None = None,
    ) -> torch.Tensor:
        """D's loss on a real batch and fakes of the same labels (G gets no gradient).

        Real and fake go through D in separate calls: D's minibatch-stddev layer must see groups
        that are all real or all fake.

        R1 is added when ``r1`` is true (lazy regularisation passes ``r1`` on every N-th step
        with ``r1_scale=N``). By default the penalty reuses the real forward pass; with ``D_r1``
        (an eager twin of a compiled ``D``: double backward does not go through torch.compile) it
        runs a separate forward of the same augmented reals.
        """
        with torch.no_grad():
            fake = G(z, labels)
        real_aug, fake_aug = self.augment(torch.cat([real, fake]), gen).chunk(2)
        do_r1 = self.r1_gamma > 0 and r1
        if do_r1 and D_r1 is None:
            real_aug = real_aug.detach().requires_grad_(True)
        real_logits, fake_logits = D(real_aug, labels), D(fake_aug, labels)
        if self.kind == "hinge":
            loss = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
        else:
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        if do_r1:  # R1 (Mescheder et al. 2018): penalise D's gradient on real images
            if D_r1 is None:
                x, logits = real_aug, real_logits
            else:
                x = real_aug.detach().requires_grad_(True)
                logits = D_r1(x, labels)
            (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
            loss = loss + 0.5 * self.r1_gamma * r1_scale * grad.square().sum(dim=(1, 2, 3)).mean()
        return loss

    def generator(
        self,
        G: nn.Module,
        D: nn.Module,
        labels: torch.Tensor,
        z: torch.Tensor,
        gen: torch.Generator | None = None,
    ) -> torch.Tensor:
        """G's loss: make D score augmented fakes as real."""
        logits = D(self.augment(G(z, labels), gen), labels)
        if self.kind == "hinge":
            return -logits.mean()
        return F.softplus(-logits).mean()
