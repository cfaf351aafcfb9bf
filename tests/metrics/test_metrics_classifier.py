"""Downstream classifier architectures."""

from __future__ import annotations

import pytest
import torch

from augment.models.classifier import ResNet18, SmallCNN, build_classifier


@pytest.mark.parametrize("size", [8, 16, 28, 32])
def test_small_cnn_shapes(size: int) -> None:
    net = SmallCNN(num_classes=3, channels=1, image_size=size)
    x = torch.zeros(2, 1, size, size)
    assert net(x).shape == (2, 3) and net.features(x).shape == (2, net.num_features)


def test_small_cnn_is_about_49k_parameters() -> None:
    assert sum(p.numel() for p in SmallCNN(10, 1, 28).parameters()) == 49802


def test_resnet18_adapted_to_small_images() -> None:
    net = build_classifier("resnet18", num_classes=4, channels=3, image_size=16)
    assert isinstance(net, ResNet18)
    assert net.body.conv1.stride == (1, 1) and isinstance(net.body.maxpool, torch.nn.Identity)
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
    assert net.features(torch.zeros(2, 3, 16, 16)).shape == (2, 512)


def test_unknown_classifier() -> None:
    with pytest.raises(ValueError, match="unknown classifier 'vgg'"):
        build_classifier("vgg", 2, 1, 8)
