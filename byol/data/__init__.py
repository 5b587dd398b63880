"""Dataset sources: uint8 (3, H, W) image tensors plus integer labels (-1 = unlabelled).

Every source yields ``(image, label)`` with ``image`` a uint8 tensor of shape (3, H, W) while its
``transform`` is None; the caller sets ``.transform`` (augmentations, eval preprocessing). A
source declares its kind (``source.py``):

- indexable (``IndexableSource``, map-style): ``len``, ``source[i]``, ``label_array()`` (None =
  unknown, -1 = that item unlabelled), ``take(indices)`` for subsets, and ``images_tensor()``
  where ``in_memory`` (views are then made a batch at a time on the training device);
- streaming (``StreamingSource``, iterable): items in a stored order, ``num_samples`` if known,
  ``labelled``, ``shard(rank, ranks)``; it splits itself across DataLoader workers and cannot be
  subset by index (``indexable`` refuses it in one line).

Subsets, the labelled part, the kNN monitor and evaluation go through this contract only. A new
source is one file here that returns its splits from a ``Registered`` loader, plus one line in
``SOURCES`` below. Known names: fashion-mnist, cifar10, cifar100, stl10, cifar10-jpeg, imagenet,
folder, shards; a folder of .tar shards or a shard pattern (``{000..127}``, a URL,
``pipe:``) is read as shards; anything else is a path to a folder of images.

    source.py            the contract, LoadRequest, Registered
    tensors.py           images held in memory as one tensor
    images.py            a folder of image files, decoded per item or into memory
    decode.py            image files to uint8 RGB tensors
    idx.py               Fashion-MNIST (IDX files)
    torchvision_sets.py  CIFAR-10/100, STL-10
    cifar10_jpeg.py      the CIFAR-10 JPEG copy
    folders.py           a user's image folder, ImageNet's
    folder_index.py      a folder's files, walked once and kept beside the run
    packed_names.py      many file names as NumPy arrays
    shards.py            WebDataset tar shards (streaming), read with webdataset
    shard_files.py       where shards are, their counts, index.json
    hf.py                Hugging Face datasets (hf:NAME), read with datasets
    subsets.py           class-balanced subsets, the labelled items, a stream's subset
"""

from __future__ import annotations

from pathlib import Path

from byol.data import cifar10_jpeg, folders, hf, idx, shard_files, shards, torchvision_sets
from byol.data.decode import IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, decode_image
from byol.data.hf import HFOptions
from byol.data.idx import FASHION_MNIST_CLASSES, read_idx
from byol.data.images import ImageFolderDataset
from byol.data.info import DatasetInfo, default_data_dir
from byol.data.source import (
    IndexableSource,
    LoadRequest,
    Registered,
    Source,
    StreamingSource,
    indexable,
    num_items,
)
from byol.data.subsets import StreamSubset, labelled, subset, subset_indices
from byol.data.tensors import TensorImageDataset
from byol.errors import DatasetError, DatasetNotFoundError
from byol.files import expand_home

# Every source by name; "folder" and anything that is not a name are image folders.
SOURCES: dict[str, Registered] = {
    "fashion-mnist": idx.FASHION_MNIST,
    "cifar10": torchvision_sets.CIFAR10,
    "cifar100": torchvision_sets.CIFAR100,
    "stl10": torchvision_sets.STL10,
    "cifar10-jpeg": cifar10_jpeg.CIFAR10_JPEG,
    "imagenet": folders.IMAGENET,
    "folder": folders.FOLDER,
    "shards": shards.SHARDS,
}
KNOWN_DATASETS = tuple(name for name in SOURCES if name != "folder")

_ALIASES = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}


def _key(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    return _ALIASES.get(key, key)


def known_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) a known dataset's images are normalised with; None for a folder."""
    entry = SOURCES.get(_key(name))
    return entry.stats if entry is not None else None


def load_datasets(
    name: str,
    data_dir: str | None = None,
    download: bool = False,
    in_memory: bool = True,
    strict: bool = False,
    hf_options: hf.HFOptions | None = None,
    index_dir: Path | None = None,
) -> tuple[Source, Source | None, DatasetInfo]:
    """Return (train, test or None, info); items are (uint8 (3, H, W) tensor, int label).

    ``name`` is fashion-mnist, cifar10, cifar100, stl10 (train = train+unlabeled, label -1 for
    unlabeled), cifar10-jpeg, imagenet (a folder with train/ and val/ at data_dir), "folder"
    (the folder at data_dir), shards (the tar shards at data_dir), any other name in
    ``SOURCES``, a folder of .tar shards, a shard pattern or URL, or a path to a folder.
    ``data_dir`` "" or None means the usual place. ``in_memory`` matters for image folders only;
    the other sets always are in memory. Unreadable image files are skipped and listed in
    ``info.unreadable``, or, with ``strict``, the first one raises DatasetError naming it.
    ``hf:NAME`` is a Hugging Face dataset, read as ``hf_options`` say (splits, columns). A
    folder's list of files is kept in ``index_dir`` (when given) for the next load.
    Both splits come with transform=None; the caller sets ``.transform``.
    """
    if name.startswith(hf.PREFIX):
        return hf.load_hf(name[len(hf.PREFIX) :], hf_options or hf.HFOptions(), in_memory)
    key = _key(name)
    entry = SOURCES.get(key)
    if entry is None and shard_files.looks_like_shards(name):
        return shards.load_location(name, strict)
    if entry is None:
        path = expand_home(name)
        if not path.exists():
            raise DatasetNotFoundError(
                f"Dataset '{path}' is neither a known name ({', '.join(KNOWN_DATASETS)}) nor an "
                "existing image folder; check the path."
            )
        return folders.load_folder(path, in_memory, strict, index_dir)
    path = expand_home(data_dir) if data_dir else None
    return entry.load(LoadRequest(key, path, download, in_memory, strict, index_dir))


__all__ = [
    "IMAGE_EXTENSIONS",
    "KNOWN_DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SOURCES",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "FASHION_MNIST_CLASSES",
    "HFOptions",
    "ImageFolderDataset",
    "IndexableSource",
    "LoadRequest",
    "Registered",
    "Source",
    "StreamSubset",
    "StreamingSource",
    "TensorImageDataset",
    "decode_image",
    "default_data_dir",
    "indexable",
    "known_stats",
    "labelled",
    "load_datasets",
    "num_items",
    "read_idx",
    "subset",
    "subset_indices",
]
