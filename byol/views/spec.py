"""The settings of one view pipeline: one column of arXiv:2006.07733, Table 6. The run's config
holds two, T and T' (``views.1`` and ``views.2``); they differ only in the blur and solarisation
probabilities."""

from __future__ import annotations

from dataclasses import dataclass

from byol.settings import setting


@dataclass(frozen=True)
class ViewSpec:
    """One view pipeline's distribution; the defaults are the paper's T."""

    crop_scale: tuple[float, float] = setting(
        (0.08, 1.0),
        "random resized crop: range of the crop's share of the image area",
        above=0.0,
        high=1.0,
        ordered=True,
    )
    crop_ratio: tuple[float, float] = setting(
        (3 / 4, 4 / 3),
        "random resized crop: range of the crop's aspect ratio",
        above=0.0,
        ordered=True,
    )
    flip_prob: float = setting(0.5, "probability of a horizontal flip", low=0.0, high=1.0)
    jitter_prob: float = setting(0.8, "probability of colour jitter", low=0.0, high=1.0)
    brightness: float = setting(0.4, "colour jitter: brightness factor in 1 +- this", low=0.0)
    contrast: float = setting(0.4, "colour jitter: contrast factor in 1 +- this", low=0.0)
    saturation: float = setting(0.2, "colour jitter: saturation factor in 1 +- this", low=0.0)
    hue: float = setting(0.1, "colour jitter: hue shift in +- this", low=0.0, high=0.5)
    grayscale_prob: float = setting(0.2, "probability of grayscale", low=0.0, high=1.0)
    blur_prob: float = setting(1.0, "probability of Gaussian blur", low=0.0, high=1.0)
    blur_sigma: tuple[float, float] = setting(
        (0.1, 2.0), "Gaussian blur: range of sigma, in pixels", above=0.0, ordered=True
    )
    blur_kernel_fraction: float = setting(
        0.1,
        "Gaussian blur: kernel side as a share of the image side (23 px at 224)",
        above=0.0,
        high=1.0,
    )
    solarize_prob: float = setting(0.0, "probability of solarisation", low=0.0, high=1.0)


def paper_view_specs() -> tuple[ViewSpec, ViewSpec]:
    """The paper's T and T': T always blurs and never solarises, T' blurs 10% and solarises 20%
    of the time."""
    return ViewSpec(), ViewSpec(blur_prob=0.1, solarize_prob=0.2)


def blur_kernel_size(image_size: int, fraction: float) -> int:
    """About ``fraction`` of the side, odd, at least 3 (23 at 224 px for 10%)."""
    size = max(int(round(image_size * fraction)), 3)
    return size if size % 2 == 1 else size + 1
