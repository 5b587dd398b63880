"""Deterministic, class-balanced subsets of a source (label fractions, kNN banks, train_subset),
the labelled part of a partly labelled one (STL-10's train+unlabeled), and a subset of a stream
by position, reshuffled on every pass (``StreamSubset``)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Dataset, IterableDataset

from byol.data.decode import IN_MEMORY_LIMIT_BYTES
from byol.data.source import Item, Source, StreamingSource, Transform, indexable


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


def subset(dataset: Dataset, n: int, seed: int = 0, fix: str = "") -> Source:
    """A deterministic random subset of at most n items, class-balanced when fully labelled.

    An indexable source gives one of the same kind (same transform, through its ``take``); a
    streaming source is refused in one line naming ``fix``: its items cannot be picked by index.
    """
    source = indexable(dataset, f"a subset of {n} items", fix)
    return source.take(subset_indices(source.label_array(), len(source), n, seed))


def labelled(dataset: Dataset) -> Dataset:
    """The items with a label (>= 0), e.g. STL-10's `train` part of `train+unlabeled`.

    A source whose labels are unknown is returned as it is; a labelled stream is filtered as it
    is read.
    """
    if getattr(dataset, "streaming", False):
        return dataset.only_labelled() if dataset.labelled else dataset  # type: ignore[attr-defined]
    source = indexable(dataset, "the labelled items")
    labels = source.label_array()
    if labels is None or len(labels) == 0 or labels.min() >= 0:
        return dataset
    return source.take(np.flatnonzero(labels >= 0))


class StreamSubset(IterableDataset):
    """The items of a stream at ``positions`` (indices into its stored order), through
    ``transform``, in a new seeded order on each pass: fine-tuning's label subset and the linear
    probe's training crops on a source that has no random access.

    The first pass reads the whole stream and keeps the chosen items' uint8 images while they fit
    in ``hold_bytes``; later passes then read memory. A subset too large to hold is read from the
    stream again on every pass, through a seeded shuffle buffer of ``buffer`` items.
    """

    def __init__(
        self,
        source: StreamingSource,
        positions: np.ndarray,
        transform: Transform,
        seed: int = 0,
        buffer: int = 1000,
        hold_bytes: int = IN_MEMORY_LIMIT_BYTES,
    ) -> None:
        self.source, self.transform, self.seed = source.with_transform(None), transform, seed
        self.chosen = frozenset(int(p) for p in positions)
        self.buffer, self.hold_bytes = buffer, hold_bytes
        self.passes = 0
        self.held: list[Item] | None = None

    def __len__(self) -> int:
        return len(self.chosen)

    def __iter__(self) -> Iterator[Item]:
        order = random.Random(self.seed * 1_000_003 + self.passes)
        self.passes += 1
        if self.held is not None:
            items: Iterator[Item] = iter(order.sample(self.held, len(self.held)))
        else:
            items = shuffled(self._read(), self.buffer, order)
        for image, label in items:
            yield self.transform(image), label

    def _read(self) -> Iterator[Item]:
        """The chosen items in stream order, held once the pass completes if they fit."""
        kept: list[Item] | None = []
        size = 0
        for position, item in enumerate(self.source.stream()):
            if position not in self.chosen:
                continue
            if kept is not None:
                size += item[0].numel() * item[0].element_size()
                if size <= self.hold_bytes:
                    kept.append(item)
                else:
                    kept = None  # too large to hold: every pass reads the stream
            yield item
        self.held = kept


def shuffled(records: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """``records`` through a shuffle buffer of ``size``: each out is a random one of the buffer."""
    buffer: list[Any] = []
    for record in records:
        if len(buffer) < size:
            buffer.append(record)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = record
    rng.shuffle(buffer)
    yield from buffer
