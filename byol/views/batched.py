"""The paper's view pipelines T and T' applied to a whole batch at once, on the training device.

``per_image.ViewTransform`` makes one view of one image on the CPU; this module makes the views of a
batch of uint8 images that already sit on the training device (CPU or GPU), every image drawing its
own parameters from the same distributions (arXiv:2006.07733, Table 6, through the same
``ViewSpec``).
Written by hand rather than with kornia because a plain-torch batched pipeline measured ~2x
kornia's per-sample augmentation on a 2-core CPU (BENCHMARKS.md) and adds no dependency.

Differences from the per-image path, none of which changes a distribution: the work is in float
(the per-image path rounds to uint8 after each operation), crop-resize and blur are batched
matrix products with the same antialiased bicubic and reflect-padded Gaussian weights, and a gray
source stays one channel until the end (saturation, hue and grayscale are no-ops on it).
``tests/test_batch_views.py`` compares both paths statistically.
"""

from __future__ import annotations

from functools import partial

import torch

from byol.views.batched_ops import (
    apply_where,
    colour_jitter,
    gaussian_blur,
    grayscale_of,
    resized_crops,
)
from byol.views.batched_sampling import BatchViewParams, sample_params
from byol.views.spec import ViewSpec, blur_kernel_size

_SOLARIZE_THRESHOLD = 128 / 255  # the per-image path solarises uint8 values >= 128


def _mirrored(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


class BatchViewTransform:
    """One view pipeline on a batch: uint8 N x C x H x W (C = 1 or 3) -> normalised float
    N x 3 x S x S, on the images' device."""

    def __init__(
        self,
        spec: ViewSpec,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.spec, self.image_size = spec, image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.kernel_size = blur_kernel_size(image_size, spec.blur_kernel_fraction)

    def sample(
        self, n: int, height: int, width: int, generator: torch.Generator
    ) -> BatchViewParams:
        return sample_params(self.spec, n, height, width, generator, generator.device)

    def apply(
        self, images: torch.Tensor, params: BatchViewParams, masked: bool | None = None
    ) -> torch.Tensor:
        """Masked (default on GPUs): no host-device synchronisation; see ``apply_where``."""
        x = images.float().div_(255)
        x = resized_crops(x, params.crop, params.flip, self.image_size)
        return self.colour_and_after(x, params, masked)

    def apply_cropped(
        self, crops: torch.Tensor, params: BatchViewParams, masked: bool | None = None
    ) -> torch.Tensor:
        """The rest of the pipeline on uint8 N x C x S x S crops already cut and resized (in
        DataLoader workers, by ``cropped.CropsInWorkers``): flip, colour and after; ``params.crop``
        is not read."""
        masked = crops.device.type != "cpu" if masked is None else masked
        x = crops.float().div_(255)
        x = apply_where(x, params.flip, _mirrored, masked=masked)
        return self.colour_and_after(x, params, masked)

    def colour_and_after(
        self, x: torch.Tensor, params: BatchViewParams, masked: bool | None = None
    ) -> torch.Tensor:
        """Colour jitter, grayscale, blur, solarisation and normalisation of float views in
        [0, 1], N x C x S x S."""
        masked = x.device.type != "cpu" if masked is None else masked
        x = colour_jitter(x, params, masked)
        if x.shape[1] == 3:
            x = torch.where(params.grayscale.view(-1, 1, 1, 1), grayscale_of(x).expand_as(x), x)
        if self.spec.blur_prob > 0:
            blur = partial(gaussian_blur, kernel_size=self.kernel_size)
            x = apply_where(x, params.blur, blur, params.blur_sigma, masked=masked)
        solarize = params.solarize.view(-1, 1, 1, 1) & (x >= _SOLARIZE_THRESHOLD)
        x = torch.where(solarize, 1.0 - x, x)
        x = x.expand(-1, 3, -1, -1)  # a gray source turns RGB only now, after 1-channel work
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        params = self.sample(images.shape[0], images.shape[-2], images.shape[-1], generator)
        return self.apply(images, params)


class BatchTwoViews:
    """(t(x), t'(x)) for a batch, t ~ T and t' ~ T' drawn per image from one generator."""

    def __init__(self, view_1: BatchViewTransform, view_2: BatchViewTransform) -> None:
        self.view_1, self.view_2 = view_1, view_2

    def sample(
        self, n: int, height: int, width: int, generator: torch.Generator
    ) -> tuple[BatchViewParams, BatchViewParams]:
        """The draws of t and t' for n images: all of t's, then all of t''s."""
        return (
            self.view_1.sample(n, height, width, generator),
            self.view_2.sample(n, height, width, generator),
        )

    def apply(
        self, images: torch.Tensor, params: tuple[BatchViewParams, BatchViewParams]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view_1.apply(images, params[0]), self.view_2.apply(images, params[1])

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(images, self.sample(images.shape[0], *images.shape[-2:], generator))


def batch_paper_views(
    specs: tuple[ViewSpec, ViewSpec],
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> BatchTwoViews:
    """T and T' of ``specs``, a batch at a time on the images' device."""
    return BatchTwoViews(*(BatchViewTransform(spec, image_size, mean, std) for spec in specs))
