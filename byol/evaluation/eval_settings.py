"""The evaluation's own settings (``byol eval --set``), next to the run's Config."""

from __future__ import annotations

from dataclasses import dataclass

from byol import settings
from byol.config import Config
from byol.errors import ConfigError


@dataclass
class EvalSettings:
    """Evaluation hyper-parameters; ``--set key=value`` reaches these and any Config field."""

    seed: int = 0
    knn_ks: tuple[int, ...] = (20, 200)
    knn_temperature: float = 0.1
    linear_mode: str = "fast"  # fast: cached centre-view features | paper: crop + flip views
    linear_lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    linear_epochs: int = 50
    linear_batch_size: int = 256
    val_fraction: float = 0.1  # carved from the training set to choose the linear lr
    label_fractions: tuple[float, ...] = (0.01, 0.1)
    finetune_epochs: tuple[int, ...] = (30, 15)  # one per label fraction
    finetune_lr: float = 0.05
    finetune_batch_size: int = 64
    finetune_weight_decay: float = 5e-4
    train_crop_scale: tuple[float, ...] = (0.08, 1.0)
    transfer_fractions: tuple[float, ...] = (1.0,)  # the paper fine-tunes on all labels
    transfer_epochs: tuple[int, ...] = (10,)


def split_overrides(overrides: list[str]) -> tuple[EvalSettings, list[str]]:
    """``key=value`` strings -> (EvalSettings, the rest for the Config)."""
    names = settings.field_names(EvalSettings)
    for item in overrides:
        key, _ = settings.split_item(item)
        if key not in names and key not in settings.field_names(Config):
            raise ConfigError(
                f"unknown setting {key!r}; evaluation settings are {', '.join(sorted(names))}, "
                "and any key that `byol config` prints is accepted too."
            )
    mine = [item for item in overrides if settings.split_item(item)[0] in names]
    rest = [item for item in overrides if settings.split_item(item)[0] not in names]
    result = settings.apply_overrides(EvalSettings(), mine, "evaluation setting")
    settings.check_rules(result, RULES)
    for fractions, epochs in (
        (result.label_fractions, result.finetune_epochs),
        (result.transfer_fractions, result.transfer_epochs),
    ):
        if len(fractions) != len(epochs) or not all(0 < f <= 1 for f in fractions):
            raise ConfigError(
                f"label fractions {fractions} must lie in (0, 1] and come with one epoch count "
                f"each (got {epochs}); set both, e.g. label_fractions=0.01,0.1 "
                "finetune_epochs=30,15."
            )
    return result, rest


R = settings.Rule
FRACTION = R(above=0.0, high=1.0)
# What each evaluation setting accepts beyond its type (tests/test_config.py sweeps them).
RULES: dict[str, settings.Rule] = {
    "seed": R(low=0, high=2**32 - 1),
    "knn_ks": R(low=1),
    "knn_temperature": R(above=0.0),
    "linear_mode": R(choices=("fast", "paper")),
    "linear_lrs": R(above=0.0),
    "linear_epochs": R(low=1),
    "linear_batch_size": R(low=1),
    "val_fraction": R(above=0.0, high=0.5),
    "label_fractions": FRACTION,
    "finetune_epochs": R(low=1),
    "finetune_lr": R(above=0.0),
    "finetune_batch_size": R(low=2),
    "finetune_weight_decay": R(low=0.0),
    "train_crop_scale": R(above=0.0, high=1.0, ordered=True),
    "transfer_fractions": FRACTION,
    "transfer_epochs": R(low=1),
}
