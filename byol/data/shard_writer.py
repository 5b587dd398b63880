"""Any dataset the package reads, written as WebDataset tar shards with an ``index.json`` of
sample counts (``byol shards SRC OUT``), so that a user converts once and streams after.

Each split goes to its own shards (``train-000000.tar``, ..., ``test-000000.tar``, ...), in a
seeded random order so that every shard mixes the classes. An image read from a file is stored
as the file's own bytes (a JPEG stays the same JPEG); one held in memory (Fashion-MNIST, CIFAR)
as a lossless PNG, one channel where the dataset is grayscale. A label >= 0 goes under ``cls``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from byol.data.info import DatasetInfo
from byol.data.shard_files import FORMAT, INDEX
from byol.data.shards import webdataset
from byol.data.source import Source
from byol.errors import DatasetError

_SUFFIXES = {".jpeg": "jpg", ".jpg": "jpg", ".png": "png", ".webp": "webp"}


@dataclass
class Written:
    split: str
    shards: list[dict]  # {"file", "samples"} each

    @property
    def samples(self) -> int:
        return sum(s["samples"] for s in self.shards)


def _png(image: torch.Tensor, grayscale: bool) -> bytes:
    pixels = image[0].numpy() if grayscale else image.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _samples(source: Source, grayscale: bool, seed: int) -> Iterator[tuple[str, bytes, int]]:
    """(suffix, image bytes, label) of every item, in a seeded order where random access is."""
    if source.streaming:  # no random access: stored order
        for image, label in source.stream():  # type: ignore[union-attr]
            yield "png", _png(image, grayscale), int(label)
        return
    order = np.random.default_rng(seed).permutation(len(source))
    files, labels = source.files(), source.label_array()
    for i in order.tolist():
        path = files[i] if files is not None else None
        if path is not None and path.suffix.lower() in _SUFFIXES:
            label = int(labels[i]) if labels is not None else int(source[i][1])
            yield _SUFFIXES[path.suffix.lower()], path.read_bytes(), label
        else:
            image, label = source[i]
            yield "png", _png(image, grayscale), int(label)


def write_split(
    source: Source,
    split: str,
    out: Path,
    shard_size: int,
    grayscale: bool,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Written:
    """``source`` as ``out/<split>-NNNNNN.tar`` of ``shard_size`` samples each (the last fewer)."""
    wds = webdataset()
    written: list[dict] = []
    writer, count = None, 0

    def close() -> None:
        writer.close()
        temporary = out / f".{written[-1]['file']}.partial"
        os.replace(temporary, out / written[-1]["file"])  # a finished shard only

    for index, (suffix, data, label) in enumerate(_samples(source, grayscale, seed)):
        if writer is None or count == shard_size:
            if writer is not None:
                close()
            written.append({"file": f"{split}-{len(written):06d}.tar", "samples": 0})
            stream = open(out / f".{written[-1]['file']}.partial", "wb")  # noqa: SIM115
            writer, count = wds.TarWriter(stream, encoder=False, mtime=0), 0
        sample = {"__key__": f"{index:09d}", suffix: data}
        if label >= 0:
            sample["cls"] = str(label).encode()
        writer.write(sample)
        count += 1
        written[-1]["samples"] = count
        if progress is not None:
            progress(index + 1)
    if writer is None:
        raise DatasetError(f"the {split} split holds no images; nothing to write.")
    close()
    return Written(split, written)


def write_shards(
    train: Source,
    test: Source | None,
    info: DatasetInfo,
    out: Path,
    shard_size: int,
    seed: int = 0,
    progress: Callable[[str, int], None] | None = None,
) -> list[Written]:
    """Both splits as shards in ``out`` and the ``index.json`` that lists them (written last:
    a folder without it was not finished)."""
    if shard_size < 1:
        raise DatasetError(f"shard size {shard_size} must be at least 1 sample.")
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.tar")) or (out / INDEX).exists():
        raise DatasetError(f"{out} already holds shards; choose an empty folder.")
    splits = [("train", train)] + ([("test", test)] if test is not None else [])
    written = []
    for split, source in splits:
        report = (lambda n, s=split: progress(s, n)) if progress else None
        written.append(write_split(source, split, out, shard_size, info.grayscale, seed, report))
    index = {
        "format": FORMAT,
        "name": info.name,
        "classes": list(info.classes),
        "mean": list(info.mean),
        "std": list(info.std),
        "grayscale": info.grayscale,
        "splits": {w.split: w.shards for w in written},
    }
    temporary = out / f".{INDEX}.partial"
    temporary.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(temporary, out / INDEX)
    return written
