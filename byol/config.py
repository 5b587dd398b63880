"""Run configuration: one dataclass whose defaults are the paper's numbers (docs/method.md maps
each field to arXiv:2006.07733); the named presets that change some of them are in
``byol/presets.py``.

Every field can be overridden with ``--set key=value`` (``byol/settings.py``): values are parsed
against the type of the default, and an unknown key or a value of the wrong type is a one-line
error listing the choices.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byol import settings
from byol.backbones import BACKBONES, TIMM, check_backbone
from byol.errors import ConfigError
from byol.loggers import check_installed

# What `byol pretrain --method` can train, with the names tables and plots give them.
METHODS = {"byol": "BYOL", "simclr": "SimCLR", "barlow": "Barlow Twins", "moco": "MoCo v2"}


@dataclass
class Config:
    # --- data ---
    dataset: str = (
        "imagenet"  # fashion-mnist | cifar10 | cifar100 | stl10 | cifar10-jpeg | a folder
    )
    data_dir: str = ""  # where the dataset lies ("" = its usual place)
    download: bool = False  # fetch torchvision datasets from the internet when absent
    image_size: int = 224
    train_subset: int = 0  # pretrain on this many images only (0 = all)
    strict_images: bool = False  # stop at the first unreadable image file instead of skipping it

    # --- encoder and heads (arXiv:2006.07733, Section 3.3) ---
    backbone: str = "resnet50"  # a torchvision ResNet, or timm:<name> (`byol models` lists them)
    # timm backbones only: keyword arguments of timm.create_model, e.g. patch_size=4,depth=6
    backbone_kwargs: str = ""
    cifar_stem: bool = False  # 3x3 stride-1 first convolution, no max-pool
    projector_hidden_dim: int = 4096
    projection_dim: int = 256
    predictor_hidden_dim: int = 4096

    # --- method: BYOL (arXiv:2006.07733, Section 3.1) or a baseline, same data, encoder, loop ---
    method: str = "byol"  # byol | simclr | barlow | moco
    use_predictor: bool = True  # false: BYOL without q_theta (an ablation; it collapses)
    # Not in the paper, for short budgets: train q_theta alone for this many first steps, so its
    # random initial map does not steer the encoder (fashion-mnist preset: kNN +2 points at 300
    # steps, +1 with predictor_lr_scale=10). Only BYOL with its predictor has one; the baselines
    # and use_predictor=false ignore it.
    predictor_warmup_steps: int = 0
    # Not in the paper either: q_theta's learning rate is this times the others' (Tian et al.,
    # ICML 2021, find a faster predictor helps; fashion-mnist preset: 30, 10x gave +1.1 kNN at 400
    # steps, 30x 0.2-0.4 more).
    predictor_lr_scale: float = 1.0
    simclr_temperature: float = 0.1  # NT-Xent temperature (the paper's range: 0.1-0.5)
    barlow_lambda: float = 5e-3  # weight of the off-diagonal (redundancy) term
    barlow_projector_dim: int = 8192  # width of each of the projector's three layers
    moco_queue_size: int = 65536  # negatives kept from earlier steps
    moco_temperature: float = 0.2

    # --- views T and T' (arXiv:2006.07733, Table 6); pairs are (T, T') ---
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1  # 23x23 at 224 px
    solarize_prob: tuple[float, float] = (0.0, 0.2)

    # --- optimisation (arXiv:2006.07733, Section 3.3) ---
    optimizer: str = "lars"  # lars | sgd | adamw
    base_lr: float = 0.2  # learning rate = base_lr * batch_size / 256
    batch_size: int = 4096
    weight_decay: float = 1.5e-6
    momentum: float = 0.9
    lars_trust_coefficient: float = 1e-3
    epochs: int = 1000
    warmup_epochs: float = 10.0
    # Not in the paper: the lr and tau schedules span this many epochs (0 = epochs). More than
    # epochs stops the run before they decay, for a budget too short to spend steps at lr near 0.
    schedule_epochs: float = 0.0
    tau_base: float = 0.996
    tau_schedule: str = "cosine"  # cosine: tau_base -> 1 | constant: tau_base throughout
    accumulation_steps: int = 1  # micro-batches per optimizer step (BN statistics per micro-batch)

    # --- several processes under torchrun (docs/distributed.md); batch_size is the global batch ---
    sync_batchnorm: bool = True  # BN statistics over the global batch (Section 3.3); false: per GPU

    # --- runtime ---
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # fp32 | bf16 (autocast) | auto: bf16 on CUDA and native-bf16 CPUs
    channels_last: bool = False
    views: str = "auto"  # batched (on the device; files: crops in workers) | per-image | auto
    compile: bool = False  # torch.compile the encoder (slow first step; pays off on long runs)
    num_workers: int = 8
    threads: int = 0  # torch intra-op threads on CPU (0 = torch's default)
    seed: int = 0
    log_every_steps: int = 10
    loggers: str = "tensorboard"  # comma-separated: tensorboard, mlflow, wandb (extras), or none
    checkpoint_every_steps: int = 0  # 0 = at the end of every epoch only
    max_minutes: float = 0.0  # stop early, cleanly, after this much training time (0 = off)

    # --- online quality signal: weighted kNN on the frozen online encoder ---
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_every_epochs: int = 1  # 0 = only at the end of the run
    knn_bank_subset: int = 0  # per-epoch kNN uses this many training images as bank (0 = all)
    knn_final: bool = True  # score the final encoder into summary.json (ablations score apart)
    knn_references: bool = True  # final summary also scores a random-init encoder and raw pixels
    eval_batch_size: int = 512
    eval_crop_fraction: float = 0.875  # eval view: resize to size/fraction, centre-crop size

    def validate(self) -> None:
        """Every field against its rule (RULES below): one ConfigError naming the first bad one."""
        settings.check_rules(self, RULES)
        check_backbone(self.backbone, self.backbone_kwargs, self.cifar_stem)
        check_installed(self.loggers)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path: Path) -> Config:
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ConfigError(
                f"{path} is not a readable JSON config ({error}); fix or delete it."
            ) from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} holds a JSON {type(values).__name__}, not an object.")
        try:
            return from_dict(values)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None


R = settings.Rule
PROBABILITY = R(low=0.0, high=1.0)
POSITIVE, COUNT, AT_LEAST_ONE = R(above=0.0), R(low=0), R(low=1)
# What each field accepts beyond its type; tests/test_config.py checks that every field has a rule
# (or is a bool, which the parser already restricts) and sweeps each with a value out of range.
RULES: dict[str, settings.Rule] = {
    "dataset": R(nonempty=True),
    "image_size": R(low=8),  # below 8 px a ResNet's stride-32 trunk sees less than a pixel
    "train_subset": COUNT,
    "backbone": R(choices=tuple(BACKBONES), prefix=TIMM),
    "backbone_kwargs": R(),  # parsed and checked against the backbone by validate()
    "projector_hidden_dim": AT_LEAST_ONE,
    "projection_dim": AT_LEAST_ONE,
    "predictor_hidden_dim": AT_LEAST_ONE,
    "method": R(choices=tuple(METHODS)),
    "predictor_warmup_steps": COUNT,
    "predictor_lr_scale": POSITIVE,
    "simclr_temperature": POSITIVE,
    "barlow_lambda": R(low=0.0),
    "barlow_projector_dim": AT_LEAST_ONE,
    "moco_queue_size": AT_LEAST_ONE,
    "moco_temperature": POSITIVE,
    "crop_scale": R(above=0.0, high=1.0, ordered=True),
    "crop_ratio": R(above=0.0, ordered=True),
    "flip_prob": PROBABILITY,
    "jitter_prob": PROBABILITY,
    "brightness": R(low=0.0),
    "contrast": R(low=0.0),
    "saturation": R(low=0.0),
    "hue": R(low=0.0, high=0.5),
    "grayscale_prob": PROBABILITY,
    "blur_prob": PROBABILITY,
    "blur_sigma": R(above=0.0, ordered=True),
    "blur_kernel_fraction": R(above=0.0, high=1.0),
    "solarize_prob": PROBABILITY,
    "optimizer": R(choices=("lars", "sgd", "adamw")),
    "base_lr": POSITIVE,
    "batch_size": R(low=2),  # batch norm needs two images
    "weight_decay": R(low=0.0),
    "momentum": R(low=0.0, high=0.999),
    "lars_trust_coefficient": POSITIVE,
    "epochs": AT_LEAST_ONE,
    "warmup_epochs": R(low=0.0),
    "schedule_epochs": R(low=0.0),
    "tau_base": PROBABILITY,
    "tau_schedule": R(choices=("cosine", "constant")),
    "accumulation_steps": AT_LEAST_ONE,
    "device": R(pattern=r"auto|cpu|cuda|cuda:[0-9]+|mps"),
    "precision": R(choices=("auto", "fp32", "bf16")),
    "views": R(choices=("auto", "batched", "per-image")),
    "num_workers": COUNT,
    "threads": COUNT,
    "seed": R(low=0, high=2**32 - 1),
    "log_every_steps": AT_LEAST_ONE,
    "loggers": R(pattern=r"none|(tensorboard|mlflow|wandb)(,(tensorboard|mlflow|wandb))*"),
    "checkpoint_every_steps": COUNT,
    "max_minutes": R(low=0.0),
    "knn_k": AT_LEAST_ONE,
    "knn_temperature": POSITIVE,
    "knn_every_epochs": COUNT,
    "knn_bank_subset": COUNT,
    "eval_batch_size": AT_LEAST_ONE,
    "eval_crop_fraction": R(above=0.0, high=1.0),
    "data_dir": R(),  # any path, "" for the usual place: checked where it is read
}


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` strings, each parsed against the type of the field's default."""
    return settings.apply_overrides(config, overrides)


def from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a Config from a saved dict (lists become tuples); unknown keys and values of the
    wrong type are errors."""
    return settings.from_dict(Config, values)


__all__ = ["Config", "METHODS", "apply_overrides", "from_dict"]
