"""The operations of a view pipeline on a batch, each image with its own parameters: resized
crops and blur as batched matrix products, colour jitter in each image's own order, grayscale."""

from __future__ import annotations

import math
from functools import partial

import torch

from byol.views.batched_sampling import BatchViewParams

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


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


def apply_where(x: torch.Tensor, chosen: torch.Tensor, fn, *args: torch.Tensor, masked: bool):
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
            x = apply_where(
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
