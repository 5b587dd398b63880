"""Checkpoints (resumable training state) and the exported encoder (safetensors).

Every file is written to a temporary file, flushed to disk and renamed, so a crash never leaves a
half-written file in place of a good one. A checkpoint ends with its length and SHA-256, checked
on load; the one it replaces is kept as ``checkpoint-previous.pt`` to fall back on. Checkpoints
are read with ``weights_only=True`` so loading one runs no code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as safetensors_bytes
from torch import nn

from byol.backbones import (
    BACKBONES,
    TIMM,
    build_backbone,
    input_side,
    is_timm,
    parse_kwargs,
    timm_model,
)
from byol.errors import CheckpointError
from byol.run_folder import CHECKPOINT, PREVIOUS_CHECKPOINT, atomic_write

FORMAT_VERSION = 2  # 2: checksum trailer; 1: no trailer (still readable)
# Trailer: magic, payload length (little-endian u64), SHA-256 of the payload.
_MAGIC = b"BYOLSUM1"
_TRAILER = struct.Struct(f"<{len(_MAGIC)}sQ32s")
_HEADER_LIMIT = 100 << 20  # safetensors' own limit on a header's size


def save_checkpoint(path: Path, state: dict[str, Any], keep_previous: bool = True) -> None:
    """Atomically write a training checkpoint (model, optimizer, step, config...) with a
    checksum; the checkpoint it replaces becomes ``checkpoint-previous.pt``."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **state}, buffer)
    payload = buffer.getbuffer()
    trailer = _TRAILER.pack(_MAGIC, len(payload), hashlib.sha256(payload).digest())
    previous = path.with_name(PREVIOUS_CHECKPOINT) if keep_previous else None
    atomic_write(path, [payload, trailer], previous)


def _verified_payload(path: Path, data: bytes) -> memoryview | None:
    """The payload of a file with a checksum trailer (None when it has none); raises when the
    trailer does not match."""
    if len(data) < _TRAILER.size:
        return None
    magic, length, digest = _TRAILER.unpack(data[-_TRAILER.size :])
    if magic != _MAGIC:
        return None
    payload = memoryview(data)[: -_TRAILER.size]  # a view: checkpoints can be gigabytes
    if length != len(payload) or hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(
            f"{path} fails its checksum (corrupt or altered after it was written); "
            "resume from the previous checkpoint or start a new run."
        )
    return payload


def _refusal_detail(error: Exception) -> str:
    """What torch's weights-only unpickler objected to, without its advice to load the file
    unsafely."""
    text = str(error)
    # torch's wording has changed across versions ("Unsupported global: GLOBAL x.y", then
    # "unsupported GLOBAL x.y whose module x is blocked"): match both.
    found = re.search(r"unsupported global:? GLOBAL (\S+)", text, re.IGNORECASE)
    if found:
        return f" (it names {found.group(1)})"
    if "Unsupported operand" in text:
        return " (pickle instructions outside the safe subset)"
    return ""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint, check its length and checksum, and unpickle it without running code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; check the path or start without --resume.")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path} cannot be read ({error.strerror}).") from None
    payload = _verified_payload(path, data)
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol is no news: it is refused
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            warnings.filterwarnings("ignore", ".*[Ss]parse", UserWarning)  # refused below
            source = io.BytesIO(data if payload is None else payload)
            # On the CPU first: a checkpoint written on a GPU resumes on a machine without one.
            state = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values{_refusal_detail(error)} "
            "and was refused (loading it could run code); only load checkpoints written by byol."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt: {error}); "
            "resume from the previous checkpoint or start a new run."
        ) from None
    version = state.get("format") if isinstance(state, dict) else None
    # Format 1 files predate the checksum; a truncated one fails to unzip above.
    if version not in (1, FORMAT_VERSION) or (version == FORMAT_VERSION and payload is None):
        raise CheckpointError(
            f"{path} is not a byol checkpoint of format {FORMAT_VERSION} (with its checksum)."
        )
    return state


def load_latest_checkpoint(run_dir: Path) -> tuple[dict[str, Any], Path, list[str]]:
    """The newest checkpoint of a run folder that passes its checks: ``checkpoint.pt``, else
    ``checkpoint-previous.pt``. Returns (state, its path, why newer files were passed over); a
    file passed over is renamed to ``<name>.rejected`` so that it is neither used nor kept as the
    fallback."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            state = load_checkpoint(path)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        for rejected in (run_dir / n for n in (CHECKPOINT, PREVIOUS_CHECKPOINT)):
            if rejected == path:
                break
            if rejected.exists():
                os.replace(rejected, rejected.with_name(rejected.name + ".rejected"))
        return state, path, problems
    if problems:
        raise CheckpointError(f"no usable checkpoint in {run_dir}: {' '.join(problems)}")
    raise CheckpointError(f"no checkpoint in {run_dir}; check the path or start without --resume.")


def has_checkpoint(run_dir: Path) -> bool:
    return any((Path(run_dir) / n).exists() for n in (CHECKPOINT, PREVIOUS_CHECKPOINT))


def wrong_kind(value: Any, expected: torch.Tensor) -> str | None:
    """Why ``value`` cannot take the place of ``expected`` (None: it can): only a dense, strided
    tensor with data, of the same dtype, can. A crafted file may hold a sparse or meta tensor,
    which passes a shape check and then fails (or loads nothing) deep inside torch."""
    if not isinstance(value, torch.Tensor):
        return f"a {type(value).__name__}, not a tensor"
    if value.layout != torch.strided:
        return f"a {str(value.layout).removeprefix('torch.')} tensor, not a dense one"
    if value.is_meta or value.is_quantized or value.is_nested:
        return "a tensor without plain data (meta, quantized or nested)"
    if value.dtype != expected.dtype:
        return f"{value.dtype}, expected {expected.dtype}"
    return None


def load_model_state(module: nn.Module, state: Any, source: Path, what: str = "model") -> None:
    """``module.load_state_dict(state)``, with a mismatch (another architecture, other head
    sizes) reported as a CheckpointError that names the first differing keys."""
    own = module.state_dict()
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} holds no {what} weights.")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} is {tuple(getattr(state[k], 'shape', ()))}, expected {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)
    ]
    kinds = [f"{k} is {why}" for k in own if k in state and (why := wrong_kind(state[k], own[k]))]
    if kinds:
        raise CheckpointError(
            f"{source} holds {what} values of the wrong kind ({'; '.join(kinds[:3])})."
        )
    if missing or unexpected or shapes:
        details = []
        if shapes:
            details.append("; ".join(shapes[:3]))
        if missing:
            details.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            details.append(f"unexpected {', '.join(unexpected[:3])}")
        raise CheckpointError(
            f"{source} holds {what} weights of another architecture ({'; '.join(details)}); "
            "use a checkpoint of this run's backbone and head sizes."
        )
    module.load_state_dict(state)


def save_encoder(
    path: Path, encoder: nn.Module, architecture: str, cifar_stem: bool, kwargs: str = ""
) -> None:
    """Write the online encoder as safetensors: torchvision's key names (no ``fc``), or for a timm
    backbone the state dict of ``timm.create_model(name, num_classes=0, **timm_kwargs)``, with
    those keyword arguments (the image size a ViT was built for included) in the metadata."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    metadata = {
        "format": "byol-encoder",
        "architecture": architecture,
        "cifar_stem": str(cifar_stem).lower(),
    }
    if is_timm(architecture):
        effective = parse_kwargs(kwargs)
        side = input_side(encoder)
        if side is not None:
            effective["img_size"] = side
        metadata["timm_kwargs"] = json.dumps(effective)
        metadata["note"] = "timm state dict with num_classes=0; load with strict=True"
    else:
        stem = "; replace conv1 by a 3x3 stride-1 conv and maxpool by Identity first"
        metadata["note"] = "torchvision state dict without fc; load with strict=False" + (
            stem if cifar_stem else ""
        )
    atomic_write(Path(path), [safetensors_bytes(tensors, metadata=metadata)])


def encoder_metadata(path: Path) -> dict[str, str]:
    """The metadata in a safetensors file's header (an 8-byte length, then JSON), read by Python
    rather than by safetensors, which refuses a path that is not UTF-8."""
    with Path(path).open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(min(length, _HEADER_LIMIT)))
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return {}
    return metadata


def timm_kwargs(metadata: dict[str, str]) -> dict[str, Any]:
    """The keyword arguments of ``timm.create_model`` an encoder file was written with."""
    try:
        kwargs = json.loads(metadata.get("timm_kwargs") or "{}")
    except ValueError:
        kwargs = None
    if not isinstance(kwargs, dict):
        raise CheckpointError("the encoder's timm_kwargs metadata is not a JSON object.")
    return kwargs


def load_encoder(path: Path) -> tuple[nn.Module, dict[str, str]]:
    """Build the model named in the file's metadata (torchvision without ``fc``, or timm with
    ``num_classes=0``) and load the weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no encoder file at {path}; run `byol pretrain` first.")
    try:  # safetensors holds tensors and strings only: reading it runs no code
        metadata = encoder_metadata(path)
        tensors = load_safetensors(path.read_bytes())  # bytes: any path Python can open
    except Exception as error:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{path} is not a readable safetensors file ({error}).") from None
    architecture = metadata.get("architecture", "")
    known = architecture in BACKBONES or (is_timm(architecture) and architecture != TIMM)
    if metadata.get("format") != "byol-encoder" or not known:
        raise CheckpointError(
            f"{path} has no byol-encoder metadata naming a known backbone; export it with byol."
        )
    if is_timm(architecture):
        model = timm_model(architecture, timm_kwargs(metadata))
    else:
        model = build_backbone(architecture, metadata.get("cifar_stem") == "true")[0]
    load_model_state(model, tensors, path, f"{architecture} encoder")
    return model, metadata


def loading_lines(path: Path, metadata: dict[str, str]) -> list[str]:
    """Two lines of Python that load the encoder file into the library it came from (timm or
    torchvision); byol's own loader where torchvision has no such model (CIFAR stem, narrow)."""
    architecture = metadata.get("architecture", "")
    load = f"model.load_state_dict(safetensors.torch.load_file({str(path)!r}))"
    if is_timm(architecture):
        kwargs = "".join(f", {k}={v!r}" for k, v in timm_kwargs(metadata).items())
        name = architecture.removeprefix(TIMM)
        return [
            f"import safetensors.torch, timm; model = timm.create_model({name!r}, "
            f"num_classes=0{kwargs})",
            load,
        ]
    if metadata.get("cifar_stem") == "true" or architecture not in BACKBONES or "-" in architecture:
        return ["import byol", f"model, metadata = byol.load_encoder({str(path)!r})"]
    return [
        f"import safetensors.torch, torch, torchvision; model = torchvision.models.{architecture}"
        "(); model.fc = torch.nn.Identity()",
        load,
    ]
