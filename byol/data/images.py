"""A folder of image files as a source decoded item by item, and its decoding into a
``TensorImageDataset`` held in memory when the images fit.

An unreadable file in a folder is skipped by default: the first few are logged by path and all
are listed in ``ImageFolderDataset.unreadable``. With ``strict=True`` the first one stops the run
with a message naming it.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from byol.data.decode import (
    GRAY_MODES,
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    IN_MEMORY_LIMIT_BYTES,
    LOGGED_UNREADABLE,
    STATS_SAMPLE,
    UnreadableImage,
    decode_image,
    failure_reason,
    header_size,
    to_rgb,
)
from byol.data.folder_index import relative_image_names
from byol.data.packed_names import PackedNames
from byol.data.source import IndexableSource, Item, Transform
from byol.data.tensors import TensorImageDataset
from byol.errors import DatasetError, DatasetNotFoundError
from byol.files import expand_home

log = logging.getLogger(__name__)


class ImageFolderDataset(IndexableSource):
    """A folder of images: by class (root/<class>/**/img) -> labels, or flat -> label -1.

    Flat means image files lie directly in ``root`` (sub-folders are then searched too and all
    get label -1). Pass ``classes`` to reuse another split's class order; a class folder not in
    that list is an error. ``index_dir``: where the list of files is kept between runs
    (``folder_index.py``). An unreadable file met by ``__getitem__`` is replaced by the next
    readable one (the same one every time, so resumed runs see the same images), unless
    ``strict``. ``samples`` lists (file, label) per item, made when asked; ``path(i)`` is one.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Transform | None = None,
        classes: list[str] | None = None,
        strict: bool = False,
        index_dir: Path | None = None,
    ) -> None:
        self.root = expand_home(root)
        self.transform = transform
        self.strict = strict
        self.unreadable: list[tuple[Path, str]] = []  # found so far, in this process
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"Image folder {self.root} does not exist.")
        names = relative_image_names(self.root, index_dir)  # one walk, or none where indexed
        # Flat: an image directly in root. Strings, not Paths: a million Paths take seconds.
        flat = any(os.sep not in name for name in names)
        labels = np.full(len(names), -1, np.int64)
        self.classes: list[str] = []
        if not flat:
            found: dict[str, int] = {}  # class folder -> its number in the order first met
            firsts = (found.setdefault(name.partition(os.sep)[0], len(found)) for name in names)
            codes = np.fromiter(firsts, np.int64, len(names))
            self.classes = list(classes) if classes is not None else sorted(found)
            index = {name: i for i, name in enumerate(self.classes)}
            unknown = sorted(set(found) - set(index))
            if unknown:
                raise DatasetError(
                    f"Folder {self.root} has class folders {unknown} that are not among the "
                    f"training classes {self.classes}."
                )
            labels = np.array([index[name] for name in found], np.int64)[codes]
        self._keep(names, labels)
        if not len(self):
            raise DatasetError(
                f"Folder {self.root} holds no images: expected files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)} (case-insensitive), directly in it or in one "
                "sub-folder per class."
            )

    def _keep(self, names: list[str], labels: np.ndarray) -> None:
        # A million Paths would take seconds to make and ten times the memory.
        self._names, self._labels = PackedNames(names), np.asarray(labels, np.int64)

    def path(self, i: int) -> Path:
        """Item ``i``'s file."""
        return self.root / self._names[i]  # an absolute name stays itself

    @property
    def samples(self) -> list[tuple[Path, int]]:
        """(file, label) of every item, made on each call."""
        return [(self.path(i), int(label)) for i, label in enumerate(self._labels.tolist())]

    @samples.setter
    def samples(self, pairs: list[tuple[Path, int]]) -> None:
        prefix = str(self.root) + os.sep
        names = [str(p)[len(prefix) :] if str(p).startswith(prefix) else str(p) for p, _ in pairs]
        self._keep(names, np.array([label for _, label in pairs], np.int64))

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int) -> Item:
        for offset in range(len(self)):
            index = (i + offset) % len(self)
            path = self.path(index)
            try:
                image = decode_image(path)
            except UnreadableImage as error:
                self.note_unreadable(error)
                continue
            if self.transform is not None:
                image = self.transform(image)
            return image, int(self._labels[index])
        raise self._nothing_readable()

    def label_array(self) -> np.ndarray:
        return self._labels.copy()

    def take(self, indices: np.ndarray) -> ImageFolderDataset:
        out = copy.copy(self)
        out._names, out._labels = self._names.take(indices), self._labels[indices]
        return out

    def files(self) -> list[Path]:
        return [self.path(i) for i in range(len(self))]

    def note_unreadable(self, error: UnreadableImage, logged: bool = True) -> None:
        """Record a file that failed to decode; in strict mode, stop with its name instead.

        ``logged=False`` while loading: ``unreadable_summary`` then logs them all in one line.
        """
        if self.strict:
            raise DatasetError(
                f"{error.path} cannot be read as an image ({error.reason}); remove or replace "
                "the file, or set strict_images=false to skip unreadable files."
            ) from None
        self.unreadable.append((error.path, error.reason))
        if logged and len(self.unreadable) <= LOGGED_UNREADABLE:
            log.warning("skipping unreadable image %s (%s)", error.path, error.reason)

    def drop_unreadable(self) -> None:
        """Remove the files found unreadable so far from ``samples``."""
        bad = {str(path) for path, _ in self.unreadable}
        if bad:
            root = str(self.root)
            kept = [i for i in range(len(self)) if os.path.join(root, self._names[i]) not in bad]
            self._names, self._labels = self._names.take(kept), self._labels[kept]
        if not len(self):
            raise self._nothing_readable()

    def _nothing_readable(self) -> DatasetError:
        path, reason = self.unreadable[0] if self.unreadable else (self.root, "?")
        return DatasetError(
            f"No image in {self.root} can be read ({len(self.unreadable)} unreadable files, the "
            f"first {path}: {reason}); check that the folder holds image files."
        )


def folder_stats(
    dataset: ImageFolderDataset,
) -> tuple[tuple[float, float, float], tuple[float, float, float], bool]:
    """Mean, std and grayscale-ness from a deterministic sample of up to 1000 readable images."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    gray = True
    for i in _stats_sample(len(dataset)):
        path = dataset.path(int(i))
        try:
            with Image.open(path) as img:
                gray = gray and img.mode in GRAY_MODES
                # A reduced JPEG decode is much faster and barely changes the statistics.
                img.draft(img.mode, (256, 256))
                img.load()
                arr = np.asarray(to_rgb(img), dtype=np.float64).reshape(-1, 3) / 255.0
        except Exception as e:  # see _decode
            dataset.note_unreadable(UnreadableImage(path, failure_reason(e)), logged=False)
            continue
        total += arr.sum(0)
        total_sq += (arr**2).sum(0)
        count += arr.shape[0]
    dataset.drop_unreadable()
    if count == 0:
        return IMAGENET_MEAN, IMAGENET_STD, False
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return (
        tuple(round(float(m), 4) for m in mean),  # type: ignore[return-value]
        tuple(round(float(max(s, 1e-3)), 4) for s in std),
        gray,
    )


def _stats_sample(n: int) -> np.ndarray:
    if n <= STATS_SAMPLE:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, STATS_SAMPLE, replace=False))


def _fits_in_memory(dataset: ImageFolderDataset) -> bool:
    """True when all readable images share one size (from headers) and fit under the limit.

    Files whose header does not parse are noted as unreadable on the way.
    """
    first = None
    for i in range(len(dataset)):
        path = dataset.path(i)
        try:
            size = header_size(path)
        except UnreadableImage as error:
            dataset.note_unreadable(error, logged=False)
            continue
        if first is None:
            first = size
            if len(dataset) * 3 * size[0] * size[1] > IN_MEMORY_LIMIT_BYTES:
                return False
        elif size != first:
            return False
    return True


def to_memory(dataset: ImageFolderDataset) -> TensorImageDataset | None:
    """Decode every readable image of a folder into one uint8 tensor.

    Returns None when the images differ in size or would not fit (the folder then stays lazy).
    Unreadable files are dropped from ``dataset.samples`` and listed in ``dataset.unreadable``.
    """
    fits = _fits_in_memory(dataset)
    dataset.drop_unreadable()
    if not fits:
        return None
    start = time.monotonic()
    images: torch.Tensor | None = None
    kept: list[tuple[Path, int]] = []
    for path, label in dataset.samples:
        try:
            image = decode_image(path)
        except UnreadableImage as error:  # a header that parses, data that does not (truncated)
            dataset.note_unreadable(error, logged=False)
            continue
        if images is None:
            images = torch.empty((len(dataset.samples), *image.shape), dtype=torch.uint8)
        elif image.shape != images.shape[1:]:  # the header lied about the size
            reason = f"decodes to {tuple(image.shape)}, the others to {tuple(images.shape[1:])}"
            dataset.note_unreadable(UnreadableImage(path, reason), logged=False)
            continue
        images[len(kept)] = image
        kept.append((path, label))
    dataset.drop_unreadable()  # raises when nothing was readable
    assert images is not None
    if len(kept) < len(images):
        images = images[: len(kept)].clone()
    labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
    elapsed = time.monotonic() - start
    log.info("decoded %d images from %s in %.1fs", len(kept), dataset.root, elapsed)
    return TensorImageDataset(images, labels, dataset.transform)


def unreadable_summary(datasets: list[ImageFolderDataset]) -> list[str]:
    """Log one line with the count and the first few unreadable files; return all their paths."""
    found = [(p, reason) for ds in datasets for p, reason in ds.unreadable]
    if found:
        shown = "; ".join(f"{p} ({reason})" for p, reason in found[:LOGGED_UNREADABLE])
        more = (
            f" and {len(found) - LOGGED_UNREADABLE} more" if len(found) > LOGGED_UNREADABLE else ""
        )
        total = sum(len(ds) for ds in datasets) + len(found)
        log.warning(
            "skipped %d unreadable image files of %d: %s%s (set strict_images=true to stop at "
            "the first one instead)",
            len(found),
            total,
            shown,
            more,
        )
    return [str(p) for p, _ in found]
