"""Random resized crop and horizontal flip (arXiv:2006.07733, Table 6).

On a batch the crop is two batched matrix products (rows, then columns) with the antialiased
bicubic weights of torchvision's resized_crop, so every image has its own box in one call.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from byol.views.augmentation import Augmentation, Params, RandomApply, as_tensor, uniforms

CROP_TRIES = 10  # torchvision's RandomResizedCrop: candidates before the central fallback


def sample_crops(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """RandomResizedCrop's boxes (top, left, height, width; float) for n images of one size,
    drawn from ``generator``."""
    u = uniforms(generator, n, 2 * CROP_TRIES + 2)
    return crop_boxes(u, np.full(n, height), np.full(n, width), scale, ratio)


def crop_boxes(
    u: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> torch.Tensor:
    """The boxes of n images, each of its own size, from n x 22 uniforms: torchvision's
    algorithm (up to ten candidates, the first that fits, else the largest central crop within
    the ratio range)."""
    tries = CROP_TRIES
    height, width = heights[:, None].astype(np.float64), widths[:, None].astype(np.float64)
    target_area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, :tries])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[:, tries : 2 * tries])
    w = np.round(np.sqrt(target_area * aspect))
    h = np.round(np.sqrt(target_area / aspect))
    fits = (w >= 1) & (h >= 1) & (w <= width) & (h <= height)
    first = fits.argmax(axis=1)  # the first fitting candidate
    rows = np.arange(len(u))
    w, h = w[rows, first], h[rows, first]
    height, width = height[:, 0], width[:, 0]
    top = np.floor(u[:, -2] * (height - h + 1))
    left = np.floor(u[:, -1] * (width - w + 1))
    boxes = np.stack([top, left, h, w], axis=1)
    none_fit = ~fits.any(axis=1)
    if none_fit.any():
        boxes[none_fit] = _central_boxes(heights[none_fit], widths[none_fit], ratio)
    return as_tensor(boxes)


def _central_boxes(
    heights: np.ndarray, widths: np.ndarray, ratio: tuple[float, float]
) -> np.ndarray:
    """The largest central box within the ratio range, for images where no candidate fits."""
    boxes = []
    for height, width in zip(heights.tolist(), widths.tolist(), strict=True):
        in_ratio = width / height
        if in_ratio < ratio[0]:
            fw, fh = width, int(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            fh, fw = height, int(round(height * ratio[1]))
        else:
            fw, fh = width, height
        boxes.append(((height - fh) // 2, (width - fw) // 2, fh, fw))
    return np.array(boxes, dtype=np.float64)


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    """The cubic convolution kernel with a = -0.5, as torch's antialiased bicubic resize."""
    a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_matrices(
    start: torch.Tensor, length: torch.Tensor, source: int, size: int
) -> torch.Tensor:
    """N x size x source matrices that resize the span [start, start + length) of each row of
    pixels to ``size`` pixels: antialiased bicubic, taps outside the span dropped and the rest
    renormalised, as torchvision's resized_crop(antialias=True) on a tensor."""
    scale = (length / size)[:, None, None]  # N x 1 x 1
    support = scale.clamp_min(1.0)  # the kernel widens when shrinking: antialiasing
    # Only the taps within two kernel widths of each output pixel's centre are non-zero; the
    # widest kernel possible (a crop of the whole source) bounds them without asking the device.
    taps = int(math.ceil(4 * max(source / size, 1.0))) + 2
    out = torch.arange(size, device=start.device, dtype=start.dtype)[None, :, None]
    centre = scale * (out + 0.5)  # N x S x 1, in crop coordinates
    local = torch.floor(centre - 2 * support) + torch.arange(taps, device=start.device)  # N x S x T
    weights = _bicubic((local + 0.5 - centre) / support)
    weights = weights * ((local >= 0) & (local < length[:, None, None]))
    weights = weights / weights.sum(dim=2, keepdim=True)
    pixel = (local + start[:, None, None]).clamp(0, source - 1).long()  # dropped taps weigh 0
    matrices = torch.zeros(start.shape[0], size, source, device=start.device, dtype=start.dtype)
    return matrices.scatter_add_(2, pixel, weights)


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image's box and resize it to size x size."""
    n, c, height, width = images.shape
    top, left, h, w = boxes.unbind(dim=1)
    rows = resize_matrices(top, h, height, size)  # N x S x H
    cols = resize_matrices(left, w, width, size)  # N x S x W
    # Rows: (N, S, H) @ (N, H, C*W); columns: (N, S*C, W) @ (N, W, S). Plain bmm, no broadcast.
    out = rows @ images.permute(0, 2, 1, 3).reshape(n, height, c * width)
    out = out.view(n, size * c, width) @ cols.transpose(1, 2)
    out = out.view(n, size, c, size).permute(0, 2, 1, 3)
    return out.clamp_(0.0, 1.0)


class RandomResizedCrop(Augmentation):
    """A box of area share uniform in ``scale`` and log-uniform aspect ratio in ``ratio``,
    resized to ``size`` x ``size`` with antialiased bicubic interpolation. Always applied."""

    name = "crop"
    resizes = True
    draws_per_image = 2 * CROP_TRIES + 2

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float]):
        self.size, self.scale, self.ratio = size, scale, ratio

    def parameters(self, u: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> Params:
        return {"box": crop_boxes(u, heights, widths, self.scale, self.ratio)}

    def apply_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        top, left, h, w = (int(v) for v in params["box"].tolist())
        size = [self.size, self.size]
        return TF.resized_crop(
            image, top, left, h, w, size, interpolation=InterpolationMode.BICUBIC, antialias=True
        )

    def apply_batch(self, x: torch.Tensor, params: Params, masked: bool) -> torch.Tensor:
        return resized_crops(x, params["box"], self.size)


class HorizontalFlip(RandomApply):
    """Mirror left-right with probability p."""

    name = "flip"

    def transform_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        return TF.horizontal_flip(image)

    def transform_batch(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x.flip(-1)
