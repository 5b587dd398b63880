"""Datasets as uint8 (3, H, W) image tensors plus integer labels (-1 = unlabelled).

Every dataset returned here yields ``(image, label)`` with ``image`` a uint8 tensor of shape
(3, H, W) when its ``transform`` is None; the caller sets ``.transform`` (augmentations, eval
preprocessing). Known names: fashion-mnist, cifar10, cifar100, stl10, cifar10-jpeg, imagenet;
anything else is a path to a folder of images.

    images.py            image files, a folder of them, tensors held in memory
    idx.py               Fashion-MNIST (IDX files)
    torchvision_sets.py  CIFAR-10/100, STL-10
    cifar10_jpeg.py      the CIFAR-10 JPEG copy
    folders.py           a user's image folder
    subsets.py           class-balanced subsets
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from byol.data.cifar10_jpeg import load_cifar10_jpeg
from byol.data.folders import load_folder
from byol.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from byol.data.images import (
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataset,
    TensorImageDataset,
    decode_image,
)
from byol.data.info import KNOWN_DATASETS, DatasetInfo, default_data_dir
from byol.data.subsets import labelled, subset, subset_indices
from byol.data.torchvision_sets import load_cifar, load_stl10
from byol.errors import DatasetError, DatasetNotFoundError

# (mean, std) of the 3-channel RGB images, per channel in [0, 1].
_KNOWN_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "fashion-mnist": ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar10-jpeg": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}

_ALIASES = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}


def known_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) a known dataset's images are normalised with; None for a folder."""
    key = name.strip().lower().replace("_", "-")
    return _KNOWN_STATS.get(_ALIASES.get(key, key))


def load_datasets(
    name: str,
    data_dir: str | None = None,
    download: bool = False,
    in_memory: bool = True,
    strict: bool = False,
) -> tuple[Dataset, Dataset | None, DatasetInfo]:
    """Return (train, test or None, info); items are (uint8 (3, H, W) tensor, int label).

    ``name`` is fashion-mnist, cifar10, cifar100, stl10 (train = train+unlabeled, label -1 for
    unlabeled), cifar10-jpeg, imagenet (a folder with train/ and val/ at data_dir), "folder"
    (the folder at data_dir) or a path to a folder. ``data_dir`` "" or None means the usual
    place. ``in_memory`` matters for image folders only; the other sets always are in memory.
    Unreadable image files are skipped and listed in ``info.unreadable``, or, with ``strict``,
    the first one raises DatasetError naming it.
    Both datasets come with transform=None; the caller sets ``.transform``.
    """
    path = Path(data_dir).expanduser() if data_dir else None
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key == "fashion-mnist":
        train, test = load_fashion_mnist(path, download)
        mean, std = _KNOWN_STATS[key]
        return (
            train,
            test,
            DatasetInfo(key, list(FASHION_MNIST_CLASSES), mean, std, True),
        )
    if key in ("cifar10", "cifar100", "stl10", "cifar10-jpeg"):
        if key == "stl10":
            train, test, classes = load_stl10(path, download)
        elif key == "cifar10-jpeg":
            train, test, classes = load_cifar10_jpeg(path, in_memory, strict)
        else:
            train, test, classes = load_cifar(key, path, download)
        mean, std = _KNOWN_STATS[key]
        return train, test, DatasetInfo(key, classes, mean, std, False)
    if key in ("folder", "imagenet"):
        if path is None:
            raise DatasetNotFoundError(
                f"Dataset '{name}' needs data_dir: set it to the image folder "
                "(with train/ and val/ sub-folders for ImageNet)."
            )
        train, test, info = load_folder(path, in_memory, strict)
        if key == "imagenet":
            info.name = "imagenet"
            info.mean, info.std = _KNOWN_STATS["imagenet"]
        return train, test, info
    return load_folder(Path(name).expanduser(), in_memory, strict)


__all__ = [
    "IMAGE_EXTENSIONS",
    "KNOWN_DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageFolderDataset",
    "TensorImageDataset",
    "decode_image",
    "default_data_dir",
    "known_stats",
    "labelled",
    "load_datasets",
    "read_idx",
    "subset",
    "subset_indices",
]
