"""Fashion-MNIST from its IDX files: the Debian package's folder, a torchvision download, or
``data_dir``."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch

from byol.data.info import DatasetInfo, default_data_dir
from byol.data.source import LoadRequest, Registered, Splits
from byol.data.tensors import TensorImageDataset
from byol.data.torchvision_sets import torchvision_dataset
from byol.errors import DatasetError, DatasetNotFoundError

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

FASHION_MNIST_STATS = ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530))

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


def load_fashion_mnist(
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
            ds = torchvision_dataset(torchvision.datasets.FashionMNIST, root, True, train=train)
            images = ds.data.to(torch.uint8)[:, None].repeat(1, 3, 1, 1)
            splits.append(TensorImageDataset(images, ds.targets.to(torch.int64)))
        return splits[0], splits[1]
    raise DatasetNotFoundError(
        "Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) were not found in "
        f"{', '.join(str(c) for c in candidates)}; install them with "
        "`apt-get install dataset-fashion-mnist` or fetch them with `--set download=true`."
    )


def load(request: LoadRequest) -> Splits:
    train, test = load_fashion_mnist(request.data_dir, request.download)
    mean, std = FASHION_MNIST_STATS
    return train, test, DatasetInfo(request.name, list(FASHION_MNIST_CLASSES), mean, std, True)


FASHION_MNIST = Registered(load, FASHION_MNIST_STATS)
