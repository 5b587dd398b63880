"""The paper's view pipelines T and T' (arXiv:2006.07733, Table 6), one image at a time.

Each view first *draws* its parameters (crop box, flip, jitter factors and order, grayscale, blur
sigma, solarisation) from a ``torch.Generator``, then *applies* them with torchvision.transforms.v2
functional ops. Drawing from an explicit generator, seeded per sample, makes every image's views
reproducible whatever the number of DataLoader workers, so a resumed run sees exactly the views an
uninterrupted one would, and the draws can be counted in tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from byol.views.spec import ViewSpec, blur_kernel_size


@dataclass(frozen=True)
class ViewParams:
    """One draw of a view pipeline for one image. ``None`` means the operation is not applied."""

    crop: tuple[int, int, int, int]  # top, left, height, width in source pixels
    flip: bool
    jitter: tuple[float, float, float, float] | None  # brightness, contrast, saturation, hue
    jitter_order: tuple[int, ...]
    grayscale: bool
    blur_sigma: float | None
    solarize: bool


def as_rgb_tensor(image: torch.Tensor | Image.Image) -> torch.Tensor:
    """Accept what users hold: PIL images of any mode, or uint8 tensors with 1 or 3 channels."""
    if isinstance(image, Image.Image):
        image = TF.pil_to_tensor(image.convert("RGB"))
    if image.ndim == 2:
        image = image[None]
    if image.shape[-3] == 1:
        image = image.expand(3, *image.shape[-2:])
    return image


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _bernoulli(p: float, generator: torch.Generator | None) -> bool:
    return torch.rand((), generator=generator).item() < p


def sample_crop(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (torchvision's algorithm), drawn from an explicit generator."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    # Fallback after 10 misses: the largest central crop within the ratio range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class ViewTransform:
    """One view pipeline: uint8 3xHxW image -> normalised float 3xSxS view."""

    def __init__(
        self,
        spec: ViewSpec,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        grayscale_source: bool = False,
    ) -> None:
        self.spec = spec
        self.image_size = image_size
        self.mean, self.std = list(mean), list(std)
        self.kernel_size = blur_kernel_size(image_size, spec.blur_kernel_fraction)
        # Saturation, hue and grayscale leave a gray image unchanged: skip the work, keep the draws.
        self.grayscale_source = grayscale_source

    def sample(
        self, height: int, width: int, generator: torch.Generator | None = None
    ) -> ViewParams:
        s = self.spec
        crop = sample_crop(height, width, s.crop_scale, s.crop_ratio, generator)
        flip = _bernoulli(s.flip_prob, generator)
        jitter = None
        if _bernoulli(s.jitter_prob, generator):
            jitter = (
                _uniform(max(0.0, 1 - s.brightness), 1 + s.brightness, generator),
                _uniform(max(0.0, 1 - s.contrast), 1 + s.contrast, generator),
                _uniform(max(0.0, 1 - s.saturation), 1 + s.saturation, generator),
                _uniform(-s.hue, s.hue, generator),
            )
        order = tuple(torch.randperm(4, generator=generator).tolist())
        grayscale = _bernoulli(s.grayscale_prob, generator)
        blur_sigma = (
            _uniform(*s.blur_sigma, generator) if _bernoulli(s.blur_prob, generator) else None
        )
        solarize = _bernoulli(s.solarize_prob, generator)
        return ViewParams(crop, flip, jitter, order, grayscale, blur_sigma, solarize)

    def apply(self, image: torch.Tensor, params: ViewParams) -> torch.Tensor:
        top, left, h, w = params.crop
        size = [self.image_size, self.image_size]
        x = TF.resized_crop(
            image, top, left, h, w, size, interpolation=InterpolationMode.BICUBIC, antialias=True
        )
        if params.flip:
            x = TF.horizontal_flip(x)
        if params.jitter is not None:
            brightness, contrast, saturation, hue = params.jitter
            for op in params.jitter_order:  # the colour operations in random order
                if op == 0:
                    x = TF.adjust_brightness(x, brightness)
                elif op == 1:
                    x = TF.adjust_contrast(x, contrast)
                elif op == 2 and not self.grayscale_source:
                    x = TF.adjust_saturation(x, saturation)
                elif op == 3 and not self.grayscale_source and hue != 0.0:
                    x = TF.adjust_hue(x, hue)
        if params.grayscale and not self.grayscale_source:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if params.blur_sigma is not None:
            sigma = [params.blur_sigma, params.blur_sigma]
            x = TF.gaussian_blur(x, [self.kernel_size, self.kernel_size], sigma)
        if params.solarize:
            x = TF.solarize(x, threshold=128)  # x -> 1 - x where x >= 0.5
        x = TF.to_dtype(x, torch.float32, scale=True)
        return TF.normalize(x, self.mean, self.std)

    def __call__(
        self, image: torch.Tensor | Image.Image, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        image = as_rgb_tensor(image)
        return self.apply(image, self.sample(image.shape[-2], image.shape[-1], generator))


class TwoViews:
    """Makes the pair (t(x), t'(x)) with t ~ T and t' ~ T' from one generator."""

    def __init__(self, view_1: ViewTransform, view_2: ViewTransform) -> None:
        self.view_1, self.view_2 = view_1, view_2

    def __call__(
        self, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view_1(image, generator), self.view_2(image, generator)


def paper_views(
    specs: tuple[ViewSpec, ViewSpec],
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    grayscale_source: bool = False,
) -> TwoViews:
    """T and T' of ``specs``, one image at a time."""
    return TwoViews(
        *(ViewTransform(spec, image_size, mean, std, grayscale_source) for spec in specs)
    )


class EvalTransform:
    """Resize the shorter side to image_size / crop_fraction, centre-crop image_size, normalise."""

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        crop_fraction: float = 0.875,
    ) -> None:
        self.image_size = image_size
        self.resize_to = int(round(image_size / crop_fraction))
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image: torch.Tensor | Image.Image) -> torch.Tensor:
        x = as_rgb_tensor(image)
        if min(x.shape[-2:]) != self.resize_to:
            x = TF.resize(
                x, [self.resize_to], interpolation=InterpolationMode.BICUBIC, antialias=True
            )
        x = TF.center_crop(x, [self.image_size, self.image_size])
        x = TF.to_dtype(x, torch.float32, scale=True)
        return TF.normalize(x, self.mean, self.std)
