"""The contract every dataset source implements, and what the registry knows about a source.

A source yields ``(image, label)``: ``image`` a uint8 (3, H, W) tensor while ``transform`` is None
(the caller sets it), ``label`` an int, -1 for an unlabelled item. A source declares which of two
kinds it is through its ``streaming`` attribute:

- ``IndexableSource`` (map-style): a length, random access, every label at once, subsets by index
  (``take``), and, when its images are resident (``in_memory``), the whole uint8 batch
  (``images_tensor``) for the views made on the training device.
- ``StreamingSource`` (iterable): items in a stored order and nothing else; no length unless
  ``num_samples`` is known, no random access. It splits itself across DataLoader workers and
  across ranks (``shard``).

Code that needs random access asks for it through ``indexable``, which refuses a streaming
source in one line naming what needed it.
"""

from __future__ import annotations

import abc
import copy
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from byol.data.info import DatasetInfo
from byol.errors import DatasetError

Item = tuple[Any, int]
Transform = Callable[[torch.Tensor], Any]
Stats = tuple[tuple[float, float, float], tuple[float, float, float]]
S = TypeVar("S")


def _with_transform(source: S, transform: Transform | None) -> S:
    clone = copy.copy(source)
    clone.transform = transform  # type: ignore[attr-defined]
    return clone


class IndexableSource(Dataset, abc.ABC):
    """A map-style source: ``len``, ``source[i]`` and the labels of all items at once."""

    streaming: ClassVar[bool] = False
    in_memory: ClassVar[bool] = False  # True: images_tensor() holds every image
    transform: Transform | None = None

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Item: ...

    @abc.abstractmethod
    def label_array(self) -> np.ndarray | None:
        """Every item's label as int64 (-1 = that item is unlabelled); None = not known without
        reading every item."""

    @abc.abstractmethod
    def take(self, indices: np.ndarray) -> IndexableSource:
        """The items at ``indices``, in that order, as a source of the same kind and transform."""

    def images_tensor(self) -> torch.Tensor:
        """All images as one uint8 (N, 3, H, W) tensor; only where ``in_memory``."""
        raise DatasetError(
            f"{type(self).__name__} reads its images item by item; only an in-memory source has "
            "them as one tensor."
        )

    def files(self) -> list[Path] | None:
        """The file each item was read from, where items are files; else None."""
        return None

    @property
    def num_samples(self) -> int:
        return len(self)

    def with_transform(self, transform: Transform | None) -> IndexableSource:
        """The same items (a shallow copy: images are shared) through another transform."""
        return _with_transform(self, transform)


class StreamingSource(IterableDataset, abc.ABC):
    """An iterable source read in its stored order; subclasses implement ``stream``.

    ``labelled`` says whether items carry class labels (an item may still be -1);
    ``num_samples`` is the item count where the source knows it without reading (else None).
    """

    streaming: ClassVar[bool] = True
    in_memory: ClassVar[bool] = False
    transform: Transform | None = None
    labelled: bool = True
    num_samples: int | None = None

    @abc.abstractmethod
    def stream(self) -> Iterator[Item]:
        """Every item, untransformed, in the stored order: the same order on every call."""

    def stream_part(self, part: int, parts: int) -> Iterator[Item]:
        """Part ``part`` of ``parts`` disjoint parts that together hold every item once, each in
        stream order. Parts nest: part p of n is parts p, p + n, p + 2n, ... of k * n together
        (ranks split into workers so). This default keeps items p, p + n, ... of the whole
        stream; a source stored in pieces (tar shards) overrides it to read only its own."""
        return itertools.islice(self.stream(), part, None, parts)

    def pieces(self) -> list[int] | None:
        """The item count of each piece the stream is stored in (its tar shards), in stored
        order; None where the counts are unknown without reading it all. Pretraining reads a
        stream by pieces: ranks and DataLoader workers take whole pieces, a resumed run finds its
        place from the counts (``training/stream_epochs.py``)."""
        return None

    def read_piece(self, index: int) -> Iterator[Any]:
        """Piece ``index``'s records, undecoded: cheap to read, to skip and to shuffle."""
        raise NotImplementedError(f"{describe(self)} is not read by pieces")

    def decode(self, record: Any) -> Item:
        """A record of ``read_piece`` as an untransformed item; raises ``UnreadableImage``."""
        raise NotImplementedError(f"{describe(self)} is not read by pieces")

    def record_name(self, record: Any) -> str:
        """Where a record of ``read_piece`` came from (its shard and key), for people."""
        raise NotImplementedError(f"{describe(self)} is not read by pieces")

    def __iter__(self) -> Iterator[Item]:
        worker = get_worker_info()  # each DataLoader worker yields its own part
        items = self.stream() if worker is None else self.stream_part(worker.id, worker.num_workers)
        for image, label in items:
            yield (image if self.transform is None else self.transform(image)), int(label)

    def shard(self, index: int, count: int) -> StreamingSource:
        """Rank ``index``'s part of ``count`` ranks (``stream_part``), split again across its
        DataLoader workers."""
        if not 0 <= index < count:
            raise ValueError(f"shard index must be in [0, {count}), got {index}")
        return _Shard(self, index, count)

    def files(self) -> list[Path] | None:
        """As IndexableSource.files; a stream's items are seldom one file each."""
        return None

    def only_labelled(self) -> StreamingSource:
        """The items whose label is >= 0, in order."""
        return _OnlyLabelled(self)

    def with_transform(self, transform: Transform | None) -> StreamingSource:
        return _with_transform(self, transform)


class _Derived(StreamingSource):
    """A stream read from another source's untransformed items."""

    def __init__(self, source: StreamingSource) -> None:
        self.source, self.transform, self.labelled = source, source.transform, source.labelled
        self.name = describe(source)  # what a message names: the data, not this wrapper


class _Shard(_Derived):
    def __init__(self, source: StreamingSource, index: int, count: int) -> None:
        super().__init__(source)
        self.index, self.count = index, count
        total = source.num_samples
        self.num_samples = None if total is None else len(range(index, total, count))

    def stream(self) -> Iterator[Item]:
        return self.source.stream_part(self.index, self.count)

    def stream_part(self, part: int, parts: int) -> Iterator[Item]:
        # A worker's part of a rank's part: parts nest (see stream_part).
        return self.source.stream_part(self.index + self.count * part, self.count * parts)


class _OnlyLabelled(_Derived):
    def stream(self) -> Iterator[Item]:
        return (item for item in self.source.stream() if item[1] >= 0)

    def stream_part(self, part: int, parts: int) -> Iterator[Item]:
        return (item for item in self.source.stream_part(part, parts) if item[1] >= 0)


Source = IndexableSource | StreamingSource


class MapSource(IndexableSource):
    """Any other map-style torch Dataset of (image, label), its labels unknown until read."""

    def __init__(self, dataset: Dataset, transform: Transform | None = None) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Item:
        image, label = self.dataset[index]
        return (image if self.transform is None else self.transform(image)), label

    def label_array(self) -> np.ndarray | None:
        return None

    def take(self, indices: np.ndarray) -> MapSource:
        inner = torch.utils.data.Subset(self.dataset, np.asarray(indices).tolist())
        return MapSource(inner, self.transform)


def describe(source: object) -> str:
    return getattr(source, "name", None) or type(source).__name__


def indexable(dataset: Dataset, purpose: str, fix: str = "") -> IndexableSource:
    """``dataset`` as an indexable source; a streaming one is refused in one line naming
    ``purpose`` and ``fix`` (default: an indexable copy of the data)."""
    if getattr(dataset, "streaming", False):
        raise DatasetError(
            f"{purpose} needs random access by index, but {describe(dataset)} is a streaming "
            f"source (read in its stored order only); {fix or 'use an indexable copy of it'}."
        )
    if isinstance(dataset, IndexableSource):
        return dataset
    return MapSource(dataset)


def num_items(dataset: Dataset) -> int | None:
    """How many items ``dataset`` yields: its length, a stream's ``num_samples`` (None: unknown)."""
    if getattr(dataset, "streaming", False):
        return dataset.num_samples  # type: ignore[attr-defined]
    return len(dataset)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LoadRequest:
    """What ``load_datasets`` was asked for, as every registered loader receives it."""

    name: str  # the registered name, so that one loader may serve several
    data_dir: Path | None  # None: the source's usual place
    download: bool = False
    in_memory: bool = True  # hold decoded images in memory where they fit
    strict: bool = False  # the first unreadable image file raises instead of being skipped
    index_dir: Path | None = None  # where a folder's list of files is kept between loads


Splits = tuple[Source, Source | None, DatasetInfo]


@dataclass(frozen=True)
class Registered:
    """A registry entry: how to load a source, and the (mean, std) its images are normalised
    with when that is known without loading it (None: measured from the images)."""

    load: Callable[[LoadRequest], Splits]
    stats: Stats | None = None
