"""Deterministic, class-balanced subsets of a dataset (label fractions, kNN banks, train_subset)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.utils.data import Dataset

from byol.data.images import ImageFolderDataset, TensorImageDataset


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
