"""The distribution of a view pipeline (one column of arXiv:2006.07733, Table 6), read from a
Config: T and T' share every field but the blur and solarisation probabilities, which Config
holds as (T, T') pairs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from byol.config import Config


@dataclass(frozen=True)
class ViewSpec:
    """One view pipeline. Each field is the Config field of the same name (for T and T' alike, or
    one element of Config's (T, T') pair); the values come from a Config, never from here."""

    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    flip_prob: float
    jitter_prob: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale_prob: float
    blur_prob: float
    blur_sigma: tuple[float, float]
    blur_kernel_fraction: float
    solarize_prob: float

    @classmethod
    def paper(cls, **changes: object) -> ViewSpec:
        """T of the paper's defaults (Config()), with ``changes``."""
        return dataclasses.replace(view_specs(Config())[0], **changes)


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
