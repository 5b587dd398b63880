"""The evaluation protocols as run-level operations: load an encoder, cache its features, keep
the label subsets on disk, run kNN / linear / fine-tuning / transfer, record the numbers.

Everything lands in the run folder (or the folder of the given ``encoder.safetensors``):
``features/<method>-<dataset>-<split>.pt``, ``subsets/<dataset>-<tag>-seed<seed>.npy|.json``,
``results.json`` and ``results.md``.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from byol import run_folder, settings
from byol.backbones import build_backbone, format_kwargs, is_timm
from byol.checkpoint import encoder_metadata, load_encoder, timm_kwargs
from byol.config import Config, apply_overrides
from byol.data import indexable, labelled, load_datasets, num_items, subset, subset_indices
from byol.errors import ByolError, CheckpointError
from byol.evaluation import probes
from byol.evaluation.eval_settings import split_overrides
from byol.evaluation.features import cached_features, extract_features
from byol.evaluation.knn import knn_evaluate
from byol.evaluation.results import fraction_tag, update_results
from byol.presets import PRESETS, preset
from byol.runtime import resolve_device, resolve_precision
from byol.views.per_image import EvalTransform


class Evaluation:
    """One encoder (a run folder or an encoder file) evaluated on one dataset."""

    def __init__(self, source: str | Path, dataset: str | None, overrides: list[str]) -> None:
        path = Path(source)
        if path.is_dir():
            self.encoder_path, self.out_dir = path / run_folder.ENCODER, path
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
            writer = run_folder.writer_of(self.out_dir)
            if writer:
                raise ByolError(
                    f"{path} is still training (process {writer}); its {run_folder.ENCODER} is "
                    "written when the run finishes: evaluate it then."
                )
            raise CheckpointError(
                f"{path} holds no {run_folder.ENCODER}; run `byol pretrain` first."
            )
        self.settings, config_overrides = split_overrides(overrides)
        config, saved = self._saved_config(dataset)
        self.pretrained_on = config.data.dataset if saved else "an unknown dataset"
        self.config = apply_overrides(config, config_overrides)
        self.config.validate()
        # --dataset, else --set dataset=..., else the dataset the encoder was pretrained on
        self.dataset = dataset or self.config.data.dataset
        if self.config.runtime.threads:
            torch.set_num_threads(self.config.runtime.threads)
        self.device = resolve_device(self.config.runtime.device)
        c = self.config
        # Resolved once, by the rule training uses, for every protocol below.
        self.precision = resolve_precision(
            self.device, c.runtime.precision, c.data.image_size, c.model.cifar_stem
        )
        # The run's data_dir belongs to its own dataset; another dataset is found in its usual
        # place unless --set data_dir names one.
        set_keys = {settings.split_item(item)[0] for item in config_overrides}
        same = self.dataset == config.data.dataset or "data_dir" in set_keys
        data_dir = self.config.data.data_dir if same else None
        train, test, self.info = load_datasets(
            self.dataset, data_dir or None, self.config.data.download, in_memory=True
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
            c.data.image_size, self.info.mean, self.info.std, c.monitor.eval_crop_fraction
        )
        self.train_transform = probes.crop_flip_transform(
            c.data.image_size, self.info.mean, self.info.std, tuple(self.settings.train_crop_scale)
        )
        self._sha: str | None = None
        self.subsets_name = ""  # names the training set in saved subsets once narrowed

    def _saved_config(self, dataset: str | None) -> tuple[Config, bool]:
        """The run's config, and whether it was saved; for a bare encoder file, the architecture
        from its metadata and the sizes from the dataset's preset."""
        saved = self.out_dir / run_folder.CONFIG
        if saved.is_file():
            return Config.load(saved), True
        try:
            meta = encoder_metadata(self.encoder_path)
        except Exception as error:  # safetensors raises its own types for a bad header
            raise CheckpointError(
                f"{self.encoder_path} is not a readable safetensors file ({error})."
            ) from None
        config = preset(dataset) if dataset in PRESETS else Config()
        config = config.replace(
            backbone=meta.get("architecture", config.model.backbone),
            cifar_stem=meta.get("cifar_stem") == "true",
            backbone_kwargs="",
        )
        if is_timm(config.model.backbone):  # a ViT is evaluated at the size it was built for
            kwargs = timm_kwargs(meta)
            size = kwargs.pop("img_size", config.data.image_size)
            config = config.replace(backbone_kwargs=format_kwargs(kwargs), image_size=int(size))
        return config, False

    # --- encoders and features ---
    def encoder(self, method: str) -> nn.Module:
        if method == "byol":
            encoder = load_encoder(self.encoder_path)[0]
            state = encoder.state_dict().values()
            if not all(bool(torch.isfinite(t).all()) for t in state if t.is_floating_point()):
                raise CheckpointError(
                    f"{self.encoder_path} holds inf or NaN weights (a run that diverged); "
                    "evaluate an encoder of a run that finished."
                )
            return encoder
        torch.manual_seed(self.config.seed)  # the weights the pretraining run started from
        c = self.config
        return build_backbone(
            c.model.backbone, c.model.cifar_stem, c.data.image_size, c.model.backbone_kwargs
        )[0]

    def _encoder_id(self, method: str) -> str:
        c = self.config
        if method != "byol":
            architecture = (
                f"{c.model.backbone}-{c.model.backbone_kwargs}"
                if c.model.backbone_kwargs
                else c.model.backbone
            )
            return f"random-{architecture}-{c.model.cifar_stem}-seed{c.seed}"
        if self._sha is None:
            self._sha = hashlib.sha256(self.encoder_path.read_bytes()).hexdigest()
        return self._sha

    def features(self, method: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self.train if split == "train" else self.test
        c = self.config
        key = f"{self._encoder_id(method)}|{self.dataset}|{split}|{num_items(dataset)}|"
        key += f"{c.data.image_size}|{c.monitor.eval_crop_fraction}"
        path = self.out_dir / run_folder.FEATURES / f"{method}-{safe_name(self.dataset)}-{split}.pt"

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            encoder = self.encoder(method).to(self.device)
            view = dataset.with_transform(self.eval_transform)  # a stream too: read in order
            return extract_features(
                encoder, view, self.device, c.monitor.eval_batch_size, self.precision
            )

        return cached_features(path, key, compute)

    # --- index files: the same images for every method ---
    def use_pretraining_images(self) -> None:
        """Narrow the training set to the images the run was pretrained on (its train_subset,
        drawn as pretraining drew it); label subsets drawn after are saved under its own name."""
        count = self.config.data.train_subset
        if 0 < count < len(self.train):
            self.train = subset(self.train, count, self.config.seed)
            self.subsets_name = f"{safe_name(self.dataset)}-pretraining{count}"

    def train_labels(self) -> np.ndarray:
        purpose = "label subsets (a linear probe's validation split, fine-tuning's fractions)"
        train = indexable(self.train, purpose)
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
            return self._saved_indices(folder / stem, len(labels))
        n = max(self.num_classes, int(round(fraction * len(labels))))
        idx = subset_indices(labels, len(labels), n, seed)
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, idx)
        run_folder.atomic_write(folder / f"{stem}.npy", [buffer.getbuffer()])
        counts = np.bincount(labels[idx], minlength=self.num_classes).tolist()
        meta = dict(dataset=self.dataset, train_size=len(labels), fraction=fraction, seed=seed)
        meta.update(class_counts=counts, indices=idx.tolist())
        run_folder.write_text(folder / f"{stem}.json", json.dumps(meta) + "\n")
        return idx

    @staticmethod
    def _saved_indices(stem: Path, train_size: int) -> np.ndarray:
        """A label subset written before, checked: the same training set, valid indices."""
        fix = f"delete {stem}.npy and {stem.name}.json to draw the subset again"
        try:
            meta = json.loads(stem.with_suffix(".json").read_text())
            indices = np.load(stem.with_suffix(".npy"), allow_pickle=False)
            made_for = int(meta["train_size"])
        except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
            raise ByolError(f"{stem}.npy or its .json is unreadable ({error}); {fix}.") from None
        if made_for != train_size:
            raise ByolError(
                f"{stem}.npy was made for a training set of {made_for} images, this one has "
                f"{train_size}; {fix}, or use another seed."
            )
        valid = indices.ndim == 1 and indices.dtype.kind in "iu" and len(indices) > 0
        if not valid or indices.min() < 0 or indices.max() >= train_size:
            raise ByolError(f"{stem}.npy holds no valid image indices; {fix}.")
        return indices

    def record(self, method: str, values: dict[str, Any]) -> dict[str, Any]:
        return update_results(
            self.out_dir, self.pretrained_on, self.dataset, method, values, self.config.method.name
        )

    # --- protocols ---
    def knn(self, method: str) -> dict[str, float]:
        s = self.settings
        train, test = self.features(method, "train"), self.features(method, "test")
        values = knn_evaluate(*train, *test, tuple(s.knn_ks), s.knn_temperature)
        self.record(method, values)
        return values

    def linear(self, method: str) -> dict[str, Any]:
        s = self.settings
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
                self.device, s.linear_epochs, s.linear_batch_size, s.seed, self.precision,
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
        test = probes.Transformed(self.test, self.eval_transform)
        for fraction, n_epochs in zip(fractions, epochs, strict=True):
            tag = fraction_tag(fraction)
            idx = self.indices(tag, fraction, s.seed)
            train = probes.Transformed(self.train, self.train_transform, idx)
            init = self.encoder("byol" if method == "byol" else "random-init")
            result = probes.finetune(
                init, train, test, self.num_classes, self.device, n_epochs, s.finetune_lr,
                s.finetune_batch_size, s.finetune_weight_decay, s.seed, self.precision,
            )  # fmt: skip
            values[f"finetune_{tag}_top1"] = result.top1
            values[f"finetune_{tag}_top5"] = result.top5
            if record:
                self.record(method, values)
        return values


def safe_name(name: str) -> str:
    """A dataset name (which may be a path) as a file-name component."""
    return Path(name).name.replace(" ", "_") or "dataset"
