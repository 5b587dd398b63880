"""The CIFAR-10 JPEG copy: a checksummed tarball of train/ and test/ class folders, extracted once
into the cache and decoded once into uint8 tensors kept beside it.

It is found only where the user says: ``data_dir`` (the tarball, a folder holding it, or the
extracted folder), or the folder named by $BYOL_SHARED_DIR (its ``datasets/`` sub-folder holds
the tarball); an earlier extraction in the cache is reused.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from byol.data.images import ImageFolderDataset, to_memory, unreadable_summary
from byol.data.info import DatasetInfo, _cache_root
from byol.data.source import LoadRequest, Registered, Source, Splits
from byol.data.tensors import TensorImageDataset
from byol.data.torchvision_sets import CIFAR10_STATS
from byol.errors import DatasetError, DatasetNotFoundError
from byol.files import atomic_write, expand_home

log = logging.getLogger(__name__)

CIFAR10_JPEG_SHA256 = "820394552d8cd6cf2834c7f34753d3e36624717e73e6a373a57a01edb25bc5f0"
CIFAR10_JPEG_TARBALL = "cifar10-jpeg.tar.gz"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_split_folder(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def _cifar10_jpeg_cache() -> Path:
    return _cache_root() / "cifar10-jpeg"


def _locate_cifar10_jpeg(
    data_dir: Path | None,
) -> tuple[Path | None, Path | None, list[Path]]:
    """Return (extracted folder or None, tarball or None, places looked at)."""
    if data_dir is not None:
        for folder in (data_dir, data_dir / "cifar10-jpeg"):
            if folder.is_dir() and _is_split_folder(folder):
                return folder, None, [data_dir]
        tarballs = [data_dir, data_dir / CIFAR10_JPEG_TARBALL]
        tarballs.append(data_dir / "datasets" / CIFAR10_JPEG_TARBALL)
        for tarball in tarballs:
            if tarball.is_file():
                return None, tarball, [data_dir]
        return None, None, [data_dir]
    cache = _cifar10_jpeg_cache()
    if _is_split_folder(cache):
        return cache, None, [cache]
    looked = [cache]
    shared = os.environ.get("BYOL_SHARED_DIR")
    if shared:
        looked.append(expand_home(shared) / "datasets" / CIFAR10_JPEG_TARBALL)
    for tarball in looked[1:]:
        if tarball.is_file():
            return None, tarball, looked
    return None, None, looked


def cifar10_jpeg_available() -> bool:
    """Whether the JPEG copy is at hand without a data_dir: extracted in the cache, or its
    tarball under $BYOL_SHARED_DIR."""
    folder, tarball, _ = _locate_cifar10_jpeg(None)
    return folder is not None or tarball is not None


def _extract_with_data_filter(tar: tarfile.TarFile, dest: Path) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise DatasetError(
            "this Python has no tarfile extraction filters (path-traversal protection); "
            "use Python 3.10.12, 3.11.4 or newer."
        )
    tar.extractall(dest, filter="data")


def _extract_cifar10_jpeg(tarball: Path, dest: Path) -> None:
    """Verify and extract the tarball so that ``dest`` appears complete or not at all."""
    actual = _sha256(tarball)
    if actual != CIFAR10_JPEG_SHA256:
        raise DatasetError(
            f"{tarball} has sha256 {actual}, not {CIFAR10_JPEG_SHA256}: the file is corrupt or "
            "not the CIFAR-10 JPEG copy; replace it with an intact copy."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Temp folders of interrupted runs are hours old; extraction itself takes seconds.
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        log.info("extracting %s to %s", tarball, dest)
        try:
            with tarfile.open(tarball) as tar:
                _extract_with_data_filter(tar, tmp)
        except (tarfile.TarError, OSError) as e:
            raise DatasetError(f"Cannot extract {tarball}: {e}") from e
        extracted = tmp / "cifar10-jpeg"
        if not _is_split_folder(extracted):
            raise DatasetError(f"{tarball} does not contain cifar10-jpeg/train and /test.")
        try:
            extracted.rename(dest)
        except OSError:
            # Another process finished the same extraction first.
            if not _is_split_folder(dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_cifar10_jpeg(
    data_dir: Path | None, in_memory: bool, strict: bool = False
) -> tuple[Source, Source, list[str]]:
    folder, tarball, looked = _locate_cifar10_jpeg(data_dir)
    if folder is None and tarball is not None:
        folder = _cifar10_jpeg_cache()
        if not _is_split_folder(folder):
            _extract_cifar10_jpeg(tarball, folder)
    if folder is None:
        raise DatasetNotFoundError(
            f"The CIFAR-10 JPEG copy ({CIFAR10_JPEG_TARBALL} or its extracted folder) was not "
            f"found at {', '.join(str(p) for p in looked)}; set data_dir (or BYOL_SHARED_DIR) to "
            "where it lies."
        )
    # Only our own verified extraction is immutable enough to cache decoded tensors for.
    cached = [folder / f"{split}-uint8.pt" for split in ("train", "test")]
    use_cache = in_memory and folder == _cifar10_jpeg_cache()
    if use_cache and all(p.is_file() for p in cached):
        splits = []
        for p in cached:
            state = torch.load(p, weights_only=True)
            splits.append(TensorImageDataset(state["images"], state["labels"]))
        return splits[0], splits[1], list(state["classes"])
    train = ImageFolderDataset(folder / "train", strict=strict)
    test = ImageFolderDataset(folder / "test", classes=train.classes, strict=strict)
    mem = [to_memory(train), to_memory(test)] if in_memory else [None]
    unreadable_summary([train, test])
    if any(ds is None for ds in mem):
        return train, test, train.classes
    if use_cache:
        for ds, p in zip(mem, cached, strict=True):
            buffer = io.BytesIO()
            torch.save({"images": ds.images, "labels": ds.labels, "classes": train.classes}, buffer)
            atomic_write(p, [buffer.getbuffer()])
    return mem[0], mem[1], train.classes


def load(request: LoadRequest) -> Splits:
    train, test, classes = load_cifar10_jpeg(request.data_dir, request.in_memory, request.strict)
    mean, std = CIFAR10_STATS  # normalised as the CIFAR-10 it was made from
    return train, test, DatasetInfo(request.name, classes, mean, std, False)


CIFAR10_JPEG = Registered(load, CIFAR10_STATS)
