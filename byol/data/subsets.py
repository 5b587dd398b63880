"""Deterministic, class-balanced subsets of a source (label fractions, kNN banks, train_subset),
and the labelled part of a partly labelled one (STL-10's train+unlabeled)."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from byol.data.source import Source, indexable


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


def subset(dataset: Dataset, n: int, seed: int = 0) -> Source:
    """A deterministic random subset of at most n items, class-balanced when fully labelled.

    An indexable source gives one of the same kind (same transform, through its ``take``); a
    streaming source is refused in one line: its items cannot be picked by index.
    """
    source = indexable(dataset, f"a subset of {n} items")
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
