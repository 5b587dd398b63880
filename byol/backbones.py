"""Encoders: torchvision ResNets whose output is the pooled representation y."""

import math
from collections.abc import Callable

from torch import nn
from torchvision import models

BACKBONES: dict[str, Callable[..., models.ResNet]] = {
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "resnet101": models.resnet101,
    "resnet152": models.resnet152,
    "wide_resnet50_2": models.wide_resnet50_2,
}


def build_backbone(name: str, cifar_stem: bool = False) -> tuple[nn.Module, int]:
    """Return (encoder, feature_dim). The encoder maps Bx3xHxW images to BxD pooled features.

    The module is a plain torchvision ResNet with ``fc`` replaced by Identity, so its state dict
    loads into ``torchvision.models.<name>()`` (all keys but ``fc.*``).
    """
    net = torchvision_model(name, cifar_stem)
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


def torchvision_model(name: str, cifar_stem: bool = False) -> models.ResNet:
    """The plain torchvision model (with its fc head) that an exported encoder loads into."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    net = BACKBONES[name](weights=None)
    if cifar_stem:
        # Small images: keep spatial resolution in the stem (common practice for 32 px inputs).
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    return net


def last_stage_input_side(image_size: int, cifar_stem: bool = False) -> int:
    """Side of the map that enters layer4's stride-2 convolution: the stem and layers 2-3 each
    halve it, rounding up (the torchvision stem twice: convolution and max-pool)."""
    return math.ceil(image_size / (4 if cifar_stem else 16))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "BACKBONES",
    "build_backbone",
    "torchvision_model",
    "count_parameters",
    "last_stage_input_side",
]
