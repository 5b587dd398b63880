"""Colour jitter, grayscale and solarisation (arXiv:2006.07733, Table 6).

A one-channel image is a gray source: saturation, hue and grayscale leave it unchanged, so they
are skipped on it (the drivers turn it into three channels only at the end).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from byol.views.augmentation import Params, RandomApply, apply_where, as_tensor

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
_SOLARIZE_THRESHOLD = 128  # uint8 levels: x -> 1 - x where x >= 128/255


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


def _brightness(x: torch.Tensor, p: Params) -> torch.Tensor:
    return (x * p["factor"].view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _contrast(x: torch.Tensor, p: Params) -> torch.Tensor:  # blend with the mean gray level
    return _blend(x, grayscale_of(x).mean(dim=(1, 2, 3), keepdim=True), p["factor"])


def _saturation(x: torch.Tensor, p: Params) -> torch.Tensor:  # blend with the gray image
    return _blend(x, grayscale_of(x), p["factor"])


def _hue(x: torch.Tensor, p: Params) -> torch.Tensor:
    return shift_hue(x, p["factor"])


_BATCH_OPS = (_brightness, _contrast, _saturation, _hue)
_IMAGE_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


class ColourJitter(RandomApply):
    """With probability p: brightness, contrast and saturation factors uniform in 1 +- their
    strength (floored at 0) and a hue shift uniform in +- hue, applied in an order drawn per
    image (torchvision's ColorJitter). An operation of strength 0 is the identity: skipped."""

    name = "jitter"

    def __init__(
        self, p: float, brightness: float, contrast: float, saturation: float, hue: float
    ) -> None:
        super().__init__(p)
        strengths = (brightness, contrast, saturation, hue)
        self.low = np.array([max(0.0, 1 - s) for s in strengths[:3]] + [-hue])
        self.high = np.array([1 + s for s in strengths[:3]] + [hue])
        self.active = tuple(s > 0 for s in strengths)

    values_per_image = 8  # four factors, then four numbers whose ranks give the order

    def values(self, u: np.ndarray) -> Params:
        factors = self.low + (self.high - self.low) * u[:, :4]
        order = u[:, 4:].argsort(axis=1)  # a uniform random permutation
        return {"factors": as_tensor(factors), "order": as_tensor(order)}

    def _runs(self, op: int, channels: int) -> bool:
        return self.active[op] and (channels == 3 or op < 2)  # saturation, hue: not on gray

    def transform_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        factors = params["factors"].tolist()
        for op in params["order"].tolist():
            if self._runs(op, image.shape[0]):
                image = _IMAGE_OPS[op](image, factors[op])
        return image

    def apply_batch(self, x: torch.Tensor, params: Params, masked: bool) -> torch.Tensor:
        """At stage k each image applies its operation order[k]; images that skip jitter are
        left out of every stage."""
        if self.p == 0:
            return x
        for stage in range(4):
            for op in range(4):
                if self._runs(op, x.shape[1]):
                    chosen = params["applied"] & (params["order"][:, stage] == op)
                    factor = {"factor": params["factors"][:, op]}
                    x = apply_where(x, chosen, _BATCH_OPS[op], factor, masked)
        return x


class Grayscale(RandomApply):
    """With probability p, the luma in all three channels."""

    name = "grayscale"

    def transform_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        if image.shape[0] == 1:
            return image
        return TF.rgb_to_grayscale(image, num_output_channels=3)

    def apply_batch(self, x: torch.Tensor, params: Params, masked: bool) -> torch.Tensor:
        # One weighted sum per pixel: computed for every image and selected, no rows picked.
        if self.p == 0 or x.shape[1] == 1:
            return x
        return torch.where(params["applied"].view(-1, 1, 1, 1), grayscale_of(x).expand_as(x), x)


class Solarize(RandomApply):
    """With probability p, every pixel at or above one half becomes 1 - x."""

    name = "solarize"

    def transform_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        return TF.solarize(image, threshold=_SOLARIZE_THRESHOLD)

    def transform_batch(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.where(x >= _SOLARIZE_THRESHOLD / 255, 1.0 - x, x)
