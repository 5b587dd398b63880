"""Hugging Face datasets (``dataset=hf:NAME``), read with the ``datasets`` package (the ``hf``
extra). NAME is a folder written by ``save_to_disk``, a parquet file, a folder of parquet files
(``train-*.parquet``, ``test-*.parquet``, as the Hub lays them out) or a Hub name (downloaded by
``datasets`` on a machine with internet).

A split is read as an indexable source, each image decoded when it is read (``in_memory`` holds
a small set of same-size images decoded, as a folder's are); with ``hf_streaming`` as a stream
that never lands on disk. The image column may hold ``datasets.Image`` cells, encoded bytes or
file paths; the label column integers (a ``ClassLabel`` names the classes) or nothing.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from byol.data.decode import IN_MEMORY_LIMIT_BYTES, UnreadableImage, decode_bytes
from byol.data.info import DatasetInfo
from byol.data.shards import measured_stats
from byol.data.source import IndexableSource, Item, Splits, StreamingSource
from byol.data.tensors import TensorImageDataset
from byol.errors import DatasetError, DatasetNotFoundError
from byol.files import expand_home

log = logging.getLogger(__name__)
PREFIX = "hf:"


@dataclass(frozen=True)
class HFOptions:
    """Which splits and columns of a Hugging Face dataset are read (``data.hf_*`` settings)."""

    split: str = "train"
    test_split: str = "test"  # "" = no test split
    image_column: str = "image"
    label_column: str = "label"  # "" = unlabelled
    streaming: bool = False


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            "dataset=hf:... needs the datasets package; install it with `pip install 'byol[hf]'`."
        ) from None
    return datasets


def _image_bytes(cell: Any, where: str) -> bytes:
    if isinstance(cell, dict):  # a datasets.Image cell read undecoded: bytes, or a file's path
        if cell.get("bytes"):
            return cell["bytes"]
        if cell.get("path"):
            return Path(cell["path"]).read_bytes()
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    if isinstance(cell, str):
        return Path(cell).read_bytes()
    raise UnreadableImage(where, f"its image cell is a {type(cell).__name__}, not an image")


class _Rows:
    """What both kinds share: one row of the image and label columns as an item."""

    options: HFOptions
    name: str

    def item(self, row: dict[str, Any], where: str) -> Item:
        try:
            data = _image_bytes(row[self.options.image_column], where)
        except OSError as error:
            raise UnreadableImage(where, str(error)) from None
        label = row.get(self.options.label_column) if self.options.label_column else None
        return decode_bytes(data, where), -1 if label is None else int(label)


class HFImages(_Rows, IndexableSource):
    """A split of a Hugging Face ``Dataset``, decoded row by row. An unreadable row is replaced
    by the next readable one, as a folder's file is, and named in ``unreadable``."""

    def __init__(self, dataset: Any, options: HFOptions, name: str) -> None:
        self.dataset, self.options, self.name = dataset, options, name
        self.unreadable: list[str] = []

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Item:
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            try:
                image, label = self.item(self.dataset[i], f"{self.name}[{i}]")
            except UnreadableImage as error:
                if str(error.path) not in self.unreadable:
                    self.unreadable.append(str(error.path))
                    log.warning("skipping unreadable row %s (%s)", error.path, error.reason)
                continue
            return (image if self.transform is None else self.transform(image)), label
        raise DatasetError(f"no row of {self.name} holds a readable image; check image_column.")

    def label_array(self) -> np.ndarray:
        if not self.options.label_column:
            return np.full(len(self), -1, dtype=np.int64)
        column = self.dataset.with_format("numpy")[self.options.label_column]
        return np.asarray(column, dtype=np.int64).reshape(len(self))

    def take(self, indices: np.ndarray) -> HFImages:
        part = HFImages(self.dataset.select(np.asarray(indices)), self.options, self.name)
        part.transform = self.transform
        return part


class HFStream(_Rows, StreamingSource):
    """A split of a Hugging Face ``IterableDataset`` (``hf_streaming``), read in its order."""

    def __init__(self, dataset: Any, options: HFOptions, name: str, labelled: bool) -> None:
        self.dataset, self.options, self.name, self.labelled = dataset, options, name, labelled
        self.unreadable: list[str] = []

    def stream(self) -> Iterator[Item]:
        for i, row in enumerate(self.dataset):
            try:
                yield self.item(row, f"{self.name}[{i}]")
            except UnreadableImage as error:
                self.unreadable.append(str(error.path))
                log.warning("skipping unreadable row %s (%s)", error.path, error.reason)

    def stream_part(self, part: int, parts: int) -> Iterator[Item]:
        worker = get_worker_info()
        if worker is not None and (worker.id, worker.num_workers) == (part, parts):
            return self.stream()  # in a DataLoader worker, datasets reads only its own shards
        return itertools.islice(self.stream(), part, None, parts)


def _open(name: str, split: str, streaming: bool) -> Any:
    """The split ``split`` of ``name``; None when that split does not exist."""
    datasets = _datasets()
    path = expand_home(name)
    try:
        if path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json")):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                loaded = loaded[split] if split in loaded else None
            elif split != "train":
                return None
            return loaded.to_iterable_dataset() if streaming and loaded is not None else loaded
        if path.is_file() and path.suffix == ".parquet":
            if split != "train":
                return None
            return datasets.load_dataset(
                "parquet", data_files=str(path), split="train", streaming=streaming
            )
        builder = datasets.load_dataset_builder(str(path) if path.exists() else name)
        splits = builder.info.splits or {}
        if splits and split not in splits:
            return None
        return datasets.load_dataset(
            str(path) if path.exists() else name, split=split, streaming=streaming
        )
    except (ValueError, KeyError) as error:
        if "split" in str(error).lower() or "Unknown split" in str(error):
            return None
        raise DatasetError(f"hf:{name} cannot be read ({error}); check the name.") from None
    except FileNotFoundError as error:
        raise DatasetNotFoundError(
            f"hf:{name} is neither a local dataset (a save_to_disk folder, parquet files) nor one "
            f"on the Hub ({error}); check the name."
        ) from None


def _check_columns(split: Any, options: HFOptions, name: str) -> None:
    columns = list(split.column_names or split.features or [])
    for setting, column in (
        ("image_column", options.image_column),
        ("label_column", options.label_column),
    ):
        if column and columns and column not in columns:
            raise DatasetError(
                f"hf:{name} has no column {column!r} (its columns: {', '.join(columns)}); set "
                f"{setting}= to the column that holds the {setting.split('_')[0]}s."
            )


def _undecoded(split: Any, options: HFOptions) -> Any:
    """The image and label columns alone, images as their encoded bytes (decoded by us)."""
    datasets = _datasets()
    keep = [c for c in (options.image_column, options.label_column) if c]
    split = split.select_columns(keep)
    feature = (split.features or {}).get(options.image_column)
    if isinstance(feature, datasets.Image):
        split = split.cast_column(options.image_column, datasets.Image(decode=False))
    return split


def _classes(split: Any, options: HFOptions, source: IndexableSource | None) -> list[str]:
    if not options.label_column:
        return []
    feature = (split.features or {}).get(options.label_column)
    if getattr(feature, "names", None):
        return list(feature.names)
    if source is None:
        return []
    top = int(source.label_array().max(initial=-1))
    return [str(i) for i in range(top + 1)]


def _in_memory(source: HFImages) -> TensorImageDataset | None:
    """Every image decoded into one tensor, where they share a size and fit; else None."""
    first = source[0][0]
    if len(source) * first.numel() > IN_MEMORY_LIMIT_BYTES:
        return None
    images = torch.empty((len(source), *first.shape), dtype=torch.uint8)
    for i in range(len(source)):
        image = source[i][0]
        if image.shape != first.shape:
            return None
        images[i] = image
    return TensorImageDataset(images, torch.from_numpy(source.label_array()))


def load_hf(name: str, options: HFOptions, in_memory: bool = True) -> Splits:
    """(train, test or None, info) of ``hf:NAME``."""
    opened = {}
    for role, split in (("train", options.split), ("test", options.test_split)):
        opened[role] = _open(name, split, options.streaming) if split else None
        if opened[role] is not None:
            _check_columns(opened[role], options, name)
            opened[role] = _undecoded(opened[role], options)
    if opened["train"] is None:
        raise DatasetError(
            f"hf:{name} has no split {options.split!r}; set hf_split= to one it has."
        )
    label = bool(options.label_column)
    made: dict[str, Any] = {}
    for role, split in opened.items():
        if split is not None:
            source = HFStream if options.streaming else HFImages
            args = (split, options, f"hf:{name}/{role}")
            made[role] = source(*args, label) if options.streaming else source(*args)
    train, test = made["train"], made.get("test")
    classes = _classes(opened["train"], options, None if options.streaming else train)
    first = train.stream() if options.streaming else (train[i] for i in range(len(train)))
    stats = measured_stats(first)
    if stats is None:
        raise DatasetError(f"no image of hf:{name} can be read; check image_column.")
    if in_memory and not options.streaming:
        held = [_in_memory(s) if s is not None else None for s in (train, test)]
        if held[0] is not None and (test is None or held[1] is not None):
            train, test = held
    info = DatasetInfo(Path(name).name or name, classes, *stats)
    return train, test, info
