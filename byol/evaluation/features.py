"""Features of a frozen encoder over a dataset, and a cache of them keyed by encoder and
preprocessing."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from byol.run_folder import atomic_write
from byol.runtime import autocast


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    device: torch.device,
    batch_size: int = 512,
    precision: str = "fp32",
    num_workers: int = 0,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features NxD float32 on CPU, labels N int64) of a dataset whose items are (image, label).

    Encoders that end in a pooled NxDx1x1 map (a ResNet trunk without its fc) are flattened.
    """
    was_training = encoder.training
    encoder.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    features, labels = [], []
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            features.append(encoder(images).flatten(1).float().cpu())  # NxDx1x1 too
        labels.append(torch.as_tensor(targets))
    encoder.train(was_training)
    return torch.cat(features), torch.cat(labels)


def cached_features(
    path: Path,
    key: str,
    compute: Callable[[], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features from ``path`` when it was written for the same ``key``, else computed and saved.

    ``key`` names the encoder weights and the preprocessing, so a cache never outlives a change
    of either (a resumed run, another image size).
    """
    path = Path(path)
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(saved, dict) and saved.get("key") == key:
                return saved["features"], saved["labels"]
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):
            pass  # a corrupt cache is recomputed, never trusted
    features, labels = compute()
    buffer = io.BytesIO()
    torch.save({"key": key, "features": features, "labels": labels}, buffer)
    atomic_write(path, [buffer.getbuffer()])
    return features, labels
