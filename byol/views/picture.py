"""A picture of example views: T on the top row, T' below, one column per image, so a person can
see at a glance what the augmentations do to the data (too strong, too weak, a bug)."""

from __future__ import annotations

import io

import numpy as np
import torch


def views_picture(
    view_1: torch.Tensor,
    view_2: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    count: int = 8,
    gap: int = 2,
) -> np.ndarray:
    """The first ``count`` pairs of two normalised N x C x H x W batches as one H x W x 3 uint8
    picture (two rows, white gaps between the images)."""
    rows = []
    for views in (view_1, view_2):
        x = views[:count].detach().float().cpu()
        if x.shape[1] == 1:  # grayscale data trained as one channel
            x = x.expand(-1, 3, -1, -1)
        x = x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
        x = torch.nn.functional.pad(x.clamp(0, 1), (gap, gap, gap, gap), value=1.0)
        rows.append(torch.cat(list(x), dim=2))  # C x H x (count * W)
    grid = torch.cat(rows, dim=1)
    return (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def png_bytes(picture: np.ndarray, min_width: int = 640) -> bytes:
    """The picture as PNG, enlarged a whole number of times (nearest neighbour) to at least
    ``min_width`` pixels, so that 28 px images stay visible."""
    from PIL import Image

    image = Image.fromarray(picture)
    scale = max(1, -(-min_width // image.width))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
