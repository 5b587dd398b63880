"""The paper's view pipelines T and T' applied to a whole batch at once, on the training device.

``augment.ViewTransform`` makes one view of one image on the CPU; this module makes the views of a
batch of uint8 images that already sit on the training device (CPU or GPU), every image drawing its
own parameters from the same distributions (PAPER.md Table 6, through the same ``ViewSpec``).
Written by hand rather than with kornia because a plain-torch batched pipeline measured ~2x
kornia's per-sample augmentation on these CPUs (../shared/MEASUREMENTS.md) and adds no dependency.

Differences from the per-image path, none of which changes a distribution: the work is in float
(the per-image path rounds to uint8 after each operation), crop-resize and blur are batched
matrix products with the same antialiased bicubic and reflect-padded Gaussian weights, and a gray
source stays one channel until the end (saturation, hue and grayscale are no-ops on it).
``tests/test_batch_views.py`` compares both paths statistically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import partial

import torch

from byol.augment import ViewSpec, blur_kernel_size, view_specs
from byol.config import Config

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
_SOLARIZE_THRESHOLD = 128 / 255  # the per-image path solarises uint8 values >= 128


@dataclass
class BatchViewParams:
    """One draw of a view pipeline for each of N images (tensors of length N)."""

    crop: torch.Tensor  # N x 4 float: top, left, height, width in source pixels
    flip: torch.Tensor  # N bool
    jitter: torch.Tensor  # N bool: colour jitter applied
    factors: torch.Tensor  # N x 4: brightness, contrast, saturation, hue
    order: torch.Tensor  # N x 4 long: a permutation of the four colour operations
    grayscale: torch.Tensor  # N bool
    blur: torch.Tensor  # N bool
    blur_sigma: torch.Tensor  # N float (meaningful where blur)
    solarize: torch.Tensor  # N bool

    def __getitem__(self, index: slice | torch.Tensor) -> BatchViewParams:
        """The draws of some of the images (a rank's share of a global batch's draws)."""
        return BatchViewParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def _uniform(n: int, low: float, high: float, g: torch.Generator, device: torch.device):
    return low + (high - low) * torch.rand(n, generator=g, device=device)


def sample_crops(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    device: torch.device,
    tries: int = 10,
) -> torch.Tensor:
    """RandomResizedCrop's boxes for n images at once: torchvision's algorithm (up to ten
    candidates, the first that fits, else the largest central crop within the ratio range)."""
    area = height * width
    target_area = area * (
        scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=generator, device=device)
    )
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(
        log_lo + (log_hi - log_lo) * torch.rand(n, tries, generator=generator, device=device)
    )
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # index of the first fitting try
    any_fits = fits.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    offsets = torch.rand(n, 2, generator=generator, device=device)
    top = torch.floor(offsets[:, 0] * (height - h + 1))
    left = torch.floor(offsets[:, 1] * (width - w + 1))
    # The fallback box, as in augment.sample_crop.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    fallback = torch.tensor(
        [(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.float32, device=device
    )
    boxes = torch.stack([top, left, h, w], dim=1)
    return torch.where(any_fits[:, None], boxes, fallback)


def sample_params(
    spec: ViewSpec,
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    device: torch.device,
) -> BatchViewParams:
    """Draw one view's parameters for n images of size height x width."""
    s = spec
    crop = sample_crops(n, height, width, s.crop_scale, s.crop_ratio, generator, device)

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device) < p

    flip = coin(s.flip_prob)
    jitter = coin(s.jitter_prob)
    factors = torch.stack(
        [
            _uniform(n, max(0.0, 1 - s.brightness), 1 + s.brightness, generator, device),
            _uniform(n, max(0.0, 1 - s.contrast), 1 + s.contrast, generator, device),
            _uniform(n, max(0.0, 1 - s.saturation), 1 + s.saturation, generator, device),
            _uniform(n, -s.hue, s.hue, generator, device),
        ],
        dim=1,
    )
    order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
    grayscale = coin(s.grayscale_prob)
    blur = coin(s.blur_prob)
    blur_sigma = _uniform(n, *s.blur_sigma, generator, device)
    solarize = coin(s.solarize_prob)
    return BatchViewParams(
        crop, flip, jitter, factors, order, grayscale, blur, blur_sigma, solarize
    )


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    """The cubic convolution kernel with a = -0.5, as torch's antialiased bicubic resize."""
    a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_matrices(start: torch.Tensor, length: torch.Tensor, source: int, size: int):
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


def resized_crops(
    images: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor, size: int
) -> torch.Tensor:
    """Crop each image's box, resize it to size x size and mirror where flip: two batched matrix
    products, rows then columns (flip = the column matrix read backwards)."""
    _, _, height, width = images.shape
    top, left, h, w = crop.unbind(dim=1)
    rows = resize_matrices(top, h, height, size)  # N x S x H
    cols = resize_matrices(left, w, width, size)  # N x S x W
    cols = torch.where(flip[:, None, None], cols.flip(1), cols)
    n, c = images.shape[:2]
    # Rows: (N, S, H) @ (N, H, C*W); columns: (N, S*C, W) @ (N, W, S). Plain bmm, no broadcast.
    out = rows @ images.permute(0, 2, 1, 3).reshape(n, height, c * width)
    out = out.view(n, size * c, width) @ cols.transpose(1, 2)
    out = out.view(n, size, c, size).permute(0, 2, 1, 3)
    return out.clamp_(0.0, 1.0)


def grayscale_of(x: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W luma of N x C x H x W images in [0, 1] (C = 1 or 3)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0.0, 1.0)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each RGB image by its own shift (a fraction of the colour circle).

    Value (max) and chroma (max - min) are kept; each channel is then value - chroma *
    clamp(min(k, 4 - k), 0, 1) with k = (n + 6 hue) mod 6 and n = 5, 3, 1 for r, g, b: the
    HSV -> RGB formula without a lookup per sector.
    """
    r, g, b = x.unbind(dim=1)
    value = torch.maximum(torch.maximum(r, g), b)  # elementwise: faster than max over dim 1
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue6 = torch.where(
        value == r, (g - b) / safe, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )  # six times the hue, up to a multiple of 6; irrelevant where chroma = 0
    hue6 = hue6 + 6 * shift.view(-1, 1, 1)
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(hue6 + n, 6.0)
        channels.append(value - chroma * torch.minimum(k, 4 - k).clamp(0.0, 1.0))
    return torch.stack(channels, dim=1)


def _colour_op(x: torch.Tensor, factor: torch.Tensor, op: int) -> torch.Tensor:
    if op == 0:  # brightness
        return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    if op == 1:  # contrast: blend with the mean gray level of the image
        mean = grayscale_of(x).mean(dim=(1, 2, 3), keepdim=True)
        return _blend(x, mean, factor)
    if op == 2:  # saturation: blend with the gray image
        return _blend(x, grayscale_of(x), factor)
    return shift_hue(x, factor)


def _apply_where(x: torch.Tensor, chosen: torch.Tensor, fn, *args: torch.Tensor, masked: bool):
    """x with fn(x, *args) in the rows where ``chosen``. Masked: compute every row and select,
    which never asks the device how many rows were chosen (no host-device sync, for GPUs);
    otherwise compute only the chosen rows (less work, for CPUs)."""
    if masked:
        return torch.where(chosen.view(-1, 1, 1, 1), fn(x, *args), x)
    rows = torch.nonzero(chosen).squeeze(1)
    if rows.numel():
        x.index_copy_(0, rows, fn(x[rows], *(a[rows] for a in args)))
    return x


def colour_jitter(
    x: torch.Tensor, params: BatchViewParams, masked: bool | None = None
) -> torch.Tensor:
    """Brightness, contrast, saturation and hue in each image's own random order: at stage k each
    image applies operation order[k]; images that skip jitter are left out of every stage."""
    masked = x.device.type != "cpu" if masked is None else masked
    gray_source = x.shape[1] == 1
    for stage in range(4):
        for op in range(4):
            if gray_source and op >= 2:  # saturation and hue leave a gray image unchanged
                continue
            chosen = params.jitter & (params.order[:, stage] == op)
            x = _apply_where(
                x, chosen, partial(_colour_op, op=op), params.factors[:, op], masked=masked
            )
    return x


def blur_matrices(sigma: torch.Tensor, size: int, kernel_size: int) -> torch.Tensor:
    """N x size x size matrices of a 1-D Gaussian blur with reflect padding (torchvision's)."""
    half = kernel_size // 2
    taps = torch.arange(-half, half + 1, device=sigma.device)
    kernel = torch.exp(-0.5 * (taps.to(sigma.dtype)[None] / sigma[:, None]) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # N x k
    source = torch.arange(size, device=sigma.device)[:, None] + taps[None]  # size x k
    source = source.abs()  # reflect at 0: -1 -> 1
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source)  # and at the end
    n = sigma.shape[0]
    matrices = torch.zeros(n, size, size, device=sigma.device, dtype=sigma.dtype)
    index = source[None].expand(n, -1, -1)
    return matrices.scatter_add_(2, index, kernel[:, None, :].expand(-1, size, -1))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image, as two batched matrix products (faster
    on CPU than a grouped convolution with one filter per image)."""
    rows = blur_matrices(sigma, x.shape[-2], kernel_size)[:, None]
    cols = blur_matrices(sigma, x.shape[-1], kernel_size)[:, None]
    return rows @ x @ cols.transpose(-1, -2)


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
        """Masked (default on GPUs): no host-device synchronisation; see ``_apply_where``."""
        masked = images.device.type != "cpu" if masked is None else masked
        x = images.float().div_(255)
        x = resized_crops(x, params.crop, params.flip, self.image_size)
        x = colour_jitter(x, params, masked)
        if x.shape[1] == 3:
            x = torch.where(params.grayscale.view(-1, 1, 1, 1), grayscale_of(x).expand_as(x), x)
        if self.spec.blur_prob > 0:
            blur = partial(gaussian_blur, kernel_size=self.kernel_size)
            x = _apply_where(x, params.blur, blur, params.blur_sigma, masked=masked)
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
    config: Config, mean: tuple[float, ...], std: tuple[float, ...]
) -> BatchTwoViews:
    spec_1, spec_2 = view_specs(config)
    return BatchTwoViews(
        BatchViewTransform(spec_1, config.image_size, mean, std),
        BatchViewTransform(spec_2, config.image_size, mean, std),
    )
