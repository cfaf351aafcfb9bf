"""Class-conditional generator with conditional BatchNorm (Miyato & Koyama 2018): DCGAN-style (one
convolution per resolution) or residual (BigGAN-style blocks of two, ``residual=True``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


def layout(image_size: int) -> tuple[int, int]:
    """``(start_resolution, n_upsamplings)``: 8 -> (4, 1), 28 -> (7, 2), 32 -> (4, 3), 64 -> (4, 4)."""
    s, n = image_size, 0
    while s % 2 == 0 and s // 2 >= 4:
        s //= 2
        n += 1
    if n == 0 or s > 8:
        raise ValueError(f"image_size {image_size} is not supported (needs size = 4..8 * 2^k, k >= 1)")
    return s, n


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` when a 4-d tensor (a convolution weight, an activation) is stored
    NHWC (a module moved with ``.to(memory_format=torch.channels_last)``), else
    ``torch.contiguous_format``.

    The networks keep every activation in their weights' layout: an elementwise op or BatchNorm on
    one NCHW and one NHWC tensor of the same shape falls off the vectorised path (~30x slower on
    the CPU for a 64x32x28x28 map), which is where channels_last training lost its gain.

    Example:
        >>> memory_format_of(torch.zeros(4, 2, 3, 3).to(memory_format=torch.channels_last))
        torch.channels_last
    """
    nhwc = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if nhwc else torch.contiguous_format


@dataclass
class ClassNoise:
    """Gaussian noise on the class conditioning of a training call of G (NoisyTwins' noise
    augmentation, Rangwani et al. 2023): every per-class vector G looks up (its class embedding,
    each conditional BatchNorm's gain and shift) is moved, image by image, by ``sigma`` times the
    RMS of that table's entries (the gains' departure from 1) times a standard normal draw. Nearby
    class codes must then give images of the class too, which spreads a small class's samples.

    ``sigma``: ``(batch,)`` each image's noise in units of the table's RMS; ``gen`` the draws' generator.
    """

    sigma: torch.Tensor
    gen: torch.Generator | None = None

    def perturb(self, v: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """``v`` (``(batch, features)`` rows of ``table``, or of its departure from 1) plus the noise."""
        scale = table.detach().float().square().mean().sqrt()
        eps = torch.randn(v.shape, generator=self.gen, device=v.device, dtype=v.dtype)
        return v + (self.sigma.to(v.dtype)[:, None] * scale.to(v.dtype)) * eps


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine parameters, followed by a per-class scale and shift.

    ``strength`` in [0, 1] scales how far the class moves them from the identity (scale
    ``1 + s * (gamma_y - 1)``, shift ``s * beta_y``): 0 is an unconditional BatchNorm, 1 (the
    default, and every trained generator's) the plain conditional one.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)
        self.strength = 1.0

    def forward(self, x: torch.Tensor, y: torch.Tensor, noise: ClassNoise | None = None) -> torch.Tensor:
        gamma, beta = self.gamma(y), self.beta(y)
        if noise is not None:
            gamma = 1.0 + noise.perturb(gamma - 1.0, self.gamma.weight - 1.0)
            beta = noise.perturb(beta, self.beta.weight)
        gamma, beta = gamma[:, :, None, None], beta[:, :, None, None]
        if self.strength != 1.0:
            gamma, beta = 1.0 + self.strength * (gamma - 1.0), self.strength * beta
        return self.bn(x) * gamma + beta


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution (padding 1, no bias), computed
    as one stride-2 transposed convolution with a 4x4 kernel folded from the 3x3 one.

    The two are the same function (equal up to float rounding): output row ``2i`` sees input rows
    ``i-1`` (tap 0) and ``i`` (taps 1+2), row ``2i+1`` sees ``i`` (taps 0+1) and ``i+1`` (tap 2), and
    likewise for columns. The folded form costs 4 instead of 9 multiply-adds per output pixel and
    never materialises the upsampled map: 2.2x faster forward+backward on the CPU at 14->28 px.

    Example:
        >>> x, w = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(5, 3, 3, 3, dtype=torch.float64)
        >>> ref = nn.functional.conv2d(nn.functional.interpolate(x, scale_factor=2), w, padding=1)
        >>> torch.allclose(upsample_conv3x3(x, w), ref)
        True
    """
    w0, w1, w2 = weight.unbind(2)  # taps along rows
    rows = torch.stack([w2, w1 + w2, w0 + w1, w0], dim=2)  # (out, in, 4, 3)
    c0, c1, c2 = rows.unbind(3)  # taps along columns
    kernel = torch.stack([c2, c1 + c2, c0 + c1, c0], dim=3)  # (out, in, 4, 4)
    kernel = kernel.transpose(0, 1).contiguous(memory_format=memory_format_of(weight))
    return nn.functional.conv_transpose2d(x, kernel, stride=2, padding=1)


class UpBlock(nn.Module):
    """Upsample 2x (nearest), 3x3 convolution, conditional BatchNorm, ReLU. The first two run as one
    transposed convolution (:func:`upsample_conv3x3`); ``conv`` keeps the 3x3 weights."""

    def __init__(self, cin: int, cout: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm = ConditionalBatchNorm2d(cout, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor, noise: ClassNoise | None = None) -> torch.Tensor:
        return torch.relu(self.norm(upsample_conv3x3(x, self.conv.weight), y, noise))


class ResUpBlock(nn.Module):
    """BigGAN's generator block: CBN, ReLU, upsample 2x + 3x3 convolution, CBN, ReLU, 3x3 convolution,
    added to a shortcut of the input (1x1 convolution, then nearest upsampling: the same function as
    upsampling first, at a quarter of the cost)."""

    def __init__(self, cin: int, cout: int, num_classes: int) -> None:
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(cin, num_classes)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = ConditionalBatchNorm2d(cout, num_classes)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor, noise: ClassNoise | None = None) -> torch.Tensor:
        h = upsample_conv3x3(torch.relu(self.norm1(x, y, noise)), self.conv1.weight)
        h = self.conv2(torch.relu(self.norm2(h, y, noise)))
        return h + nn.functional.interpolate(self.skip(x), scale_factor=2.0, mode="nearest")


class ConditionalGenerator(nn.Module):
    """Maps ``(z, class)`` to an image in [-1, 1] of shape ``(channels, image_size, image_size)``.

    Example:
        >>> g = ConditionalGenerator(num_classes=3, image_size=8, channels=1, z_dim=16, width=16)
        >>> g(torch.randn(2, 16), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 8, 8])

    ``residual=True`` builds BigGAN-style blocks (:class:`ResUpBlock`, two convolutions each, batch
    normalisation before the output convolution) instead of one convolution per resolution.

    ``cond_strength`` (see :meth:`set_cond_strength`) is below 1 only in a snapshot taken during a
    transitional training's unconditional-to-conditional ramp.

    ``uncond_low=True`` (UTLO, Khorram et al. 2024, "Taming the Tail in Class-Conditional GANs") keeps
    the lowest resolution unconditional: the projection of ``z`` and its BatchNorm see no class, and
    a head there draws a low-resolution image (``G(z, y, with_low=True)`` returns ``(image, low)``,
    ``low`` at the start resolution: 7x7 for 28x28) that an unconditional discriminator judges, so
    every class trains those layers together. The class then enters as a map added to the features
    (the class half of the usual projection of ``[z, embed(y)]``) and through every later block's
    conditional BatchNorm. DCGAN layout only.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        channels: int,
        z_dim: int = 64,
        width: int = 64,
        max_mult: int = 4,
        residual: bool = False,
        cond_strength: float = 1.0,
        uncond_low: bool = False,
    ) -> None:
        super().__init__()
        if uncond_low and residual:
            raise ValueError("uncond_low needs the DCGAN layout (residual=False)")
        self.num_classes, self.image_size, self.channels, self.z_dim = num_classes, image_size, channels, z_dim
        self.residual = residual
        self.cond_strength = 1.0
        start, n_up = layout(image_size)
        widths = [width * min(2 ** (n_up - i), max_mult) for i in range(n_up + 1)]
        self.start = start
        # The class enters twice: as an embedding concatenated to z (a strong signal from the first
        # step; conditional BatchNorm gains alone start at 1 and move by ~lr per Adam step, so with
        # a few thousand steps the generator would learn to ignore the class) and through CBN.
        self.embed = nn.Embedding(num_classes, z_dim)
        self.uncond_low = uncond_low
        # UTLO: z's projection and the class's are two layers (together the usual fc of [z, e]).
        self.fc = nn.Linear(z_dim if uncond_low else 2 * z_dim, widths[0] * start * start, bias=False)
        block = ResUpBlock if residual else UpBlock
        # DCGAN: normalise the projection, each block ends normalised; residual: each block starts
        # with its normalisation, and the sum of the last one is normalised before the output.
        self.norm0 = ConditionalBatchNorm2d(widths[-1 if residual else 0], num_classes)
        self.blocks = nn.ModuleList(block(widths[i], widths[i + 1], num_classes) for i in range(n_up))
        self.to_img = nn.Conv2d(widths[-1], channels, 3, padding=1)
        if uncond_low:  # UTLO's unconditional start: a plain BatchNorm, the class's map, the low-resolution head
            self.norm0 = nn.BatchNorm2d(widths[0])
            self.class_map = nn.Linear(z_dim, widths[0] * start * start, bias=False)
            self.to_low = nn.Conv2d(widths[0], channels, 3, padding=1)
        self.set_cond_strength(cond_strength)

    def set_cond_strength(self, strength: float) -> None:
        """How much the class conditions the images, in [0, 1]: the class embedding concatenated to
        ``z`` and every conditional BatchNorm's deviation from the identity are scaled by it.

        0 makes an unconditional generator (the class is ignored), 1 the class-conditional one.
        Transitional training (Shahbazi et al. 2022, "Collapse by conditioning") ramps it from 0 to 1
        so that the classes first share what they have in common; the weights do not depend on it.
        """
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"cond_strength must be in [0, 1], got {strength!r}")
        self.cond_strength = float(strength)
        for m in self.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.strength = float(strength)

    def forward(
        self, z: torch.Tensor, y: torch.Tensor, noise: ClassNoise | None = None, with_low: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images of classes ``y`` from latents ``z``; ``noise`` (training calls only) perturbs the
        class conditioning (:class:`ClassNoise`); ``with_low`` (``uncond_low`` generators) also
        returns the unconditional low-resolution image."""
        e = self.embed(y)
        if noise is not None:
            e = noise.perturb(e, self.embed.weight)
        if self.cond_strength != 1.0:
            e = self.cond_strength * e
        fmt = memory_format_of(_stored_weight(self.to_img))  # NHWC under channels_last
        low = None
        if self.uncond_low:
            x = torch.relu(
                self.norm0(self.fc(z).view(z.shape[0], -1, self.start, self.start).contiguous(memory_format=fmt))
            )
            if with_low:
                low = torch.tanh(self.to_low(x))
            x = x + self.class_map(e).view(x.shape).contiguous(memory_format=fmt)
        else:
            if with_low:
                raise ValueError("with_low needs a generator built with uncond_low=True")
            x = self.fc(torch.cat([z, e], dim=1)).view(z.shape[0], -1, self.start, self.start)
            x = x.contiguous(memory_format=fmt)  # no-op unless channels_last
        if not self.residual and not self.uncond_low:
            x = torch.relu(self.norm0(x, y, noise))
        for block in self.blocks:
            x = block(x, y, noise)
        if self.residual:
            x = torch.relu(self.norm0(x, y, noise))
        image = torch.tanh(self.to_img(x))
        return (image, low) if with_low else image


def _stored_weight(module: nn.Module) -> torch.Tensor:
    """The weight tensor a layer stores (the unnormalised one under spectral normalisation, whose
    ``.weight`` would be computed, with a power-iteration step in training mode)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def with_spectral_norm(G: ConditionalGenerator) -> ConditionalGenerator:
    """``G`` with spectral normalisation on every convolution and linear layer (SAGAN, Zhang et al.
    2019; BigGAN), in place; the class embeddings and conditional BatchNorm gains are left as they are.

    Used for the generator being trained only: what a run hands on (the EMA copy, snapshots) is a
    plain :class:`ConditionalGenerator` holding the normalised weights (:func:`normalised_weights`).

    Example:
        >>> g = with_spectral_norm(ConditionalGenerator(num_classes=2, image_size=8, channels=1, width=8))
        >>> parametrize.is_parametrized(g.fc, "weight")
        True
    """
    for module in list(G.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            spectral_norm(module)
    return G


@torch.no_grad()
def normalised_weights(G: nn.Module, names: list[str]) -> list[torch.Tensor]:
    """The weights ``names`` (``"fc.weight"``...) of a spectrally normalised ``G`` as the layers use
    them, W / sigma, with sigma from the stored power-iteration vectors (no iteration step: the
    training's vectors, and so its trajectory, are not touched)."""
    out = []
    for name in names:
        module = G.get_submodule(name.rsplit(".", 1)[0])
        sn = module.parametrizations.weight
        was_training = sn.training
        sn.eval()
        try:
            out.append(module.weight)
        finally:
            sn.train(was_training)
    return out
