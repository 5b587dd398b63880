"""Encoders whose output is the representation y: torchvision ResNets (pooled features), and
any timm model as ``timm:<name>`` (its pooled or class-token feature: timm's ``num_classes=0``).
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import math
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock

from byol.errors import ConfigError

TIMM = "timm:"  # backbone=timm:<name> builds timm.create_model(<name>, num_classes=0)
TIMM_EXTRA = "pip install 'byol[timm]'"
NO_LOADING = ("checkpoint_path", "cache_dir")


class NarrowResNet(models.ResNet):
    """ResNet-18's layout (BasicBlock, 2-2-2-2) at 1/8 of its width: 8 to 64 channels, 0.17M
    parameters, a 64-d representation. For smoke tests and CI runs of the whole pipeline in
    seconds, and for ablations on a CPU (the `fashion-mnist` budget of `byol ablate`), where it
    learns far beyond its random init in minutes; never for headline results. torchvision ships
    no width option, so the stages are built here with torchvision's own blocks and
    initialisation; the state dict has torchvision's key names.
    """

    widths: tuple[int, int, int, int] = (8, 16, 32, 64)

    def __init__(self, weights: None = None, num_classes: int = 1000) -> None:
        nn.Module.__init__(self)
        widths = self.widths
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


class HalfResNet(NarrowResNet):
    """ResNet-18 at half its width: 32 to 256 channels, 2.8M parameters, a 256-d representation.
    The CPU budget between the 1/8-width network (learns fast, plateaus low) and the full one
    (about four times its cost per step)."""

    widths = (32, 64, 128, 256)


BACKBONES: dict[str, Callable[..., models.ResNet]] = {
    "resnet18-narrow": NarrowResNet,
    "resnet18-half": HalfResNet,
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "resnet101": models.resnet101,
    "resnet152": models.resnet152,
    "wide_resnet50_2": models.wide_resnet50_2,
}


def build_backbone(
    name: str, cifar_stem: bool = False, image_size: int | None = None, kwargs: str = ""
) -> tuple[nn.Module, int]:
    """Return (encoder, feature_dim). The encoder maps Bx3xHxW images to BxD features.

    A torchvision name gives the plain torchvision ResNet with ``fc`` replaced by Identity, so its
    state dict loads into ``torchvision.models.<name>()`` (all keys but ``fc.*``). ``timm:<name>``
    gives ``timm.create_model(<name>, num_classes=0, **kwargs)``, whose state dict is the
    encoder's; a model with a fixed input size (ViTs) is built for ``image_size``.
    """
    if is_timm(name):
        net = timm_model(name, parse_kwargs(kwargs), image_size)
        return net, int(net.num_features)
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


def is_timm(name: str) -> bool:
    return name.startswith(TIMM)


def import_timm() -> ModuleType:
    """timm, or the one-line error that names the extra installing it."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        message = f"timm backbones need timm, which is not installed: {TIMM_EXTRA}."
        raise ConfigError(message) from None


def timm_model(name: str, kwargs: dict[str, Any], image_size: int | None = None) -> nn.Module:
    """``timm.create_model(name, num_classes=0, **kwargs)``; when the model has a fixed input
    size other than ``image_size`` and kwargs do not set one, it is rebuilt for ``image_size``
    (a ViT's position embeddings are sized for one image size)."""
    timm = import_timm()
    model_name = name.removeprefix(TIMM)
    refuse_loading(kwargs)
    try:
        net = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        side = input_side(net)
        if image_size and "img_size" not in kwargs and side not in (None, image_size):
            net = timm.create_model(
                model_name, pretrained=False, num_classes=0, img_size=image_size, **kwargs
            )
    except RuntimeError as error:  # timm's word for an unknown name
        if "Unknown model" not in str(error):
            raise
        raise ConfigError(
            f"timm has no model {model_name!r}; `byol models 'timm:*'` lists them."
        ) from None
    except TypeError as error:  # a keyword this architecture does not take
        raise ConfigError(f"backbone_kwargs do not suit {name}: {error}.") from None
    return net


def refuse_loading(kwargs: dict[str, Any]) -> None:
    """Arguments that make timm read or fetch weights are refused: an encoder file's metadata
    could name a pickle to load, and a run's initial weights are byol's to set."""
    loading = [k for k in kwargs if k.startswith("pretrained") or k in NO_LOADING]
    if loading:
        raise ConfigError(
            f"backbone_kwargs may not set {loading[0]}: byol trains from random weights and loads "
            "only its own encoder files."
        )


def input_side(net: nn.Module) -> int | None:
    """The image side a timm model is built for, None when it takes any size (CNNs)."""
    size = getattr(getattr(net, "patch_embed", None), "img_size", None)
    if size is None or getattr(net.patch_embed, "dynamic_img_size", False):
        return None
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def parse_kwargs(text: str) -> dict[str, Any]:
    """``"patch_size=4,depth=6"`` -> {"patch_size": 4, "depth": 6}: Python literals (numbers,
    True, tuples), anything else a string. A comma starts a new key only before ``name=``, so
    ``depths=(2,2,6,2)`` stays one value."""
    kwargs: dict[str, Any] = {}
    for item in filter(str.strip, re.split(r",\s*(?=[A-Za-z_]\w*\s*=)", text.strip())):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(
                f"backbone_kwargs={text!r}: {item!r} is not name=value; write e.g. "
                "backbone_kwargs=patch_size=4,depth=6."
            )
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = value.strip()
    return kwargs


def format_kwargs(kwargs: dict[str, Any]) -> str:
    """The inverse of ``parse_kwargs``."""
    return ",".join(f"{k}={v!r}" for k, v in kwargs.items())


def check_backbone(name: str, kwargs: str, cifar_stem: bool) -> None:
    """What a config's backbone fields must agree on; a timm name must be a timm model (checked
    here, before any data is read, so a typo or a missing timm stops the run at once)."""
    parsed = parse_kwargs(kwargs)
    if not is_timm(name):
        if parsed:
            raise ConfigError(f"backbone_kwargs apply to timm backbones, not {name}; drop them.")
        return
    refuse_loading(parsed)
    if cifar_stem:
        raise ConfigError(
            f"cifar_stem applies to torchvision ResNets, not {name}; set cifar_stem=false (a ViT "
            "takes backbone_kwargs=patch_size=4 for small images instead)."
        )
    if not import_timm().is_model(name.removeprefix(TIMM)):
        raise ConfigError(
            f"timm has no model {name.removeprefix(TIMM)!r}; `byol models 'timm:*'` lists them."
        )


def available_backbones(pattern: str = "*") -> list[str]:
    """Backbone names matching a shell-style ``pattern``: torchvision's, then timm's (as
    ``timm:<name>``) when timm is installed. A pattern without ``timm:`` also matches timm's
    bare names, so ``vit*`` finds the ViTs."""
    names = [n for n in BACKBONES if fnmatch.fnmatch(n, pattern)]
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        return names
    bare = pattern.removeprefix(TIMM)
    return names + [TIMM + n for n in timm.list_models() if fnmatch.fnmatch(n, bare)]


def last_stage_input_side(image_size: int, cifar_stem: bool = False) -> int:
    """Side of the map that enters layer4's stride-2 convolution: the stem and layers 2-3 each
    halve it, rounding up (the torchvision stem twice: convolution and max-pool)."""
    return math.ceil(image_size / (4 if cifar_stem else 16))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "BACKBONES",
    "TIMM",
    "available_backbones",
    "check_backbone",
    "format_kwargs",
    "is_timm",
    "parse_kwargs",
    "timm_model",
    "build_backbone",
    "torchvision_model",
    "count_parameters",
    "last_stage_input_side",
]
