"""Projection discriminator (Miyato & Koyama 2018), spectral normalisation optional (R1 instead)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from augment.models.generator import layout, memory_format_of, upsample_conv3x3


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module


class DownBlock(nn.Module):
    """A DCGAN down-sampling step: 4x4 convolution with stride 2, LeakyReLU."""

    def __init__(self, cin: int, cout: int, sn: bool = True) -> None:
        super().__init__()
        self.conv = _sn(nn.Conv2d(cin, cout, 4, stride=2, padding=1), sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.leaky_relu(self.conv(x), 0.2)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append the features' standard deviation over small groups of the batch as one channel
    (StyleGAN's minibatch-stddev layer), so the discriminator can see a lack of diversity."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    while n % g:
        g -= 1
    y = x.view(g, n // g, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
    y = y.mean(dim=(1, 2, 3)).view(n // g, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1).contiguous(memory_format=memory_format_of(x))  # cat returns NCHW


class ReconDecoder(nn.Module):
    """FastGAN's self-supervised decoder (Liu et al. 2021, "Towards Faster and Stabilized GAN Training
    for High-fidelity Few-shot Image Synthesis"): from D's last feature map to an image at twice its
    size (nearest upsampling + 3x3 convolution, LeakyReLU, 3x3 convolution to the image's channels,
    tanh). Trained on real images only, it makes D keep what describes an image, not just what
    tells a few memorised reals from fakes.

    Example:
        >>> ReconDecoder(16, 8, 1)(torch.zeros(2, 16, 4, 4)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, cin: int, width: int, channels: int, sn: bool = True) -> None:
        super().__init__()
        self.up = _sn(nn.Conv2d(cin, width, 3, padding=1, bias=False), sn)
        self.to_img = _sn(nn.Conv2d(width, channels, 3, padding=1), sn)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = nn.functional.leaky_relu(upsample_conv3x3(h, self.up.weight), 0.2)
        return torch.tanh(self.to_img(h))


class ProjectionDiscriminator(nn.Module):
    """Scores ``(image, class)``: ``psi(h) + <embed(y), h>`` with ``h`` the image's global features.

    ``cond_strength`` in [0, 1] scales the class's term (``psi(h) + s * <embed(y), h>``): 0 is an
    unconditional discriminator, 1 (the default) the projection discriminator; transitional
    training ramps it with the generator's (:meth:`ConditionalGenerator.set_cond_strength`).

    ``aux_classifier`` adds a linear class head on the same features ``h`` (an auxiliary
    classifier, as AC-GAN's; Odena et al. 2017): ``D(x, y, with_aux=True)`` returns
    ``(logits, class_logits)``. ``contrast_dim`` > 0 adds an MLP head embedding ``h`` for instance
    discrimination (InsGen / FakeCLR): ``D(x, y, with_instance=True)`` returns ``(logits, embedding)``.
    ``recon`` adds FastGAN's decoder (:class:`ReconDecoder`) on the last feature map:
    ``D(x, y, with_recon=True)`` returns ``(logits, reconstruction)``, the image at twice that map's size.
    ``uncond_low`` adds UTLO's unconditional discriminator of the generator's low-resolution images
    (:meth:`score_low`: images at the size of the last feature map, 7x7 for 28x28).

    Example:
        >>> d = ProjectionDiscriminator(num_classes=3, image_size=8, channels=1, width=16)
        >>> d(torch.randn(2, 1, 8, 8), torch.tensor([0, 2])).shape
        torch.Size([2])
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        channels: int,
        width: int = 64,
        max_mult: int = 4,
        spectral: bool = True,
        aux_classifier: bool = False,
        contrast_dim: int = 0,
        recon: bool = False,
        uncond_low: bool = False,
    ) -> None:
        super().__init__()
        sn = spectral
        self.num_classes, self.image_size, self.channels = num_classes, image_size, channels
        _, n_down = layout(image_size)
        widths = [width * min(2**i, max_mult) for i in range(n_down + 1)]
        self.from_img = _sn(nn.Conv2d(channels, widths[0], 3, padding=1), sn)
        self.blocks = nn.Sequential(*(DownBlock(widths[i], widths[i + 1], sn) for i in range(n_down)))
        # A 3x3 convolution at the final resolution widens the receptive field to (most of) the
        # image before sum pooling; minibatch stddev lets it see a lack of diversity.
        self.head = _sn(nn.Conv2d(widths[-1] + 1, widths[-1], 3, padding=1), sn)
        self.fc = _sn(nn.Linear(widths[-1], 1), sn)
        self.embed = _sn(nn.Embedding(num_classes, widths[-1]), sn)
        # Made last, and only when asked for: the other layers' initial weights stay those of a
        # discriminator without it.
        self.aux = _sn(nn.Linear(widths[-1], num_classes), sn) if aux_classifier else None
        self.instance = (
            nn.Sequential(nn.Linear(widths[-1], widths[-1]), nn.LeakyReLU(0.2), nn.Linear(widths[-1], contrast_dim))
            if contrast_dim > 0
            else None
        )
        self.decoder = ReconDecoder(widths[-1], widths[0], channels, sn) if recon else None
        self.low = (
            nn.ModuleDict(
                {
                    "from_img": _sn(nn.Conv2d(channels, widths[0], 3, padding=1), sn),
                    "head": _sn(nn.Conv2d(widths[0] + 1, widths[0], 3, padding=1), sn),
                    "fc": _sn(nn.Linear(widths[0], 1), sn),
                }
            )
            if uncond_low
            else None
        )
        self.cond_strength = 1.0

    def score_low(self, x: torch.Tensor) -> torch.Tensor:
        """UTLO's unconditional logits of low-resolution images ``x`` (7x7 for 28x28 images):
        a convolution from the image, minibatch stddev, a 3x3 convolution, sum pooling, a linear
        head, at D's first width (a 7x7 image has 49 pixels); no class enters."""
        if self.low is None:
            raise ValueError("score_low needs a discriminator built with uncond_low=True")
        h = nn.functional.leaky_relu(self.low["from_img"](x), 0.2)
        h = nn.functional.leaky_relu(self.low["head"](minibatch_stddev(h)), 0.2).sum(dim=(2, 3))
        return self.low["fc"](h).squeeze(1)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        with_aux: bool = False,
        with_instance: bool = False,
        with_recon: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = nn.functional.leaky_relu(self.from_img(x), 0.2)
        features = self.blocks(h)
        h = nn.functional.leaky_relu(self.head(minibatch_stddev(features)), 0.2).sum(dim=(2, 3))
        proj = (self.embed(y) * h).sum(dim=1)
        if self.cond_strength != 1.0:
            proj = self.cond_strength * proj
        logits = self.fc(h).squeeze(1) + proj
        if with_recon:
            if self.decoder is None or with_aux or with_instance:
                raise ValueError("with_recon needs a discriminator built with recon=True, without another head")
            return logits, self.decoder(features)
        if with_instance:
            if self.instance is None or with_aux:
                raise ValueError("with_instance needs a discriminator built with contrast_dim > 0, without with_aux")
            return logits, self.instance(h)
        if with_aux:
            if self.aux is None:
                raise ValueError("with_aux needs a discriminator built with aux_classifier=True")
            return logits, self.aux(h)
        return logits
