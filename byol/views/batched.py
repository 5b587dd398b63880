"""The view pipelines applied to a whole batch at once, on the training device.

``per_image.ViewTransform`` makes one view of one image on the CPU; this module makes the views of
a batch of uint8 images that already sit on the training device (CPU or GPU), running the same
augmentations (``pipeline.pipeline``), every image with its own parameters.
Written by hand rather than with kornia because a plain-torch batched pipeline measured ~2x
kornia's per-sample augmentation on a 2-core CPU (BENCHMARKS.md) and adds no dependency.

Differences from the per-image path, none of which changes a distribution: the work is in float
(the per-image path rounds to uint8 after each operation), crop-resize and blur are batched
matrix products with the same antialiased bicubic and reflect-padded Gaussian weights, and a gray
source stays one channel until the end (saturation, hue and grayscale are no-ops on it).
``tests/test_batch_views.py`` compares both paths statistically.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from byol.views.augmentation import Augmentation, Draws, checked, draw
from byol.views.pipeline import pipeline, size_stage
from byol.views.spec import ViewSpec


class BatchViewTransform:
    """One view pipeline on a batch: uint8 N x C x H x W (C = 1 or 3) -> normalised float
    N x 3 x S x S, on the images' device. ``augmentations`` replaces the spec's pipeline."""

    def __init__(
        self,
        spec: ViewSpec,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augmentations: Sequence[Augmentation] | None = None,
    ) -> None:
        self.spec, self.image_size = spec, image_size
        self.mean, self.std = tuple(mean), tuple(std)
        given = pipeline(spec, image_size) if augmentations is None else augmentations
        self.augmentations = checked(given)

    def sample(self, n: int, height: int, width: int, generator: torch.Generator) -> Draws:
        """The draws of n images, on the generator's device."""
        return draw(self.augmentations, n, height, width, generator)

    def apply(self, images: torch.Tensor, draws: Draws, masked: bool | None = None) -> torch.Tensor:
        """Masked (default on GPUs): no host-device synchronisation; see ``apply_where``."""
        return self._run(images, draws, self.augmentations, masked)

    def apply_cropped(
        self, crops: torch.Tensor, draws: Draws, masked: bool | None = None
    ) -> torch.Tensor:
        """The augmentations after the size stage, on uint8 N x C x S x S crops already cut and
        resized in DataLoader workers (``cropped.CroppedViews``)."""
        rest = self.augmentations[size_stage(self.augmentations) :]
        return self._run(crops, draws, rest, masked)

    def _run(
        self,
        images: torch.Tensor,
        draws: Draws,
        augmentations: Sequence[Augmentation],
        masked: bool | None,
    ) -> torch.Tensor:
        masked = images.device.type != "cpu" if masked is None else masked
        x = images.float().div_(255)
        for augmentation in augmentations:
            x = augmentation.apply_batch(x, draws[augmentation.name], masked)
        x = x.expand(-1, 3, -1, -1)  # a gray source turns RGB only now, after 1-channel work
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        draws = self.sample(images.shape[0], images.shape[-2], images.shape[-1], generator)
        return self.apply(images, draws)


class BatchTwoViews:
    """(t(x), t'(x)) for a batch, t ~ T and t' ~ T' drawn per image from one generator."""

    def __init__(self, view_1: BatchViewTransform, view_2: BatchViewTransform) -> None:
        self.view_1, self.view_2 = view_1, view_2

    def sample(
        self, n: int, height: int, width: int, generator: torch.Generator
    ) -> tuple[Draws, Draws]:
        """The draws of t and t' for n images (``draws[rows]``: those of some images only)."""
        return (
            self.view_1.sample(n, height, width, generator),
            self.view_2.sample(n, height, width, generator),
        )

    def apply(
        self, images: torch.Tensor, draws: tuple[Draws, Draws]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.view_1.apply(images, draws[0]), self.view_2.apply(images, draws[1])

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
