"""Projection discriminator with spectral normalisation (Miyato & Koyama 2018)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from augment.models.generator import layout


class DownBlock(nn.Module):
    """A DCGAN down-sampling step: 4x4 convolution with stride 2, LeakyReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.leaky_relu(self.conv(x), 0.2)


class ProjectionDiscriminator(nn.Module):
    """Scores ``(image, class)``: ``psi(h) + <embed(y), h>`` with ``h`` the pooled features.

    Example:
        >>> d = ProjectionDiscriminator(num_classes=3, image_size=8, channels=1, width=16)
        >>> d(torch.randn(2, 1, 8, 8), torch.tensor([0, 2])).shape
        torch.Size([2])
    """

    def __init__(self, num_classes: int, image_size: int, channels: int, width: int = 64, max_mult: int = 4) -> None:
        super().__init__()
        self.num_classes, self.image_size, self.channels = num_classes, image_size, channels
        _, n_down = layout(image_size)
        widths = [width * min(2**i, max_mult) for i in range(n_down + 1)]
        self.from_img = spectral_norm(nn.Conv2d(channels, widths[0], 3, padding=1))
        self.blocks = nn.Sequential(*(DownBlock(widths[i], widths[i + 1]) for i in range(n_down)))
        self.fc = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, widths[-1]))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = nn.functional.leaky_relu(self.from_img(x), 0.2)
        h = self.blocks(h).sum(dim=(2, 3))
        return self.fc(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)
