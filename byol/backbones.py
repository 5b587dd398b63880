"""Encoders: torchvision ResNets whose output is the pooled representation y."""

import math
from collections.abc import Callable

from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock


class NarrowResNet(models.ResNet):
    """ResNet-18's layout (BasicBlock, 2-2-2-2) at 1/8 of its width: 8 to 64 channels, 0.17M
    parameters, a 64-d representation. For smoke tests and CI runs of the whole pipeline in
    seconds, and for ablations on a CPU (the `fashion-mnist` budget of `byol ablate`), where it
    learns far beyond its random init in minutes; never for headline results. torchvision ships
    no width option, so the stages are built here
    with torchvision's own blocks and initialisation; the state dict has torchvision's key names.
    """

    def __init__(self, weights: None = None, num_classes: int = 1000) -> None:
        nn.Module.__init__(self)
        widths = (8, 16, 32, 64)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, widths[0], 2)
        self.layer2 = self._make_layer(BasicBlock, widths[1], 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


BACKBONES: dict[str, Callable[..., models.ResNet]] = {
    "resnet18-narrow": NarrowResNet,
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
        width = net.conv1.out_channels
        net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
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
