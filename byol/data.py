"""Datasets as uint8 (3, H, W) image tensors plus integer labels (-1 = unlabelled).

Every dataset returned here yields ``(image, label)`` with ``image`` a uint8 tensor of shape
(3, H, W) when its ``transform`` is None; the caller sets ``.transform`` (augmentations, eval
preprocessing). Known names: fashion-mnist, cifar10, cifar100, stl10, cifar10-jpeg, imagenet;
anything else is a path to a folder of images. Image files, folders of them and the in-memory
dataset live in ``byol.images``; their names are importable from here too.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import logging
import math
import os
import shutil
import struct
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from byol.errors import DatasetError, DatasetNotFoundError
from byol.images import (
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderDataset,
    TensorImageDataset,
    decode_image,
    folder_stats,
    to_memory,
    unreadable_summary,
)

log = logging.getLogger(__name__)

FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_JPEG_SHA256 = "820394552d8cd6cf2834c7f34753d3e36624717e73e6a373a57a01edb25bc5f0"
CIFAR10_JPEG_TARBALL = "cifar10-jpeg.tar.gz"

# (mean, std) of the 3-channel RGB images, per channel in [0, 1].
_KNOWN_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "fashion-mnist": ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar10-jpeg": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}
KNOWN_DATASETS = (
    "fashion-mnist",
    "cifar10",
    "cifar100",
    "stl10",
    "cifar10-jpeg",
    "imagenet",
)


@dataclass
class DatasetInfo:
    """What the rest of the pipeline needs to know about a dataset."""

    name: str
    classes: list[str]  # [] when unlabelled
    mean: tuple[float, float, float]  # per channel in [0, 1], of the 3-channel RGB images
    std: tuple[float, float, float]
    grayscale: bool  # source was single-channel
    unreadable: list[str] = field(default_factory=list)  # image files skipped as unreadable


# --------------------------------------------------------------------------- helpers


def _cache_root() -> Path:
    env = os.environ.get("BYOL_DATA_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/byol").expanduser()


def default_data_dir() -> Path:
    """Where torchvision datasets are stored: $BYOL_DATA_DIR, else ~/.cache/byol/data."""
    env = os.environ.get("BYOL_DATA_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/byol/data").expanduser()


# --------------------------------------------------------------------------- Fashion-MNIST

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped when its name ends in .gz."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number {data[:4].hex()}).")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    if len(data) - offset != math.prod(shape) * dtype.itemsize:
        raise DatasetError(
            f"{path} is truncated or corrupt: header says shape {shape} of {dtype} but it holds "
            f"{len(data) - offset} bytes of data."
        )
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)


_FMNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_split(folder: Path, train: bool) -> TensorImageDataset | None:
    image_file, label_file = (_find_idx(folder, s) for s in _FMNIST_FILES[train])
    if image_file is None or label_file is None:
        return None
    images = torch.from_numpy(read_idx(image_file).astype(np.uint8))
    labels = torch.from_numpy(read_idx(label_file).astype(np.int64))
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DatasetError(
            f"{image_file} and {label_file} disagree: images {tuple(images.shape)}, "
            f"labels {tuple(labels.shape)}."
        )
    return TensorImageDataset(images[:, None].repeat(1, 3, 1, 1), labels)


def _load_fashion_mnist(
    data_dir: Path | None, download: bool
) -> tuple[TensorImageDataset, TensorImageDataset]:
    base = [data_dir] if data_dir is not None else [FASHION_MNIST_DEBIAN_DIR, default_data_dir()]
    candidates = []
    for folder in base:
        candidates += [
            folder,
            folder / "FashionMNIST" / "raw",
            folder / "fashion-mnist",
        ]
    for folder in candidates:
        train = _idx_split(folder, True)
        test = _idx_split(folder, False)
        if train is not None and test is not None:
            return train, test
    if download:
        import torchvision

        root = data_dir if data_dir is not None else default_data_dir()
        splits = []
        for train in (True, False):
            ds = _torchvision_dataset(torchvision.datasets.FashionMNIST, root, True, train=train)
            images = ds.data.to(torch.uint8)[:, None].repeat(1, 3, 1, 1)
            splits.append(TensorImageDataset(images, ds.targets.to(torch.int64)))
        return splits[0], splits[1]
    raise DatasetNotFoundError(
        "Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) were not found in "
        f"{', '.join(str(c) for c in candidates)}; install them with "
        "`apt-get install dataset-fashion-mnist` or fetch them with `--set download=true`."
    )


# --------------------------------------------------------------------------- torchvision sets


def _torchvision_dataset(cls: Any, root: Path, download: bool, **kwargs: Any) -> Any:
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


def _load_cifar(
    name: str, data_dir: Path | None, download: bool
) -> tuple[TensorImageDataset, TensorImageDataset, list[str]]:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    root = data_dir if data_dir is not None else default_data_dir()
    splits = []
    for train in (True, False):
        ds = _torchvision_dataset(cls, root, download, train=train)
        images = torch.from_numpy(np.asarray(ds.data, dtype=np.uint8)).permute(0, 3, 1, 2)
        splits.append(TensorImageDataset(images.contiguous(), torch.tensor(ds.targets)))
    return splits[0], splits[1], list(ds.classes)


def _load_stl10(
    data_dir: Path | None, download: bool
) -> tuple[TensorImageDataset, TensorImageDataset, list[str]]:
    import torchvision

    root = data_dir if data_dir is not None else default_data_dir()
    splits = []
    for split in ("train+unlabeled", "test"):
        ds = _torchvision_dataset(torchvision.datasets.STL10, root, download, split=split)
        images = torch.from_numpy(np.asarray(ds.data, dtype=np.uint8)).contiguous()
        splits.append(TensorImageDataset(images, torch.from_numpy(ds.labels.astype(np.int64))))
    return splits[0], splits[1], list(ds.classes)


# --------------------------------------------------------------------------- CIFAR-10 JPEG


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_split_folder(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def _cifar10_jpeg_cache() -> Path:
    return _cache_root() / "cifar10-jpeg"


def _locate_cifar10_jpeg(
    data_dir: Path | None,
) -> tuple[Path | None, Path | None, list[Path]]:
    """Return (extracted folder or None, tarball or None, places looked at)."""
    if data_dir is not None:
        for folder in (data_dir, data_dir / "cifar10-jpeg"):
            if folder.is_dir() and _is_split_folder(folder):
                return folder, None, [data_dir]
        tarballs = [data_dir, data_dir / CIFAR10_JPEG_TARBALL]
        tarballs.append(data_dir / "datasets" / CIFAR10_JPEG_TARBALL)
        for tarball in tarballs:
            if tarball.is_file():
                return None, tarball, [data_dir]
        return None, None, [data_dir]
    cache = _cifar10_jpeg_cache()
    if _is_split_folder(cache):
        return cache, None, [cache]
    looked = [cache]
    shared = os.environ.get("BYOL_SHARED_DIR")
    if shared:
        looked.append(Path(shared).expanduser() / "datasets" / CIFAR10_JPEG_TARBALL)
    looked.append(
        Path(__file__).resolve().parents[2] / "shared" / "datasets" / CIFAR10_JPEG_TARBALL
    )
    for tarball in looked[1:]:
        if tarball.is_file():
            return None, tarball, looked
    return None, None, looked


def _extract_with_data_filter(tar: tarfile.TarFile, dest: Path) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise DatasetError(
            "this Python has no tarfile extraction filters (path-traversal protection); "
            "use Python 3.10.12, 3.11.4 or newer."
        )
    tar.extractall(dest, filter="data")


def _extract_cifar10_jpeg(tarball: Path, dest: Path) -> None:
    """Verify and extract the tarball so that ``dest`` appears complete or not at all."""
    actual = _sha256(tarball)
    if actual != CIFAR10_JPEG_SHA256:
        raise DatasetError(
            f"{tarball} has sha256 {actual}, not {CIFAR10_JPEG_SHA256}: the file is corrupt or "
            "not the CIFAR-10 JPEG copy; replace it with an intact copy."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Temp folders of interrupted runs are hours old; extraction itself takes seconds.
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        log.info("extracting %s to %s", tarball, dest)
        try:
            with tarfile.open(tarball) as tar:
                _extract_with_data_filter(tar, tmp)
        except (tarfile.TarError, OSError) as e:
            raise DatasetError(f"Cannot extract {tarball}: {e}") from e
        extracted = tmp / "cifar10-jpeg"
        if not _is_split_folder(extracted):
            raise DatasetError(f"{tarball} does not contain cifar10-jpeg/train and /test.")
        try:
            extracted.rename(dest)
        except OSError:
            # Another process finished the same extraction first.
            if not _is_split_folder(dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_cifar10_jpeg(
    data_dir: Path | None, in_memory: bool, strict: bool = False
) -> tuple[Dataset, Dataset, list[str]]:
    folder, tarball, looked = _locate_cifar10_jpeg(data_dir)
    if folder is None and tarball is not None:
        folder = _cifar10_jpeg_cache()
        if not _is_split_folder(folder):
            _extract_cifar10_jpeg(tarball, folder)
    if folder is None:
        raise DatasetNotFoundError(
            f"The CIFAR-10 JPEG copy ({CIFAR10_JPEG_TARBALL} or its extracted folder) was not "
            f"found at {', '.join(str(p) for p in looked)}; set data_dir (or BYOL_SHARED_DIR) to "
            "where it lies."
        )
    # Only our own verified extraction is immutable enough to cache decoded tensors for.
    cached = [folder / f"{split}-uint8.pt" for split in ("train", "test")]
    use_cache = in_memory and folder == _cifar10_jpeg_cache()
    if use_cache and all(p.is_file() for p in cached):
        splits = []
        for p in cached:
            state = torch.load(p, weights_only=True)
            splits.append(TensorImageDataset(state["images"], state["labels"]))
        return splits[0], splits[1], list(state["classes"])
    train = ImageFolderDataset(folder / "train", strict=strict)
    test = ImageFolderDataset(folder / "test", classes=train.classes, strict=strict)
    mem = [to_memory(train), to_memory(test)] if in_memory else [None]
    unreadable_summary([train, test])
    if any(ds is None for ds in mem):
        return train, test, train.classes
    if use_cache:
        for ds, p in zip(mem, cached, strict=True):
            tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
            torch.save({"images": ds.images, "labels": ds.labels, "classes": train.classes}, tmp)
            os.replace(tmp, p)
    return mem[0], mem[1], train.classes


# --------------------------------------------------------------------------- folders


def _load_folder(
    path: Path, in_memory: bool, strict: bool = False
) -> tuple[Dataset, Dataset | None, DatasetInfo]:
    if not path.exists():
        raise DatasetNotFoundError(
            f"Dataset '{path}' is neither a known name ({', '.join(KNOWN_DATASETS)}) nor an "
            "existing image folder; check the path."
        )
    if not path.is_dir():
        raise DatasetError(f"Dataset path {path} is a file, not a folder of images.")
    test_dir = next((path / s for s in ("test", "val") if (path / s).is_dir()), None)
    if (path / "train").is_dir():
        train = ImageFolderDataset(path / "train", strict=strict)
        test = (
            ImageFolderDataset(test_dir, classes=train.classes, strict=strict) if test_dir else None
        )
    else:
        train, test = ImageFolderDataset(path, strict=strict), None
    folders = [ds for ds in (train, test) if ds is not None]
    splits: list[Dataset] = list(folders)
    if in_memory:
        held = []
        for ds in folders:  # decoding drops unreadable files, so the stats below skip them
            tensors = to_memory(ds)
            if tensors is None:
                log.info("%s: images differ in size or exceed 2 GB; decoding them lazily", path)
                break
            held.append(tensors)
        else:
            splits = held
    mean, std, gray = folder_stats(train)
    unreadable = unreadable_summary(folders)
    info = DatasetInfo(path.resolve().name, list(train.classes), mean, std, gray, unreadable)
    return splits[0], splits[1] if test is not None else None, info


# --------------------------------------------------------------------------- public entry


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
    key = {
        "fashionmnist": "fashion-mnist",
        "cifar-10": "cifar10",
        "cifar-100": "cifar100",
    }.get(key, key)
    if key == "fashion-mnist":
        train, test = _load_fashion_mnist(path, download)
        mean, std = _KNOWN_STATS[key]
        return (
            train,
            test,
            DatasetInfo(key, list(FASHION_MNIST_CLASSES), mean, std, True),
        )
    if key in ("cifar10", "cifar100", "stl10", "cifar10-jpeg"):
        if key == "stl10":
            train, test, classes = _load_stl10(path, download)
        elif key == "cifar10-jpeg":
            train, test, classes = _load_cifar10_jpeg(path, in_memory, strict)
        else:
            train, test, classes = _load_cifar(key, path, download)
        mean, std = _KNOWN_STATS[key]
        return train, test, DatasetInfo(key, classes, mean, std, False)
    if key in ("folder", "imagenet"):
        if path is None:
            raise DatasetNotFoundError(
                f"Dataset '{name}' needs data_dir: set it to the image folder "
                "(with train/ and val/ sub-folders for ImageNet)."
            )
        train, test, info = _load_folder(path, in_memory, strict)
        if key == "imagenet":
            info.name = "imagenet"
            info.mean, info.std = _KNOWN_STATS["imagenet"]
        return train, test, info
    return _load_folder(Path(name).expanduser(), in_memory, strict)


def _labels(dataset: Dataset) -> np.ndarray | None:
    if isinstance(dataset, TensorImageDataset):
        return dataset.labels.numpy()
    if isinstance(dataset, ImageFolderDataset):
        return np.array([label for _, label in dataset.samples], dtype=np.int64)
    return None


def subset_indices(labels: np.ndarray | None, length: int, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a deterministic random subset; class-balanced when all labels >= 0."""
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    if n >= length:
        return np.arange(length)
    if labels is None or len(labels) == 0 or labels.min() < 0:
        return np.sort(rng.choice(length, n, replace=False))
    # Rank each item within its class in random order, then take ranks 0, 1, 2, ... across
    # classes (class order random per rank), so class counts differ by at most one.
    classes, inverse = np.unique(labels, return_inverse=True)
    rank = np.empty(length, dtype=np.int64)
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        rank[rng.permutation(members)] = np.arange(len(members))
    class_order = rng.permutation(len(classes))[inverse]
    order = np.lexsort((class_order, rank))
    return np.sort(order[:n])


def subset(dataset: Dataset, n: int, seed: int = 0) -> Dataset:
    """A deterministic random subset of at most n items, class-balanced when fully labelled.

    A TensorImageDataset or ImageFolderDataset gives a new one of the same kind (same transform);
    any other dataset gives a torch Subset.
    """
    length = len(dataset)  # type: ignore[arg-type]
    return _take(dataset, subset_indices(_labels(dataset), length, n, seed))


def _take(dataset: Dataset, idx: np.ndarray) -> Dataset:
    """The items at idx, as the same kind of dataset when it is one of ours."""
    if isinstance(dataset, TensorImageDataset):
        t = torch.from_numpy(idx)
        return TensorImageDataset(dataset.images[t], dataset.labels[t], dataset.transform)
    if isinstance(dataset, ImageFolderDataset):
        out = copy.copy(dataset)
        out.samples = [dataset.samples[i] for i in idx]
        return out
    return torch.utils.data.Subset(dataset, idx.tolist())


def labelled(dataset: Dataset) -> Dataset:
    """The items with a label (>= 0), e.g. STL-10's `train` part of `train+unlabeled`."""
    labels = _labels(dataset)
    if labels is None or len(labels) == 0 or labels.min() >= 0:
        return dataset
    return _take(dataset, np.flatnonzero(labels >= 0))


__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageFolderDataset",
    "TensorImageDataset",
    "decode_image",
    "default_data_dir",
    "labelled",
    "load_datasets",
    "read_idx",
    "subset",
    "subset_indices",
]
