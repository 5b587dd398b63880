"""Gaussian blur (arXiv:2006.07733, Table 6): one sigma per image; on a batch, a separable blur
as two batched matrix products (faster on CPU than a grouped convolution with one filter per
image), with torchvision's reflect padding."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from byol.views.augmentation import Params, RandomApply, as_tensor


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
    """Each image of N x C x H x W blurred with its own sigma."""
    rows = blur_matrices(sigma, x.shape[-2], kernel_size)[:, None]
    cols = blur_matrices(sigma, x.shape[-1], kernel_size)[:, None]
    return rows @ x @ cols.transpose(-1, -2)


class GaussianBlur(RandomApply):
    """With probability p, blur with sigma uniform in ``sigma`` and a square kernel of
    ``kernel_size`` (odd) pixels."""

    name = "blur"

    def __init__(self, p: float, sigma: tuple[float, float], kernel_size: int) -> None:
        super().__init__(p)
        self.sigma, self.kernel_size = sigma, kernel_size

    values_per_image = 1

    def values(self, u: np.ndarray) -> Params:
        low, high = self.sigma
        return {"sigma": as_tensor(low + (high - low) * u[:, 0])}

    def transform_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        sigma = float(params["sigma"])
        return TF.gaussian_blur(image, [self.kernel_size] * 2, [sigma, sigma])

    def transform_batch(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return gaussian_blur(x, params["sigma"], self.kernel_size)
