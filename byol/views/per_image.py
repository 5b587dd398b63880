"""The view pipelines one image at a time, with torchvision's functional ops on uint8 images: the
reference the batched path is measured against, and the path for any dataset in DataLoader
workers.

Each view draws its parameters from a ``torch.Generator`` (``augmentation.draw``): seeded per
sample, every image's views are reproducible whatever the number of DataLoader workers, so a
resumed run sees exactly the views an uninterrupted one would, and the draws can be counted in
tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from byol.views.augmentation import Augmentation, Draws, checked, draw, draw_each
from byol.views.pipeline import pipeline, size_stage
from byol.views.spec import ViewSpec


def as_rgb_tensor(image: torch.Tensor | Image.Image) -> torch.Tensor:
    """Accept what users hold: PIL images of any mode, or uint8 tensors with 1 or 3 channels."""
    if isinstance(image, Image.Image):
        image = TF.pil_to_tensor(image.convert("RGB"))
    if image.ndim == 2:
        image = image[None]
    if image.shape[-3] == 1:
        image = image.expand(3, *image.shape[-2:])
    return image


class ViewTransform:
    """One view pipeline: uint8 3xHxW image -> normalised float 3xSxS view. With
    ``grayscale_source`` the image is known to be gray (R = G = B) and is worked on as one
    channel, which saturation, hue and grayscale leave unchanged. ``augmentations`` replaces the
    spec's pipeline (``pipeline.pipeline``)."""

    def __init__(
        self,
        spec: ViewSpec,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        grayscale_source: bool = False,
        augmentations: Sequence[Augmentation] | None = None,
    ) -> None:
        self.spec, self.image_size = spec, image_size
        self.mean, self.std = list(mean), list(std)
        self.grayscale_source = grayscale_source
        given = pipeline(spec, image_size) if augmentations is None else augmentations
        self.augmentations = checked(given)

    def sample(self, height: int, width: int, generator: torch.Generator | None = None) -> Draws:
        """One image's draws."""
        return draw(self.augmentations, 1, height, width, generator)[0]

    def sample_each(
        self, sizes: Sequence[tuple[int, int]], generators: Sequence[torch.Generator]
    ) -> Draws:
        """The draws of n images at once, image i of ``sizes[i]`` from ``generators[i]``: row i
        is ``sample(*sizes[i], generators[i])``, for a fraction of the cost."""
        heights, widths = zip(*sizes, strict=True) if sizes else ((), ())
        return draw_each(self.augmentations, heights, widths, generators)

    def size_stage(self, image: torch.Tensor, draws: Draws) -> torch.Tensor:
        """The augmentations that need the image at its own size (the crop): uint8 C x S x S,
        one channel for a gray source."""
        return self._run(image, draws, self.augmentations[: size_stage(self.augmentations)])

    def apply(self, image: torch.Tensor, draws: Draws) -> torch.Tensor:
        x = self._run(image, draws, self.augmentations)
        x = TF.to_dtype(x.expand(3, -1, -1), torch.float32, scale=True)
        return TF.normalize(x, self.mean, self.std)

    def _run(
        self, image: torch.Tensor, draws: Draws, augmentations: Sequence[Augmentation]
    ) -> torch.Tensor:
        x = image[:1] if self.grayscale_source else image
        for augmentation in augmentations:
            x = augmentation.apply_image(x, draws[augmentation.name])
        return x

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

    def many(
        self, images: Sequence[torch.Tensor | Image.Image], generators: Sequence[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pairs of n images stacked, image i from ``generators[i]``: the same views as n
        calls, with the draws of all n worked out at once."""
        images = [as_rgb_tensor(image) for image in images]
        sizes = [tuple(image.shape[-2:]) for image in images]
        views = (self.view_1, self.view_2)
        draws = [view.sample_each(sizes, generators) for view in views]  # t, then t', per image
        return tuple(
            torch.stack([view.apply(image, d[i]) for i, image in enumerate(images)])
            for view, d in zip(views, draws, strict=True)
        )


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
