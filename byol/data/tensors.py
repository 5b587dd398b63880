"""A source held in memory: uint8 (N, 3, H, W) images and their labels, as one tensor each."""

from __future__ import annotations

import numpy as np
import torch

from byol.data.source import IndexableSource, Item, Transform


class TensorImageDataset(IndexableSource):
    """Whole dataset held in memory as uint8 (N, 3, H, W) plus int64 labels (-1 = unlabelled)."""

    in_memory = True

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Transform | None = None,
    ) -> None:
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Item:
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])

    def label_array(self) -> np.ndarray:
        return self.labels.numpy()

    def take(self, indices: np.ndarray) -> TensorImageDataset:
        t = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return TensorImageDataset(self.images[t], self.labels[t], self.transform)

    def images_tensor(self) -> torch.Tensor:
        return self.images
