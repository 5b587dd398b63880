"""The evaluation protocols as run-level operations: load an encoder (which one, with which
config: ``source.py``), cache its features, keep the label subsets on disk, run kNN / linear /
fine-tuning / transfer, record the numbers.

Everything lands in the run folder (or the folder of the given ``encoder.safetensors``):
``features/<method>-<dataset>-<split>.pt``, ``subsets/<dataset>-<tag>-seed<seed>.npy|.json``,
``results.json`` and ``results.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from byol import run_folder
from byol.data import (
    StreamSubset,
    indexable,
    labelled,
    load_datasets,
    num_items,
    subset,
    subset_indices,
)
from byol.errors import ByolError
from byol.evaluation import probes
from byol.evaluation.eval_settings import split_overrides
from byol.evaluation.features import cached_features, extract_features
from byol.evaluation.knn import knn_evaluate
from byol.evaluation.label_subsets import read_subset, write_subset
from byol.evaluation.results import fraction_tag, update_results
from byol.evaluation.source import EncoderSource
from byol.runtime import apply_threads, resolve_device, resolve_precision
from byol.views.per_image import EvalTransform

# The raw eval-view pixels as the representation: the reference every encoder must beat to have
# learned anything a lookup table would not give.
PIXELS = "pixels"


class Evaluation:
    """One encoder (a run folder or an encoder file: ``self.source``) evaluated on one dataset:
    its data, the features and label subsets cached from it, and the protocols' results."""

    def __init__(self, source: str | Path, dataset: str | None, overrides: list[str]) -> None:
        self.settings, config_overrides = split_overrides(overrides)
        self.source = EncoderSource(source, dataset, config_overrides)
        self.encoder_path, self.out_dir = self.source.encoder_path, self.source.out_dir
        self.config, self.pretrained_on = self.source.config, self.source.pretrained_on
        # --dataset, else --set dataset=..., else the dataset the encoder was pretrained on
        self.dataset = dataset or self.config.data.dataset
        apply_threads(self.config.runtime.threads, self.config.runtime.num_workers)
        self.device = resolve_device(self.config.runtime.device)
        c = self.config
        # Resolved once, by the rule training uses, for every protocol below.
        self.precision = resolve_precision(
            self.device, c.runtime.precision, c.data.image_size, c.model.cifar_stem
        )
        data_dir = self.source.data_dir(self.dataset)
        train, test, self.info = load_datasets(
            self.dataset,
            data_dir,
            self.config.data.download,
            in_memory=True,
            hf_options=self.config.data.hf_options(),
            index_dir=self.out_dir / run_folder.FOLDER_INDEX,
        )
        if test is None or not self.info.classes:
            raise ByolError(
                f"dataset {self.dataset!r} has no labelled test split; evaluation needs one "
                "(a folder with train/ and test/ sub-folders, one folder per class)."
            )
        self.train, self.test = labelled(train), test
        self.num_classes = len(self.info.classes)
        self.eval_transform = EvalTransform(
            c.data.image_size, self.info.mean, self.info.std, c.monitor.eval_crop_fraction
        )
        self.train_transform = probes.crop_flip_transform(
            c.data.image_size, self.info.mean, self.info.std, tuple(self.settings.train_crop_scale)
        )
        self.subsets_name = ""  # names the training set in saved subsets once narrowed
        self._stream_labels: np.ndarray | None = None  # a streamed training set's, in order
        count, seed = self.settings.train_images, self.settings.seed
        # A stream is subset by `subset` too, which names the fix if it cannot be; one of at
        # most `count` items (its labelled ones fewer still) is whole already.
        size = num_items(train) if self.streaming else len(self.train)
        self.narrowed = 0 < count and (size is None or count < size)
        if self.narrowed:  # scores in seconds, with a wider spread
            fix = "set train_images=0 (byol ablate: eval_train_images=0) to score the whole stream"
            self.train = subset(self.train, count, seed, fix)
            self.subsets_name = f"{safe_name(self.dataset)}-{count}-seed{seed}"

    # --- encoders and features ---
    def encoder(self, method: str) -> nn.Module:
        """The trained encoder ("byol"), raw pixels (PIXELS) or the run's initial weights (any
        other name)."""
        return nn.Flatten() if method == PIXELS else self.source.encoder(method)

    def features(self, method: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self.train if split == "train" else self.test
        c = self.config
        key = f"{self.source.encoder_id(method)}|{self.dataset}|{split}|{num_items(dataset)}|"
        key += f"{c.data.image_size}|{c.monitor.eval_crop_fraction}"
        path = self.out_dir / run_folder.FEATURES / f"{method}-{safe_name(self.dataset)}-{split}.pt"

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            encoder = self.encoder(method).to(self.device)
            view = dataset.with_transform(self.eval_transform)  # a stream too: read in order
            return extract_features(
                encoder, view, self.device, c.monitor.eval_batch_size, self.precision
            )

        if method == PIXELS:  # no forward pass: recomputed rather than kept at the images' size
            return compute()
        features, labels = cached_features(path, key, compute)
        if split == "train" and self.streaming and self._stream_labels is None:
            self._stream_labels = labels.numpy().astype(np.int64)
        return features, labels

    def training_views(self, indices: np.ndarray) -> Dataset:
        """Random crop + flip views of the training items at ``indices``: picked by index from
        an indexable set (shuffled by the loader), or read from a stream on every pass
        (``StreamSubset``: shuffled by itself, held in memory when it fits)."""
        if self.streaming:
            return StreamSubset(self.train, indices, self.train_transform, self.settings.seed)
        return probes.Transformed(self.train, self.train_transform, indices)

    def test_views(self) -> Dataset:
        """The test split's centre views, in order (a stream is read as it is stored)."""
        if getattr(self.test, "streaming", False):
            return self.test.with_transform(self.eval_transform)
        return probes.Transformed(self.test, self.eval_transform)

    # --- index files: the same images for every method ---
    def use_pretraining_images(self) -> None:
        """Narrow the training set to the images the run was pretrained on (its train_subset,
        drawn as pretraining drew it); label subsets drawn after are saved under its own name."""
        count = self.config.data.train_subset
        if count > 0 and (self.streaming or count < len(self.train)):  # a stream: refused
            self.train = subset(self.train, count, self.config.seed)
            self.subsets_name = f"{safe_name(self.dataset)}-pretraining{count}"

    @property
    def streaming(self) -> bool:
        return bool(getattr(self.train, "streaming", False))

    def train_labels(self) -> np.ndarray:
        """Every training item's label, in order; a stream's come with its features where those
        were computed, else from one pass that decodes its images and keeps only the labels."""
        if self.streaming:
            if self._stream_labels is None:
                labels = [label for _, label in self.train.stream()]  # type: ignore[attr-defined]
                self._stream_labels = np.asarray(labels, dtype=np.int64)
            return self._stream_labels
        train = indexable(self.train, "label subsets")
        labels = train.label_array()
        if labels is not None:
            return labels
        return np.array([int(train[i][1]) for i in range(len(train))])

    def indices(self, tag: str, fraction: float, seed: int) -> np.ndarray:
        """Class-balanced indices into the training set, written once and reused after."""
        folder = self.out_dir / run_folder.SUBSETS
        stem = f"{self.subsets_name or safe_name(self.dataset)}-{tag}-seed{seed}"
        labels = self.train_labels()
        if (folder / f"{stem}.npy").is_file():
            return read_subset(folder / stem, len(labels))
        n = max(self.num_classes, int(round(fraction * len(labels))))
        idx = subset_indices(labels, len(labels), n, seed)
        counts = np.bincount(labels[idx], minlength=self.num_classes).tolist()
        meta = dict(dataset=self.dataset, train_size=len(labels), fraction=fraction, seed=seed)
        write_subset(folder / stem, idx, {**meta, "class_counts": counts})
        return idx

    def record(self, method: str, values: dict[str, Any]) -> dict[str, Any]:
        if self.narrowed:  # results.json holds the protocols' numbers, on every training image
            return values
        return update_results(
            self.out_dir, self.pretrained_on, self.dataset, method, values, self.config.method.name
        )

    # --- protocols ---
    # ``record`` false: the numbers are returned, not written to results.json (a caller that
    # keeps its own, or scores on a subset of the training images).
    def knn(self, method: str, record: bool = True) -> dict[str, float]:
        s = self.settings
        train, test = self.features(method, "train"), self.features(method, "test")
        values = knn_evaluate(*train, *test, tuple(s.knn_ks), s.knn_temperature)
        if record:
            self.record(method, values)
        return values

    def linear(self, method: str, record: bool = True) -> dict[str, Any]:
        s = self.settings
        # A different seed from the label subsets, so validation images are not the 1%.
        train_f, train_l = self.features(method, "train")
        test_f, test_l = self.features(method, "test")
        val = self.indices(f"val{fraction_tag(s.val_fraction)}", s.val_fraction, s.seed + 1)
        lrs = tuple(s.linear_lrs)
        if s.linear_mode == "fast":
            result = probes.linear_fast(
                train_f,
                train_l,
                test_f,
                test_l,
                val,
                lrs,
                s.linear_epochs,
                s.linear_batch_size,
                s.seed,
            )
            prefix = "linear"
        else:
            result = probes.linear_paper(
                self.encoder(method),
                self.training_views,
                train_f,
                train_l,
                test_f,
                test_l,
                val,
                lrs,
                self.device,
                s.linear_epochs,
                s.linear_batch_size,
                s.seed,
                self.precision,
            )
            prefix = "linear_paper"
        values = {
            f"{prefix}_top1": result.top1,
            f"{prefix}_top5": result.top5,
            f"{prefix}_lr": result.lr,
            f"{prefix}_val_top1": {str(k): v for k, v in result.val_top1.items()},
        }
        if record:
            self.record(method, values)
        return values

    def finetune(
        self,
        method: str,
        fractions: tuple[float, ...],
        epochs: tuple[int, ...],
        record: bool = True,
    ) -> dict[str, float]:
        """Fine-tune BYOL's encoder (method 'byol') or train from scratch ('supervised'); the
        numbers go to results.json unless ``record`` is false (a caller that keeps its own)."""
        s = self.settings
        values: dict[str, float] = {}
        test = self.test_views()
        for fraction, n_epochs in zip(fractions, epochs, strict=True):
            tag = fraction_tag(fraction)
            idx = self.indices(tag, fraction, s.seed)
            train = self.training_views(idx)
            init = self.encoder("byol" if method == "byol" else "random-init")
            result = probes.finetune(
                init,
                train,
                test,
                self.num_classes,
                self.device,
                n_epochs,
                s.finetune_lr,
                s.finetune_batch_size,
                s.finetune_weight_decay,
                s.seed,
                self.precision,
            )
            values[f"finetune_{tag}_top1"] = result.top1
            values[f"finetune_{tag}_top5"] = result.top5
            if record:
                self.record(method, values)
        return values


def safe_name(name: str) -> str:
    """A dataset name (which may be a path) as a file-name component."""
    return Path(name).name.replace(" ", "_") or "dataset"
