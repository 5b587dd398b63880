"""The distribution of a view pipeline (one column of arXiv:2006.07733, Table 6), read from a
Config: T and T' share every field but the blur and solarisation probabilities, which Config
holds as (T, T') pairs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from byol.config import Config


@dataclass(frozen=True)
class ViewSpec:
    """One view pipeline. Each field is the Config field of the same name."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    solarize_prob: float = 0.0


# Config holds these as (T, T'); every other ViewSpec field is shared by both views.
PER_VIEW = ("blur_prob", "solarize_prob")


def view_specs(config: Config) -> tuple[ViewSpec, ViewSpec]:
    """T and T' from a config."""
    names = [f.name for f in dataclasses.fields(ViewSpec)]
    shared = {n: getattr(config, n) for n in names if n not in PER_VIEW}
    return tuple(
        ViewSpec(**shared, **{n: getattr(config, n)[view] for n in PER_VIEW}) for view in (0, 1)
    )


def blur_kernel_size(image_size: int, fraction: float) -> int:
    """About ``fraction`` of the side, odd, at least 3 (23 at 224 px for 10%)."""
    size = max(int(round(image_size * fraction)), 3)
    return size if size % 2 == 1 else size + 1
