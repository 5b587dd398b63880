"""WebDataset tar shards as a streaming source, read with the ``webdataset`` package (the
``shards`` extra): a folder of ``.tar`` files, a brace pattern
(``/data/train-{000000..000127}.tar``) or a URL or ``pipe:`` pattern, as WebDataset reads them
(``shard_files.py`` finds them).

A sample is the members of a shard that share a key (``000123.jpg``, ``000123.cls``): an image
under any image extension (jpg, jpeg, png, webp, ...; also as ``image.jpg``) and, optionally, an
integer class label under ``cls``. A sample without an image, with a label that is not an
integer, or that does not decode is skipped and counted as a folder's unreadable file is (with
``strict_images`` it stops the run, named); a shard cut short (a truncated download) ends where
it breaks, the rest of its samples counted as unreadable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from byol.data import shard_files
from byol.data.decode import (
    IMAGE_EXTENSIONS,
    LOGGED_UNREADABLE,
    STATS_SAMPLE,
    UnreadableImage,
    decode_bytes,
    failure_reason,
)
from byol.data.info import DatasetInfo
from byol.data.source import Item, LoadRequest, Registered, Splits, StreamingSource
from byol.errors import DatasetError, DatasetNotFoundError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = tuple(extension.lstrip(".") for extension in IMAGE_EXTENSIONS)
LABEL_SUFFIXES = ("cls", "cls.txt", "label", "label.txt")
Record = dict[str, Any]  # a sample's members by suffix, as bytes, with __key__ and __url__


def webdataset() -> Any:
    try:
        import webdataset as wds
    except ImportError:
        raise DatasetError(
            "reading tar shards needs the webdataset package; install it with "
            "`pip install 'byol[shards]'`."
        ) from None
    return wds


def image_suffix(record: Record) -> str | None:
    """The member that holds the image: the first with an image extension, jpg before png."""
    found = [s for s in record if not s.startswith("__") and s.rsplit(".", 1)[-1] in IMAGE_SUFFIXES]
    return min(found, key=lambda s: IMAGE_SUFFIXES.index(s.rsplit(".", 1)[-1]), default=None)


def record_name(record: Record) -> str:
    return f"{record.get('__url__', '?')}:{record.get('__key__', '?')}"


def decode_record(record: Record) -> Item:
    """(uint8 (3, H, W) image, label or -1) of one sample; raises UnreadableImage naming it."""
    name = record_name(record)
    suffix = image_suffix(record)
    if suffix is None:
        members = ", ".join(s for s in record if not s.startswith("__")) or "none"
        raise UnreadableImage(name, f"no image member (members: {members})")
    label = -1
    for key in LABEL_SUFFIXES:
        if key in record:
            text = bytes(record[key]).decode("utf-8", "replace").strip()
            try:
                label = int(text)
            except ValueError:
                raise UnreadableImage(name, f"its label {text[:20]!r} is not an integer") from None
            if label < 0:
                raise UnreadableImage(name, f"its label {label} is negative")
            break
    return decode_bytes(record[suffix], f"{name}.{suffix}"), label


def read_records(url: str, strict: bool = False, expected: int | None = None) -> Iterator[Record]:
    """The samples of one shard in stored order, undecoded. A shard that cannot be opened, breaks
    off or holds fewer than the ``expected`` samples (truncated) ends there with a warning; with
    ``strict`` it raises, named."""
    wds = webdataset()
    from webdataset.tariterators import group_by_keys, tar_file_expander

    count = 0
    try:
        stream = wds.gopen(url)
        members = tar_file_expander([{"url": url, "stream": stream}])
        for record in group_by_keys(members):
            count += 1
            yield record
        stream.close()
        if expected is None or count >= expected:
            return
        reason = f"it ends there, its index lists {expected}"
    except GeneratorExit:
        raise
    except Exception as error:  # tarfile, gopen and the pipe each raise their own types
        reason = failure_reason(error)
    message = (
        f"shard {url} cannot be read after {count} samples ({reason}); check the file or "
        "address, or write it again"
    )
    if strict:
        raise DatasetError(message + ".")
    log.warning("%s; the rest of the shard is skipped", message)


class TarShards(StreamingSource):
    """Samples of tar shards, read in their stored order, shard after shard."""

    def __init__(
        self,
        urls: list[str],
        counts: list[int] | None,
        labelled: bool,
        name: str = "shards",
        strict: bool = False,
    ) -> None:
        self.urls, self.counts, self.labelled = list(urls), counts, labelled
        self.name, self.strict = name, strict
        self.num_samples = sum(counts) if counts is not None else None
        self.unreadable: list[str] = []  # met by this process, each once
        self._seen: set[str] = set()

    def pieces(self) -> list[int] | None:
        return self.counts

    def read_piece(self, index: int) -> Iterator[Record]:
        expected = self.counts[index] if self.counts is not None else None
        return read_records(self.urls[index], self.strict, expected)

    def decode(self, record: Record) -> Item:
        return decode_record(record)

    def record_name(self, record: Record) -> str:
        return record_name(record)

    def stream(self) -> Iterator[Item]:
        return self._items(range(len(self.urls)))

    def stream_part(self, part: int, parts: int) -> Iterator[Item]:
        return self._items(range(part, len(self.urls), parts))

    def _items(self, shards: range) -> Iterator[Item]:
        for index in shards:
            for record in self.read_piece(index):
                try:
                    yield decode_record(record)
                except UnreadableImage as error:
                    self.note_unreadable(error)

    def note_unreadable(self, error: UnreadableImage) -> None:
        """As a folder's unreadable file: logged (the first few) and counted, or, with
        ``strict``, the end of the run, named."""
        if self.strict:
            raise DatasetError(
                f"{error.path} cannot be read ({error.reason}); write the shard again, or set "
                "strict_images=false to skip unreadable samples."
            ) from None
        if str(error.path) in self._seen:
            return  # met again: the statistics read the first images at load
        self._seen.add(str(error.path))
        self.unreadable.append(str(error.path))
        if len(self.unreadable) <= LOGGED_UNREADABLE:
            log.warning("skipping unreadable sample %s (%s)", error.path, error.reason)


def measured_stats(items: Iterator[Item]) -> tuple[tuple, tuple, bool] | None:
    """Mean, std and grayscale-ness of the first readable images (up to STATS_SAMPLE) of
    ``items``; None when there is none."""
    total, total_sq, count, gray = np.zeros(3), np.zeros(3), 0, True
    for seen, (image, _) in enumerate(items):
        pixels = image.reshape(3, -1).double().numpy() / 255.0
        gray = gray and bool((pixels == pixels[:1]).all())
        total, total_sq = total + pixels.sum(1), total_sq + (pixels**2).sum(1)
        count += pixels.shape[1]
        if seen + 1 >= STATS_SAMPLE:
            break
    if count == 0:
        return None
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    rounded = (tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std))
    return rounded[0], tuple(max(s, 1e-3) for s in rounded[1]), gray


def load_location(location: str, strict: bool = False) -> Splits:
    """(train, test or None, info) of the shards at ``location`` (a folder, a pattern, a URL)."""
    webdataset()
    found = shard_files.locate(location)
    train = TarShards(found.train, found.train_counts, found.labelled, found.name, strict)
    test = None
    if found.test:
        test = TarShards(found.test, found.test_counts, found.labelled, found.name, strict)
    stats = found.stats or measured_stats(train.stream())
    if stats is None:
        raise DatasetError(
            f"no sample of the shards at {location} can be read ({len(train.unreadable)} "
            "unreadable); check that they hold images (jpg, png, webp, ...)."
        )
    info = DatasetInfo(found.name, found.classes, *stats, list(train.unreadable))
    return train, test, info


def _load(request: LoadRequest) -> Splits:
    if request.data_dir is None:
        raise DatasetNotFoundError(
            "dataset=shards needs data_dir: set it to the folder or pattern of the .tar shards."
        )
    return load_location(str(request.data_dir), request.strict)


SHARDS = Registered(_load)  # the shards at data_dir; dataset=<folder of .tar or a pattern> too
