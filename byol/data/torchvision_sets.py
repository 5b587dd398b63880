"""CIFAR-10, CIFAR-100 and STL-10 through torchvision, held in memory as uint8 tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from byol.data.info import DatasetInfo, default_data_dir
from byol.data.source import LoadRequest, Registered, Splits
from byol.data.tensors import TensorImageDataset
from byol.errors import DatasetNotFoundError

# (mean, std) of the 3-channel RGB images, per channel in [0, 1].
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
STL10_STATS = ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713))


def torchvision_dataset(cls: Any, root: Path, download: bool, **kwargs: Any) -> Any:
    try:
        return cls(str(root), download=download, **kwargs)
    except (RuntimeError, OSError) as e:
        if download:
            raise DatasetNotFoundError(
                f"Downloading {cls.__name__} into {root} failed ({e}); check the internet "
                "connection, or place the files there by hand."
            ) from e
        raise DatasetNotFoundError(
            f"{cls.__name__} was not found under {root} ({e}); point data_dir at the folder that "
            "holds it or fetch it with `--set download=true`."
        ) from e


def load_cifar(
    name: str, data_dir: Path | None, download: bool
) -> tuple[TensorImageDataset, TensorImageDataset, list[str]]:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    root = data_dir if data_dir is not None else default_data_dir()
    splits = []
    for train in (True, False):
        ds = torchvision_dataset(cls, root, download, train=train)
        images = torch.from_numpy(np.asarray(ds.data, dtype=np.uint8)).permute(0, 3, 1, 2)
        splits.append(TensorImageDataset(images.contiguous(), torch.tensor(ds.targets)))
    return splits[0], splits[1], list(ds.classes)


def load_stl10(
    data_dir: Path | None, download: bool
) -> tuple[TensorImageDataset, TensorImageDataset, list[str]]:
    import torchvision

    root = data_dir if data_dir is not None else default_data_dir()
    splits = []
    for split in ("train+unlabeled", "test"):
        ds = torchvision_dataset(torchvision.datasets.STL10, root, download, split=split)
        images = torch.from_numpy(np.asarray(ds.data, dtype=np.uint8)).contiguous()
        splits.append(TensorImageDataset(images, torch.from_numpy(ds.labels.astype(np.int64))))
    return splits[0], splits[1], list(ds.classes)


def load(request: LoadRequest) -> Splits:
    """cifar10, cifar100 or stl10 (train = train+unlabeled, label -1 for unlabeled)."""
    if request.name == "stl10":
        train, test, classes = load_stl10(request.data_dir, request.download)
    else:
        train, test, classes = load_cifar(request.name, request.data_dir, request.download)
    mean, std = _STATS[request.name]
    return train, test, DatasetInfo(request.name, classes, mean, std, False)


_STATS = {"cifar10": CIFAR10_STATS, "cifar100": CIFAR100_STATS, "stl10": STL10_STATS}
CIFAR10, CIFAR100, STL10 = (Registered(load, _STATS[name]) for name in _STATS)
