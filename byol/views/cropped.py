"""Views of images read from files (folders too large for memory), made in two stages.

In DataLoader workers, each image is decoded, both views' parameters are drawn from the image's
own generator by the per-image path's ``sample`` (so the draws are the per-image path's, one for
one), and both crops are cut and resized to uint8 S x S: the size stage, the only steps that need
the image at its own size. DataLoader's collate stacks the crops and the draws; on the training
device the rest of each pipeline (flip, colour jitter, grayscale, blur, solarisation) runs a whole
batch at a time (``BatchViewTransform.apply_cropped``) instead of one image at a time in the
workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from byol.views.augmentation import Draws
from byol.views.batched import BatchTwoViews, batch_paper_views
from byol.views.per_image import TwoViews, as_rgb_tensor, paper_views
from byol.views.spec import ViewSpec

Crops = tuple[torch.Tensor, torch.Tensor, Draws, Draws]


class CroppedViews:
    """Both stages. Called in a worker: image (uint8 C x H x W, any size, or PIL) -> (crop of T,
    crop of T', T's draws, T''s draws); ``finish`` on the device: a collated batch of those ->
    the two normalised float views, N x 3 x S x S each. A gray source (``grayscale_source`` of the
    per-image views) is cropped and sent as one channel: a third of the bytes."""

    def __init__(self, per_image: TwoViews, batched: BatchTwoViews) -> None:
        self.per_image, self.batched = per_image, batched

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> Crops:
        image = as_rgb_tensor(image)
        height, width = image.shape[-2:]
        views = (self.per_image.view_1, self.per_image.view_2)
        # Drawn in the per-image path's order (t, then t'): the same views per seed.
        draws = [v.sample(height, width, generator) for v in views]
        crop_1, crop_2 = (v.size_stage(image, d) for v, d in zip(views, draws, strict=True))
        return crop_1, crop_2, draws[0], draws[1]

    def many(
        self, images: Sequence[torch.Tensor | Image.Image], generators: Sequence[torch.Generator]
    ) -> Crops:
        """The crops and draws of n images, stacked as DataLoader's collate stacks n calls (the
        same values), with the draws of all n worked out at once."""
        images = [as_rgb_tensor(image) for image in images]
        sizes = [tuple(image.shape[-2:]) for image in images]
        views = (self.per_image.view_1, self.per_image.view_2)
        draws = [view.sample_each(sizes, generators) for view in views]  # t, then t', per image
        crops = (
            torch.stack([view.size_stage(image, d[i]) for i, image in enumerate(images)])
            for view, d in zip(views, draws, strict=True)
        )
        return *crops, *draws

    def finish(self, batch: Crops) -> tuple[torch.Tensor, torch.Tensor]:
        crops_1, crops_2, draws_1, draws_2 = batch
        return (
            self.batched.view_1.apply_cropped(crops_1, draws_1.to(crops_1.device)),
            self.batched.view_2.apply_cropped(crops_2, draws_2.to(crops_2.device)),
        )


def cropped_paper_views(
    specs: tuple[ViewSpec, ViewSpec],
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    grayscale_source: bool = False,
) -> CroppedViews:
    """T and T' of ``specs``: crops in DataLoader workers, the rest a batch at a time."""
    return CroppedViews(
        paper_views(specs, image_size, mean, std, grayscale_source),
        batch_paper_views(specs, image_size, mean, std),
    )
