"""Which encoder an evaluation reads, and with which config: a run folder (its encoder file and
saved config) or a bare encoder file (its metadata, the dataset's preset), with the --set changes
applied. What is computed from it (features, label subsets, results) is ``protocols.Evaluation``'s.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from byol import run_folder, settings
from byol.backbones import build_backbone, format_kwargs, is_timm
from byol.checkpoint import encoder_metadata, load_encoder, timm_kwargs
from byol.config import Config, apply_overrides
from byol.config.memory import check_eval_memory
from byol.errors import ByolError, CheckpointError
from byol.presets import PRESETS, preset
from byol.runtime import resolve_device


class EncoderSource:
    """The encoder of a run folder or an encoder file, its config, and where results go."""

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
        config, saved = self._saved_config(dataset)
        self.pretrained_on = config.data.dataset if saved else "an unknown dataset"
        self.config = apply_overrides(config, overrides)
        self.config.validate()
        c = self.config
        check_eval_memory(c, resolve_device(c.runtime.device), c.monitor.eval_batch_size)
        self._pretraining_dataset = config.data.dataset  # before --set
        self._data_dir_set = "data_dir" in {settings.split_item(item)[0] for item in overrides}
        self._sha: str | None = None

    def data_dir(self, dataset: str) -> str | None:
        """Where ``dataset`` is read from (None: its usual place). The run's data_dir belongs to
        its own dataset; another dataset is found in its usual place unless --set data_dir names
        one."""
        if dataset == self._pretraining_dataset or self._data_dir_set:
            return self.config.data.data_dir or None
        return None

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

    def encoder(self, method: str) -> nn.Module:
        """The trained encoder ("byol", whatever the run's method) or the run's initial weights
        (any other name: the random-init reference)."""
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

    def encoder_id(self, method: str) -> str:
        """What names the encoder in a features cache's key: the file's SHA-256, or for the
        random-init reference the architecture and seed that make its weights."""
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
