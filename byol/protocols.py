"""The evaluation protocols as run-level operations: load an encoder, cache its features, keep
the label subsets on disk, run kNN / linear / fine-tuning / transfer, record the numbers.

Everything lands in the run folder (or the folder of the given ``encoder.safetensors``):
``features/<method>-<dataset>-<split>.pt``, ``subsets/<dataset>-<tag>-seed<seed>.npy|.json``,
``results.json`` and ``results.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from byol import probes
from byol.augment import EvalTransform
from byol.backbones import build_backbone
from byol.checkpoint import encoder_metadata, load_encoder
from byol.config import PRESETS, Config, apply_overrides, preset
from byol.data import labelled, load_datasets, subset_indices
from byol.errors import ByolError, CheckpointError, ConfigError
from byol.evaluate import cached_features, extract_features, knn_evaluate
from byol.results import fraction_tag, update_results
from byol.train import ENCODER_NAME, resolve_device


@dataclass
class EvalSettings:
    """Evaluation hyper-parameters; ``--set key=value`` reaches these and any Config field."""

    seed: int = 0
    knn_ks: tuple[int, ...] = (20, 200)
    knn_temperature: float = 0.1
    linear_mode: str = "fast"  # fast: cached centre-view features | paper: crop + flip views
    linear_lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    linear_epochs: int = 50
    linear_batch_size: int = 256
    val_fraction: float = 0.1  # carved from the training set to choose the linear lr
    label_fractions: tuple[float, ...] = (0.01, 0.1)
    finetune_epochs: tuple[int, ...] = (30, 15)  # one per label fraction
    finetune_lr: float = 0.05
    finetune_batch_size: int = 64
    finetune_weight_decay: float = 5e-4
    train_crop_scale: tuple[float, ...] = (0.08, 1.0)
    transfer_fractions: tuple[float, ...] = (1.0,)  # the paper fine-tunes on all labels
    transfer_epochs: tuple[int, ...] = (10,)


def _parse(key: str, text: str, default: Any) -> Any:
    try:
        if isinstance(default, tuple):
            kind = type(default[0])
            return tuple(kind(p) for p in text.replace("(", "").replace(")", "").split(",") if p)
        return type(default)(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not valid (default {default!r}).") from None


def split_overrides(overrides: list[str]) -> tuple[EvalSettings, list[str]]:
    """``key=value`` strings -> (EvalSettings, the rest for the Config)."""
    names = {f.name for f in dataclasses.fields(EvalSettings)}
    defaults, changes, rest = EvalSettings(), {}, []
    for item in overrides:
        key, _, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if key in names:
            changes[key] = _parse(key, text.strip(), getattr(defaults, key))
        elif "=" in item and key not in {f.name for f in dataclasses.fields(Config)}:
            raise ConfigError(
                f"unknown setting {key!r}; evaluation settings are {', '.join(sorted(names))}, "
                "and any key that `byol config` prints is accepted too."
            )
        else:
            rest.append(item)
    settings = dataclasses.replace(defaults, **changes)
    if settings.linear_mode not in ("fast", "paper"):
        raise ConfigError(f"linear_mode={settings.linear_mode!r} is not one of fast, paper.")
    for fractions, epochs in (
        (settings.label_fractions, settings.finetune_epochs),
        (settings.transfer_fractions, settings.transfer_epochs),
    ):
        if len(fractions) != len(epochs) or not all(0 < f <= 1 for f in fractions):
            raise ConfigError(
                f"label fractions {fractions} must lie in (0, 1] and come with one epoch count "
                f"each (got {epochs}); set both, e.g. label_fractions=0.01,0.1 "
                "finetune_epochs=30,15."
            )
    return settings, rest


class Evaluation:
    """One encoder (a run folder or an encoder file) evaluated on one dataset."""

    def __init__(self, source: str | Path, dataset: str | None, overrides: list[str]) -> None:
        path = Path(source)
        if path.is_dir():
            self.encoder_path, self.out_dir = path / ENCODER_NAME, path
        elif path.is_file() and path.suffix == ".safetensors":
            self.encoder_path, self.out_dir = path, path.parent
        elif not path.exists():
            raise ByolError(f"{path} does not exist; pass a run folder or an encoder file.")
        else:
            raise ByolError(
                f"{path} is neither a run folder nor an encoder .safetensors file; pass the "
                "folder that `byol pretrain` wrote."
            )
        if not self.encoder_path.is_file():
            raise CheckpointError(f"{path} holds no {ENCODER_NAME}; run `byol pretrain` first.")
        self.settings, config_overrides = split_overrides(overrides)
        saved = self.out_dir / "config.json"
        if saved.is_file():
            config = Config.load(saved)
        else:  # a bare encoder file: architecture from its metadata, sizes from the preset
            try:
                meta = encoder_metadata(self.encoder_path)
            except Exception as error:  # safetensors raises its own types for a bad header
                raise CheckpointError(
                    f"{self.encoder_path} is not a readable safetensors file ({error})."
                ) from None
            config = preset(dataset) if dataset in PRESETS else Config()
            config = dataclasses.replace(
                config,
                backbone=meta.get("architecture", config.backbone),
                cifar_stem=meta.get("cifar_stem") == "true",
            )
        self.pretrained_on = config.dataset if saved.is_file() else "an unknown dataset"
        self.config = apply_overrides(config, config_overrides)
        self.dataset = dataset or config.dataset
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.device = resolve_device(self.config.device)
        data_dir = self.config.data_dir if self.dataset == config.dataset else None
        train, test, self.info = load_datasets(
            self.dataset, data_dir or None, self.config.download, in_memory=True
        )
        if test is None or not self.info.classes:
            raise ByolError(
                f"dataset {self.dataset!r} has no labelled test split; evaluation needs one "
                "(a folder with train/ and test/ sub-folders, one folder per class)."
            )
        self.train, self.test = labelled(train), test
        self.num_classes = len(self.info.classes)
        c = self.config
        self.eval_transform = EvalTransform(
            c.image_size, self.info.mean, self.info.std, c.eval_crop_fraction
        )
        self.train_transform = probes.crop_flip_transform(
            c.image_size, self.info.mean, self.info.std, tuple(self.settings.train_crop_scale)
        )
        self._sha: str | None = None

    # --- encoders and features ---
    def encoder(self, method: str) -> nn.Module:
        if method == "byol":
            return load_encoder(self.encoder_path)[0]
        torch.manual_seed(self.config.seed)  # the weights the pretraining run started from
        return build_backbone(self.config.backbone, self.config.cifar_stem)[0]

    def _encoder_id(self, method: str) -> str:
        if method != "byol":
            return f"random-{self.config.backbone}-{self.config.cifar_stem}-seed{self.config.seed}"
        if self._sha is None:
            self._sha = hashlib.sha256(self.encoder_path.read_bytes()).hexdigest()
        return self._sha

    def features(self, method: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self.train if split == "train" else self.test
        c = self.config
        key = f"{self._encoder_id(method)}|{self.dataset}|{split}|{len(dataset)}|"
        key += f"{c.image_size}|{c.eval_crop_fraction}"
        path = self.out_dir / "features" / f"{method}-{safe_name(self.dataset)}-{split}.pt"

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            encoder = self.encoder(method).to(self.device)
            view = probes.Transformed(dataset, self.eval_transform)
            return extract_features(encoder, view, self.device, c.eval_batch_size, c.precision)

        return cached_features(path, key, compute)

    # --- index files: the same images for every method ---
    def train_labels(self) -> np.ndarray:
        labels = getattr(self.train, "labels", None)
        if labels is not None:
            return np.asarray(labels)
        if hasattr(self.train, "samples"):
            return np.array([label for _, label in self.train.samples])
        return np.array([int(self.train[i][1]) for i in range(len(self.train))])

    def indices(self, tag: str, fraction: float, seed: int) -> np.ndarray:
        """Class-balanced indices into the training set, written once and reused after."""
        folder = self.out_dir / "subsets"
        stem = f"{safe_name(self.dataset)}-{tag}-seed{seed}"
        labels = self.train_labels()
        if (folder / f"{stem}.npy").is_file():
            meta = json.loads((folder / f"{stem}.json").read_text())
            if meta["train_size"] != len(labels):
                raise ByolError(
                    f"{folder / stem}.npy was made for a training set of {meta['train_size']} "
                    f"images, this one has {len(labels)}; delete the file or use another seed."
                )
            return np.load(folder / f"{stem}.npy")
        n = max(self.num_classes, int(round(fraction * len(labels))))
        idx = subset_indices(labels, len(labels), n, seed)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{stem}.npy", idx)
        counts = np.bincount(labels[idx], minlength=self.num_classes).tolist()
        meta = dict(dataset=self.dataset, train_size=len(labels), fraction=fraction, seed=seed)
        meta.update(class_counts=counts, indices=idx.tolist())
        (folder / f"{stem}.json").write_text(json.dumps(meta) + "\n")
        return idx

    def record(self, method: str, values: dict[str, Any]) -> dict[str, Any]:
        return update_results(
            self.out_dir, self.pretrained_on, self.dataset, method, values, self.config.method
        )

    # --- protocols ---
    def knn(self, method: str) -> dict[str, float]:
        s = self.settings
        train, test = self.features(method, "train"), self.features(method, "test")
        values = knn_evaluate(*train, *test, tuple(s.knn_ks), s.knn_temperature)
        self.record(method, values)
        return values

    def linear(self, method: str) -> dict[str, Any]:
        s, c = self.settings, self.config
        # A different seed from the label subsets, so validation images are not the 1%.
        val = self.indices(f"val{fraction_tag(s.val_fraction)}", s.val_fraction, s.seed + 1)
        train_f, train_l = self.features(method, "train")
        test_f, test_l = self.features(method, "test")
        lrs = tuple(s.linear_lrs)
        if s.linear_mode == "fast":
            result = probes.linear_fast(
                train_f, train_l, test_f, test_l, val, lrs, s.linear_epochs,
                s.linear_batch_size, s.seed,
            )  # fmt: skip
            prefix = "linear"
        else:
            crops = probes.Transformed(self.train, self.train_transform)
            result = probes.linear_paper(
                self.encoder(method), crops, train_f, train_l, test_f, test_l, val, lrs,
                self.device, s.linear_epochs, s.linear_batch_size, s.seed, c.precision,
            )  # fmt: skip
            prefix = "linear_paper"
        values = {
            f"{prefix}_top1": result.top1,
            f"{prefix}_top5": result.top5,
            f"{prefix}_lr": result.lr,
            f"{prefix}_val_top1": {str(k): v for k, v in result.val_top1.items()},
        }
        self.record(method, values)
        return values

    def finetune(
        self, method: str, fractions: tuple[float, ...], epochs: tuple[int, ...]
    ) -> dict[str, float]:
        """Fine-tune BYOL's encoder (method 'byol') or train from scratch ('supervised')."""
        s, c = self.settings, self.config
        values: dict[str, float] = {}
        test = probes.Transformed(self.test, self.eval_transform)
        for fraction, n_epochs in zip(fractions, epochs, strict=True):
            tag = fraction_tag(fraction)
            idx = self.indices(tag, fraction, s.seed)
            train = probes.Transformed(self.train, self.train_transform, idx)
            init = self.encoder("byol" if method == "byol" else "random-init")
            result = probes.finetune(
                init, train, test, self.num_classes, self.device, n_epochs, s.finetune_lr,
                s.finetune_batch_size, s.finetune_weight_decay, s.seed, c.precision,
            )  # fmt: skip
            values[f"finetune_{tag}_top1"] = result.top1
            values[f"finetune_{tag}_top5"] = result.top5
            self.record(method, values)
        return values


def safe_name(name: str) -> str:
    """A dataset name (which may be a path) as a file-name component."""
    return Path(name).name.replace(" ", "_") or "dataset"
