"""Where tar shards are, how many samples each holds, and what ``index.json`` beside them says.

A location is a folder of ``.tar`` files (``train-*.tar`` and ``test-*.tar`` or ``val-*.tar``
the two splits; other names all train), a brace pattern of files, or a URL or ``pipe:`` pattern
(``::`` joins several), expanded as WebDataset expands them. ``index.json`` (``byol shards``
writes it) lists each split's shards with their sample counts, the class names and the image
statistics. Without it, local shards are counted from their tar headers (no image is read);
remote shards then have no counts, which pretraining needs (``docs/data.md``).
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byol.errors import DatasetError, DatasetNotFoundError
from byol.files import expand_home

INDEX = "index.json"
FORMAT = "byol-shards/1"
TEST_PREFIXES = ("test", "val")
_IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pnm")
_LABEL_SUFFIXES = ("cls", "cls.txt", "label", "label.txt")
_KEY = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")  # WebDataset's key and suffix of a member


@dataclass
class Found:
    name: str
    train: list[str]
    test: list[str] = field(default_factory=list)
    train_counts: list[int] | None = None
    test_counts: list[int] | None = None
    labelled: bool = False
    classes: list[str] = field(default_factory=list)
    stats: tuple[tuple, tuple, bool] | None = None  # mean, std, grayscale


def is_remote(url: str) -> bool:
    return url.startswith("pipe:") or "://" in url


def looks_like_shards(name: str) -> bool:
    """Whether ``dataset=name`` names tar shards rather than a folder of images."""
    if is_remote(name) or "::" in name:
        return True
    if "{" in name and ".tar" in name or name.endswith(".tar"):
        return True
    path = expand_home(name)
    if not path.is_dir():
        return False
    return (path / INDEX).is_file() or any(p.suffix == ".tar" for p in path.iterdir())


def locate(location: str) -> Found:
    path = expand_home(location)
    if not is_remote(location) and path.is_dir():
        return _in_folder(path)
    from webdataset.shardlists import expand_urls

    urls = expand_urls(location)
    if not urls:
        raise DatasetError(f"the shard pattern {location!r} names no file; check it.")
    missing = [u for u in urls if not is_remote(u) and not expand_home(u).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"shard {missing[0]} does not exist ({len(missing)} of the {len(urls)} files of "
            f"{location!r} are missing); check the pattern."
        )
    first = expand_home(urls[0])
    index = None if is_remote(urls[0]) else read_index(first.parent)
    found = Found(first.parent.name if not is_remote(urls[0]) else "shards", urls)
    if index is not None:
        _apply_index(found, index, first.parent, urls)
    elif not any(map(is_remote, urls)):
        found.train_counts, found.labelled, found.classes = _count_all(urls)
    return found


def _in_folder(folder: Path) -> Found:
    tars = sorted(p for p in folder.iterdir() if p.suffix == ".tar" and p.is_file())
    index = read_index(folder)
    if index is not None:
        splits = index["splits"]
        train = [str(folder / s["file"]) for s in splits.get("train", [])]
        found = Found(str(index.get("name") or folder.name), train)
        _apply_index(found, index, folder, train)
        return found
    if not tars:
        raise DatasetError(f"{folder} holds no .tar shards; check the folder.")
    test = [str(p) for p in tars if p.name.lower().startswith(TEST_PREFIXES)]
    train = [str(p) for p in tars if str(p) not in test]
    train = [p for p in train if Path(p).name.lower().startswith("train")] or train
    if not train:
        raise DatasetError(f"{folder} holds test shards only; add train-*.tar shards.")
    found = Found(folder.name, train, test)
    found.train_counts, found.labelled, found.classes = _count_all(train)
    if test:
        found.test_counts, test_labelled, test_classes = _count_all(test)
        if len(test_classes) > len(found.classes):
            found.classes = test_classes
    return found


def read_index(folder: Path) -> dict[str, Any] | None:
    """``folder/index.json``, checked; None when there is none."""
    path = folder / INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
        splits = index["splits"]
        for shards in splits.values():
            for shard in shards:
                if not isinstance(shard["file"], str) or int(shard["samples"]) < 0:
                    raise ValueError(f"bad entry {shard}")
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(
            f"{path} is not a shard index ({error}); delete it to count the shards instead, or "
            "write the shards again with `byol shards`."
        ) from None
    return index


def _apply_index(found: Found, index: dict[str, Any], folder: Path, train: list[str]) -> None:
    """Counts of ``train`` (and the test split) from ``index``; a shard it lacks is counted."""
    splits = index["splits"]
    counts = {s["file"]: int(s["samples"]) for shards in splits.values() for s in shards}
    found.train_counts = [counts.get(Path(u).name) or _count(u)[0] for u in train]
    found.test = [str(folder / s["file"]) for s in splits.get("test", [])]
    found.test_counts = [int(s["samples"]) for s in splits.get("test", [])] or None
    for url in found.train + found.test:
        if not is_remote(url) and not Path(url).is_file():
            raise DatasetNotFoundError(
                f"shard {url}, listed in {folder / INDEX}, does not exist; copy it back or "
                "write the shards again with `byol shards`."
            )
    found.classes = [str(c) for c in index.get("classes") or []]
    found.labelled = bool(found.classes)
    if "mean" in index and "std" in index:
        mean, std = (tuple(float(v) for v in index[k]) for k in ("mean", "std"))
        found.stats = (mean, std, bool(index.get("grayscale", False)))


def _count_all(urls: list[str]) -> tuple[list[int], bool, list[str]]:
    """Each shard's sample count, whether any sample is labelled, and classes 0..max label."""
    counts, top = [], -1
    for url in urls:
        count, label = _count(url)
        counts.append(count)
        top = max(top, label)
    return counts, top >= 0, [str(i) for i in range(top + 1)]


def _count(url: str) -> tuple[int, int]:
    """(samples with an image, highest integer label or -1) from one shard's headers and labels."""
    keys, top, end = set(), -1, 0
    try:
        with tarfile.open(url) as tar:
            for member in tar:
                end = max(end, member.offset_data + -(-member.size // 512) * 512)
                match = _KEY.match(member.name)
                if not member.isreg() or match is None:
                    continue
                key, suffix = match.groups()
                if suffix.lower().rsplit(".", 1)[-1] in _IMAGE_SUFFIXES:
                    keys.add(key)
                elif suffix.lower() in _LABEL_SUFFIXES:
                    text = tar.extractfile(member).read(32).decode("utf-8", "replace").strip()
                    top = max(top, int(text)) if text.isdigit() else top
        if Path(url).stat().st_size < end + 1024:  # a tar ends in two zero blocks
            raise tarfile.ReadError("it is truncated: its end-of-archive blocks are missing")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DatasetError(
            f"shard {url} cannot be read ({error}); write it again, or remove it."
        ) from None
    return len(keys), top
