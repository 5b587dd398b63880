"""The online quality signal of a run: weighted kNN of the frozen online encoder, and the two
references it is read against (the same encoder at random initialisation, raw pixels)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from byol.config import Config
from byol.data import DatasetInfo, indexable, labelled, num_items, subset
from byol.evaluation.features import extract_features
from byol.evaluation.knn import knn_accuracy
from byol.views.per_image import EvalTransform


class KnnMonitor:
    """Scores a frozen encoder with weighted kNN: bank = labelled training images, queries =
    the test split. Per-epoch scores may use a class-balanced subset of the bank."""

    def __init__(
        self,
        config: Config,
        train: Dataset,
        test: Dataset,
        info: DatasetInfo,
        device: torch.device,
        precision: str,
    ) -> None:
        self.config, self.device, self.precision = config, device, precision
        self.channels_last = False  # the run's memory layout, once chosen (``byol/speed.py``)
        transform = EvalTransform(
            config.data.image_size, info.mean, info.std, config.monitor.eval_crop_fraction
        )
        train = labelled(train)
        self.full_bank = _with_transform(train, transform)
        self.bank = self.full_bank
        size = num_items(train)  # None: a stream of unknown length
        if 0 < config.monitor.knn_bank_subset and (
            size is None or config.monitor.knn_bank_subset < size
        ):
            purpose = (
                f"knn_bank_subset={config.monitor.knn_bank_subset} (a class-balanced kNN bank)"
            )
            indexable(train, purpose, "set knn_bank_subset=0 to score against the whole stream")
            bank = subset(train, config.monitor.knn_bank_subset, config.seed)
            self.bank = _with_transform(bank, transform)
        self.queries = _with_transform(test, transform)

    def _features(self, encoder: torch.nn.Module, dataset: Dataset):
        c = self.config
        return extract_features(
            encoder,
            dataset,
            self.device,
            c.monitor.eval_batch_size,
            self.precision,
            0,
            self.channels_last,
        )

    def _knn(self, bank: tuple, queries: tuple) -> float:
        c = self.config
        return knn_accuracy(*bank, *queries, c.monitor.knn_k, c.monitor.knn_temperature)

    def score(self, encoder: torch.nn.Module, full: bool = False) -> float:
        bank = self._features(encoder, self.full_bank if full else self.bank)
        return self._knn(bank, self._features(encoder, self.queries))

    @property
    def narrowed(self) -> bool:
        """Whether the epochs' bank is a subset (``knn_bank_subset``) of the whole one."""
        return self.bank is not self.full_bank

    def score_pixels(self, full: bool = True) -> float:
        bank_set = self.full_bank if full else self.bank
        (bank, bank_labels), (queries, query_labels) = map(_pixels, (bank_set, self.queries))
        if _grey(bank) and _grey(queries):
            # Three equal channels have the same cosine similarities as one, at 3x the cost.
            bank, queries = bank[:, :1], queries[:, :1]
        return self._knn((bank.flatten(1), bank_labels), (queries.flatten(1), query_labels))


def _with_transform(dataset: Dataset, transform: Any) -> Dataset:
    clone = copy.copy(dataset)
    clone.transform = transform
    return clone


def _pixels(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(DataLoader(dataset, batch_size=1024))
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def _grey(images: torch.Tensor) -> bool:
    return images.shape[1] > 1 and bool((images == images[:, :1]).all())
