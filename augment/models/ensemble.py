"""A snapshot ensemble: several EMA generators of one run, sampled as one mixture.

A GAN's generator wanders on tiny data: two snapshots 100 kimg apart with the same ``fd_domain``
cover different modes, and their mixture is closer to the data than either (on the Fashion-MNIST
long tail, 0.26 for the 500- and 600-kimg snapshots of one run against 0.30 and 0.34 alone).
"""

from __future__ import annotations

import torch
from torch import nn

from augment.models.generator import ConditionalGenerator


class SnapshotEnsemble(nn.Module):
    """Maps ``(z, class)`` to an image of one member, chosen by the latent itself.

    Member ``k = floor(K * Phi(z_0))`` (``Phi`` the normal CDF) draws the image from ``z`` with its
    first coordinate replaced by ``Phi^-1(K * Phi(z_0) - k)``: for ``z ~ N(0, I)`` every member is
    picked with probability 1/K and still sees a standard normal latent, independent of the choice.
    So an image is a function of its latent alone (as for one generator: deterministic per
    ``(seed, class, index)``, whatever the batching) and the ensemble is an equal-weight mixture.

    Example:
        >>> gs = [ConditionalGenerator(3, 8, 1, z_dim=4, width=8).eval() for _ in range(2)]
        >>> ens = SnapshotEnsemble(gs)
        >>> ens(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])).shape
        torch.Size([5, 1, 8, 8])
    """

    def __init__(self, members: list[ConditionalGenerator]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a snapshot ensemble needs at least one generator")
        first = members[0]
        self.members = nn.ModuleList(members)
        self.num_classes, self.image_size, self.channels = first.num_classes, first.image_size, first.channels
        self.z_dim = first.z_dim

    def route(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(member index per row, first latent coordinate re-drawn as a standard normal)``."""
        k = len(self.members)
        u = torch.special.ndtr(z[:, 0].double()) * k
        member = u.floor().clamp_(0, k - 1)
        eps = 1e-12  # keeps ndtri finite where u lands on an integer
        z0 = torch.special.ndtri((u - member).clamp_(eps, 1 - eps))
        return member.long(), z0.to(z.dtype)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](z, y)
        member, z0 = self.route(z)
        return self.dispatch(member, torch.cat([z0[:, None], z[:, 1:]], dim=1), y)

    def dispatch(self, member: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Row ``i`` drawn by member ``member[i]`` from latent ``z[i]`` as given (already routed)."""
        out: torch.Tensor | None = None
        for k, G in enumerate(self.members):
            rows = (member == k).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            x = G(z[rows], y[rows])
            if out is None:
                out = x.new_empty((z.shape[0], *x.shape[1:]))
            out[rows] = x
        assert out is not None
        return out
