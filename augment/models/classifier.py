"""Downstream classifiers: a small CNN (~49k parameters) and a ResNet-18 adapted to small images.

Both expose ``features(x)`` (the pooled penultimate activations) and ``forward(x)`` (logits), so
the same architecture serves as the downstream classifier and as the domain feature extractor.
Inputs are float images in [-1, 1], ``(N, C, H, W)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: How a classifier's BatchNorm layers treat a batch that mixes real and synthetic images (``evaluate.synthetic_bn``):
#: ``joint``, one BatchNorm over the whole batch; ``split``, the real rows and the synthetic rows normalised
#: by their own batch statistics with shared scale and shift; ``auxiliary``, the synthetic rows through their
#: own scale and shift too (AdvProp's auxiliary BatchNorm, Xie et al. 2020).
SYNTHETIC_BN = ("joint", "split", "auxiliary")


class SplitBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that, in training and with :attr:`split` set to ``n``, normalises a batch's first ``n``
    rows (the real images) and its other rows (the synthetic ones) by their own batch statistics.

    The running statistics, which evaluation uses, follow the real rows only; the synthetic rows take the
    layer's scale and shift, or their own (``auxiliary``: :attr:`aux_weight`, :attr:`aux_bias`, which only
    training uses). With :attr:`split` None (a real-only batch) or in evaluation it is ``nn.BatchNorm2d``.
    Made from a plain layer by :func:`split_batchnorms`; the state dict gains only the auxiliary parameters.

    Example:
        >>> bn = SplitBatchNorm2d(2)
        >>> bn.split = 3
        >>> x = torch.cat([torch.randn(3, 2, 4, 4), 5 + torch.randn(3, 2, 4, 4)])
        >>> bool(bn(x)[3:].mean().abs() < 1e-5), bool(bn.running_mean.abs().max() < 0.5)
        (True, True)
    """

    #: Real rows at the head of the next training batch (None: every row is real).
    split: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.split
        if not self.training or n is None or n >= x.shape[0]:
            return super().forward(x)
        # The auxiliary parameters live in _parameters only (a class attribute would shadow them).
        weight = self._parameters.get("aux_weight", self.weight)
        bias = self._parameters.get("aux_bias", self.bias)
        synthetic = F.batch_norm(x[n:], None, None, weight, bias, True, 0.0, self.eps)
        if n <= 0:
            return synthetic
        return torch.cat([super().forward(x[:n]), synthetic])


def split_batchnorms(model: nn.Module, mode: str) -> list[SplitBatchNorm2d]:
    """Turn ``model``'s BatchNorm2d layers into :class:`SplitBatchNorm2d` in place (``mode`` ``split`` or
    ``auxiliary``, see :data:`SYNTHETIC_BN`); returns them. Weights and statistics are kept; ``auxiliary``
    adds a scale and shift per layer, initialised as the layer's.

    Raises:
        ValueError: ``mode`` is not ``split`` or ``auxiliary``.
    """
    if mode not in SYNTHETIC_BN[1:]:
        raise ValueError(f"synthetic_bn mode must be split or auxiliary, got {mode!r}")
    layers = []
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = SplitBatchNorm2d
            if mode == "auxiliary":
                module.aux_weight = nn.Parameter(module.weight.detach().clone())
                module.aux_bias = nn.Parameter(module.bias.detach().clone())
            layers.append(module)
    return layers


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks, max-pooling between them, global average pooling, a linear head.

    At 28x28 with 10 classes it has 49,802 parameters and costs about 4.6 M multiply-adds per image.

    Example:
        >>> net = SmallCNN(num_classes=10, channels=1, image_size=28)
        >>> sum(p.numel() for p in net.parameters())
        49802
        >>> net(torch.zeros(2, 1, 28, 28)).shape, net.features(torch.zeros(2, 1, 28, 28)).shape
        (torch.Size([2, 10]), torch.Size([2, 80]))
    """

    def __init__(
        self, num_classes: int, channels: int = 1, image_size: int = 28, widths: tuple[int, int, int] = (32, 48, 80)
    ) -> None:
        super().__init__()
        self.num_classes, self.channels, self.image_size = num_classes, channels, image_size
        self.num_features = widths[-1]
        # Pool after a block only while the map stays >= 4x4 (8x8 inputs pool once, 28x28 twice).
        layers: list[nn.Module] = []
        size, cin = image_size, channels
        for i, w in enumerate(widths):
            layers.append(_block(cin, w))
            if i < len(widths) - 1 and size // 2 >= 4 and (i > 0 or image_size >= 16):
                layers.append(nn.MaxPool2d(2))
                size //= 2
            cin = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (``weights=None``) adapted to small images: a 3x3 stride-1 stem
    without max-pooling and ``channels`` input planes.

    Example:
        >>> net = ResNet18(num_classes=3, channels=1, image_size=8)
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 3])
    """

    def __init__(self, num_classes: int, channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.num_classes, self.channels, self.image_size = num_classes, channels, image_size
        net = resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.num_features = net.fc.in_features
        self.head = net.fc
        net.fc = nn.Identity()
        self.body = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


CLASSIFIERS = {"smallcnn": SmallCNN, "resnet18": ResNet18}


def build_classifier(name: str, num_classes: int, channels: int, image_size: int) -> nn.Module:
    """``smallcnn`` or ``resnet18``; raises ValueError naming the unknown architecture."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r} (one of {sorted(CLASSIFIERS)})")
    return CLASSIFIERS[name](num_classes=num_classes, channels=channels, image_size=image_size)
