"""Checkpoints (resumable training state) and the exported encoder (safetensors).

Checkpoints are written to a temporary file and renamed, so a crash never leaves a half-written
file in place of a good one; they are read with ``weights_only=True`` so loading one runs no code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from byol.backbones import torchvision_model
from byol.errors import CheckpointError

FORMAT_VERSION = 1


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically write a training checkpoint (model, optimizer, step, config...)."""
    _atomic_write(Path(path), lambda tmp: torch.save({"format": FORMAT_VERSION, **state}, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; check the path or start without --resume.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values and was refused "
            f"(loading it could run code); only load checkpoints written by byol. ({error})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt: {error}); "
            "delete it to resume from an earlier one."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a byol checkpoint of format {FORMAT_VERSION}.")
    return state


def save_encoder(path: Path, encoder: nn.Module, architecture: str, cifar_stem: bool) -> None:
    """Write the online encoder as safetensors with torchvision's key names (no ``fc``)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    metadata = {
        "format": "byol-encoder",
        "architecture": architecture,
        "cifar_stem": str(cifar_stem).lower(),
        "note": "torchvision state dict without fc; load with strict=False"
        + (
            "; replace conv1 by a 3x3 stride-1 conv and maxpool by Identity first"
            if cifar_stem
            else ""
        ),
    }
    _atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def encoder_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_encoder(path: Path) -> tuple[nn.Module, dict[str, str]]:
    """Build the torchvision model named in the file's metadata, load the weights, drop ``fc``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no encoder file at {path}; run `byol pretrain` first.")
    metadata = encoder_metadata(path)
    if metadata.get("format") != "byol-encoder":
        raise CheckpointError(f"{path} has no byol-encoder metadata; export it with byol.")
    model = torchvision_model(metadata["architecture"], metadata["cifar_stem"] == "true")
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
        raise CheckpointError(
            f"{path} does not match {metadata['architecture']}: missing {missing}, "
            f"unexpected {unexpected}."
        )
    model.fc = nn.Identity()
    return model, metadata
