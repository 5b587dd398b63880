"""What the rest of the pipeline needs to know about a dataset, and where datasets are kept."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from byol.files import expand_home


@dataclass
class DatasetInfo:
    """What the rest of the pipeline needs to know about a dataset."""

    name: str
    classes: list[str]  # [] when unlabelled
    mean: tuple[float, float, float]  # per channel in [0, 1], of the 3-channel RGB images
    std: tuple[float, float, float]
    grayscale: bool  # source was single-channel
    unreadable: list[str] = field(default_factory=list)  # image files skipped as unreadable


def _cache_root() -> Path:
    env = os.environ.get("BYOL_DATA_DIR")
    return expand_home(env) if env else expand_home("~/.cache/byol")


def default_data_dir() -> Path:
    """Where torchvision datasets are stored: $BYOL_DATA_DIR, else ~/.cache/byol/data."""
    env = os.environ.get("BYOL_DATA_DIR")
    return expand_home(env) if env else expand_home("~/.cache/byol/data")
