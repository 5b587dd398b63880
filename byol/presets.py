"""Named presets: each lists only what it changes from the paper's defaults in ``Config``, with one
comment saying what and why. ``imagenet-paper`` changes nothing: it is the paper.

Keys are those of ``--set`` (short names or dotted paths). What a preset changes in one method's
own settings is listed under ``METHOD_CHANGES[preset][method]`` and applies when that method is
chosen, so ``--preset fashion-mnist --method barlow`` gets the preset's Barlow Twins projector.
"""

from __future__ import annotations

from typing import Any

from byol.config import Config, apply_changes, apply_overrides
from byol.errors import ConfigError
from byol.methods import METHODS
from byol.settings import split_item

PRESETS: dict[str, dict[str, Any]] = {
    # Every number of the paper (docs/method.md): ResNet-50, 224 px, LARS 0.2 x B/256, batch 4096,
    # 1000 epochs.
    "imagenet-paper": {},
    # CIFAR-10, 32 px: CIFAR-stem ResNet-18, batch 512, 800 epochs, tau 0.99, no blur (usual repro).
    "cifar10": dict(
        dataset="cifar10",
        image_size=32,
        eval_crop_fraction=1.0,
        backbone="resnet18",
        cifar_stem=True,
        blur_prob=0.0,  # both views
        batch_size=512,
        base_lr=1.0,
        weight_decay=1e-6,
        epochs=800,
        tau_base=0.99,
        num_workers=4,
        channels_last="true",
    ),
    # STL-10, 96 px, unlabelled+train: ResNet-18, batch 256, 200 epochs, tau 0.99 (usual repro).
    "stl10": dict(
        dataset="stl10",
        image_size=96,
        eval_crop_fraction=1.0,
        backbone="resnet18",
        batch_size=256,
        base_lr=1.0,
        weight_decay=1e-6,
        epochs=200,
        tau_base=0.99,
        num_workers=4,
        channels_last="true",
    ),
    "fashion-mnist": {},  # below, with the measurements that shaped it
    # ViT-S/4: AdamW + warm-up, not LARS (ViTs train unstably under it), 4 px patches for 32 px.
    "vit-small-cifar10": dict(
        dataset="cifar10",
        image_size=32,
        eval_crop_fraction=1.0,
        backbone="timm:vit_small_patch16_224",
        backbone_kwargs="patch_size=4",
        blur_prob=0.0,  # both views
        optimizer="adamw",
        base_lr=5e-4,
        weight_decay=0.05,
        batch_size=512,
        epochs=800,
        warmup_epochs=20.0,
        tau_base=0.99,
        num_workers=4,
    ),
    "vit-tiny-fashion-mnist": {},  # below, after the ResNet-18 preset it is measured against
}

PRESETS["fashion-mnist"] = dict(
    # Minutes on 2 CPU cores: ResNet-18 at the native 28 px, batch 128, 4 passes over 30k images,
    # no random crop (the garments are centred, and crops cost accuracy at this budget), no blur,
    # LARS 1.0 x B/256, tau_base 0.97 (the official 40-epoch value), and lr and tau schedules
    # sized for 8 epochs, so the run never idles at an lr near 0. Why each: docs/cpu-preset.md.
    dataset="fashion-mnist",
    image_size=28,
    eval_crop_fraction=1.0,
    backbone="resnet18",
    crop_scale=(1.0, 1.0),
    blur_prob=0.0,  # both views
    batch_size=128,
    base_lr=1.0,
    weight_decay=1e-6,
    train_subset=30000,
    epochs=4,
    warmup_epochs=0.1,
    tau_base=0.97,
    schedule_epochs=8,
    num_workers=1,
    knn_bank_subset=10000,
)

METHOD_CHANGES: dict[str, dict[str, dict[str, Any]]] = {
    "fashion-mnist": {
        # q_theta trained alone for 50 steps, then at 30x the lr: BYOL starts slowly otherwise.
        "byol": {"predictor_warmup_steps": 50, "predictor_lr_scale": 30.0},
        # Baselines at this scale: Barlow Twins' 8192-wide projector (VICReg's expander is the
        # same) alone would be 138M parameters, and a 65536-key queue is larger than the 30k
        # images, so MoCo would hold stale copies of the batch's own images as negatives.
        "barlow": {"projector_dim": 1024},
        "moco": {"queue_size": 4096},
        "vicreg": {"expander_dim": 1024},
    },
}


# CIFAR-10 at the fashion-mnist recipe's CPU scale, so that ablations have a colour dataset (the
# paper's strongest augmentation claim is about colour): the same recipe at 32 px, with the random
# crop back at the paper's (0.08, 1) scale, since CIFAR-10's objects are neither centred nor alone.
PRESETS["cifar10-cpu"] = {
    **PRESETS["fashion-mnist"],
    "dataset": "cifar10",
    "image_size": 32,
    "crop_scale": (0.08, 1.0),
}


# fashion-mnist with ViT-Ti/4 (7x7 tokens), AdamW + warm-up, not LARS: ViTs train unstably under it.
PRESETS["vit-tiny-fashion-mnist"] = {
    **PRESETS["fashion-mnist"],
    "backbone": "timm:vit_tiny_patch16_224",
    "backbone_kwargs": "patch_size=4",
    "optimizer": "adamw",
    "base_lr": 5e-4,
    "weight_decay": 0.05,
    "warmup_epochs": 0.5,
}
METHOD_CHANGES["cifar10-cpu"] = METHOD_CHANGES["fashion-mnist"]
METHOD_CHANGES["vit-tiny-fashion-mnist"] = {
    **METHOD_CHANGES["fashion-mnist"],
    "byol": {**METHOD_CHANGES["fashion-mnist"]["byol"], "predictor_lr_scale": 10.0},
}


def preset(name: str, method: str = "byol") -> Config:
    """The config of preset ``name`` with ``method`` (and the preset's changes to its settings)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not one of {', '.join(METHODS)}.")
    config = apply_changes(Config(), {**PRESETS[name], "method": method})
    own = METHOD_CHANGES.get(name, {}).get(method, {})
    return apply_changes(config, {f"method.{key}": value for key, value in own.items()})


def configure(name: str, overrides: list[str], method: str | None = None) -> Config:
    """Preset ``name`` with ``--set`` ``overrides`` applied; the method is ``method``, else the
    last ``method=`` among the overrides, else BYOL, and comes with the preset's changes to it."""
    chosen = [text for key, text in map(split_item, overrides) if key == "method"]
    method = method or (chosen[-1] if chosen else "byol")
    rest = [item for item in overrides if split_item(item)[0] != "method"]
    return apply_overrides(preset(name, method), rest)


__all__ = ["METHOD_CHANGES", "PRESETS", "configure", "preset"]
