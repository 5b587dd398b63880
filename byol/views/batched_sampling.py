"""Per-image random draws of a view pipeline for a whole batch at once: every image its own crop
box, flip, jitter factors and order, grayscale, blur sigma and solarisation (arXiv:2006.07733,
Table 6), from one generator on the images' device."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from byol.views.spec import ViewSpec


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
