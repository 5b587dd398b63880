"""The evaluation's own settings (``byol eval --set``), next to the run's Config."""

from __future__ import annotations

from dataclasses import dataclass

from byol import settings
from byol.config import is_config_key
from byol.errors import ConfigError
from byol.settings import setting

_FRACTION = {"above": 0.0, "high": 1.0}


@dataclass(frozen=True)
class EvalSettings:
    """Evaluation hyper-parameters; ``--set key=value`` reaches these and any run setting."""

    seed: int = setting(0, "seeds subsets, probes and fine-tuning", low=0, high=2**32 - 1)
    train_images: int = setting(
        0, "kNN bank and linear probe: a class-balanced subset of this many (0 = all)", low=0
    )
    knn_ks: tuple[int, ...] = setting((20, 200), "neighbours of the weighted kNN", low=1)
    knn_temperature: float = setting(0.1, "temperature of the kNN weights", above=0.0)
    linear_mode: str = setting(
        "fast",
        "fast: cached centre-view features | paper: crop + flip views",
        choices=("fast", "paper"),
    )
    linear_lrs: tuple[float, ...] = setting(
        (0.01, 0.03, 0.1, 0.3, 1.0), "linear probe: learning rates tried", above=0.0
    )
    linear_epochs: int = setting(50, "linear probe: epochs", low=1)
    linear_batch_size: int = setting(256, "linear probe: batch", low=1)
    val_fraction: float = setting(
        0.1, "share of the training set held out to choose the linear lr", above=0.0, high=0.5
    )
    label_fractions: tuple[float, ...] = setting(
        (0.01, 0.1), "fine-tuning: shares of the labels", **_FRACTION
    )
    finetune_epochs: tuple[int, ...] = setting(
        (30, 15), "fine-tuning: epochs, one per label fraction", low=1
    )
    finetune_lr: float = setting(0.05, "fine-tuning: learning rate", above=0.0)
    finetune_batch_size: int = setting(64, "fine-tuning: batch", low=2)
    finetune_weight_decay: float = setting(5e-4, "fine-tuning: weight decay", low=0.0)
    train_crop_scale: tuple[float, float] = setting(
        (0.08, 1.0),
        "fine-tuning and paper probe: crop scale range",
        above=0.0,
        high=1.0,
        ordered=True,
    )
    transfer_fractions: tuple[float, ...] = setting(
        (1.0,), "transfer: shares of the labels (the paper fine-tunes on all)", **_FRACTION
    )
    transfer_epochs: tuple[int, ...] = setting((10,), "transfer: epochs, one per fraction", low=1)


def split_overrides(overrides: list[str]) -> tuple[EvalSettings, list[str]]:
    """``key=value`` strings -> (EvalSettings, the rest for the Config)."""
    defaults = EvalSettings()
    for item in overrides:
        key, _ = settings.split_item(item)
        if not settings.has_key(defaults, key) and not is_config_key(key):
            names = sorted(leaf.path for leaf in settings.leaves(defaults))
            raise ConfigError(
                f"unknown setting {key!r}; evaluation settings are {', '.join(names)}, "
                "and any key that `byol config` prints is accepted too."
            )
    mine = [item for item in overrides if settings.has_key(defaults, settings.split_item(item)[0])]
    rest = [item for item in overrides if item not in mine]
    result = settings.apply_overrides(defaults, mine, "evaluation setting")
    settings.check_rules(result)
    for names, fractions, epochs in (
        (("label_fractions", "finetune_epochs"), result.label_fractions, result.finetune_epochs),
        (
            ("transfer_fractions", "transfer_epochs"),
            result.transfer_fractions,
            result.transfer_epochs,
        ),
    ):
        if len(fractions) != len(epochs) or not all(0 < f <= 1 for f in fractions):
            raise ConfigError(
                f"{names[0]}={','.join(map(str, fractions))} must lie in (0, 1] and come with one "
                f"count of {names[1]} each (got {','.join(map(str, epochs))}); set both, e.g. "
                f"{names[0]}=0.01,0.1 {names[1]}=30,15."
            )
    return result, rest
