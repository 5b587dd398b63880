"""Views of images read from files (folders too large for memory), made in two stages.

In DataLoader workers, each image is decoded and both of its crops (T's and T''s) are cut and
resized to uint8 S x S, the only steps that need the image at its own size; every parameter of
both views is drawn there, from the image's own generator, by the per-image path's ``sample``, so
the draws are the per-image path's, one for one. The batch of fixed-size crops then goes to the
training device, where flip, colour jitter, grayscale, blur and solarisation run a whole batch at
a time (``BatchViewTransform.apply_cropped``), instead of one image at a time in the workers.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from byol.views.batched import BatchTwoViews, batch_paper_views
from byol.views.batched_sampling import BatchViewParams
from byol.views.per_image import TwoViews, ViewParams, as_rgb_tensor, paper_views
from byol.views.spec import ViewSpec

# One view's draws as a row of numbers, so that DataLoader's collate stacks them into a batch:
# flip, jitter, the four factors, the four-operation order, grayscale, blur, sigma, solarize.
PACKED_FIELDS = 14
Crops = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def pack(params: ViewParams) -> torch.Tensor:
    """A view's draws (crop excepted: it is already cut) as PACKED_FIELDS float64 numbers."""
    factors = params.jitter or (1.0, 1.0, 1.0, 0.0)
    blur = params.blur_sigma is not None
    return torch.tensor(
        [
            params.flip,
            params.jitter is not None,
            *factors,
            *params.jitter_order,
            params.grayscale,
            blur,
            params.blur_sigma if blur else 1.0,
            params.solarize,
        ],
        dtype=torch.float64,
    )


def unpack(rows: torch.Tensor) -> BatchViewParams:
    """N packed rows -> the batched path's parameters (``crop`` unused: zeros)."""
    flag = rows > 0.5
    return BatchViewParams(
        crop=torch.zeros(rows.shape[0], 4, device=rows.device),
        flip=flag[:, 0],
        jitter=flag[:, 1],
        factors=rows[:, 2:6].float(),
        order=rows[:, 6:10].round().long(),
        grayscale=flag[:, 10],
        blur=flag[:, 11],
        blur_sigma=rows[:, 12].float(),
        solarize=flag[:, 13],
    )


class CroppedViews:
    """Both stages. Called in a worker: image (uint8 C x H x W, any size, or PIL) -> (crop of T,
    crop of T', T's draws, T''s draws); ``finish`` on the device: a collated batch of those ->
    the two normalised float views, N x 3 x S x S each."""

    def __init__(self, per_image: TwoViews, batched: BatchTwoViews, grayscale_source: bool):
        self.per_image, self.batched = per_image, batched
        # A gray source is cropped and sent as one channel; the batched ops keep it so to the end.
        self.grayscale_source = grayscale_source

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> Crops:
        image = as_rgb_tensor(image)
        height, width = image.shape[-2:]
        # Drawn in the per-image path's order (all of t, then all of t'): the same views per seed.
        views = (self.per_image.view_1, self.per_image.view_2)
        params = [v.sample(height, width, generator) for v in views]
        if self.grayscale_source:
            image = image[:1]
        crops = [self._crop(image, p) for p in params]
        return crops[0], crops[1], pack(params[0]), pack(params[1])

    def _crop(self, image: torch.Tensor, params: ViewParams) -> torch.Tensor:
        # The per-image path's first operation, the same call: uint8 in, uint8 out.
        size = [self.per_image.view_1.image_size] * 2
        top, left, h, w = params.crop
        return TF.resized_crop(
            image, top, left, h, w, size, interpolation=InterpolationMode.BICUBIC, antialias=True
        )

    def finish(self, batch: Crops) -> tuple[torch.Tensor, torch.Tensor]:
        crops_1, crops_2, rows_1, rows_2 = batch
        return (
            self.batched.view_1.apply_cropped(crops_1, unpack(rows_1)),
            self.batched.view_2.apply_cropped(crops_2, unpack(rows_2)),
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
        grayscale_source,
    )
