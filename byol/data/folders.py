"""A user's folder of images: ``train/`` and ``test/`` (or ``val/``) sub-folders of class folders,
class folders alone, or a flat unlabelled folder."""

from __future__ import annotations

import logging
from pathlib import Path

from byol.data.decode import IMAGENET_MEAN, IMAGENET_STD
from byol.data.images import ImageFolderDataset, folder_stats, to_memory, unreadable_summary
from byol.data.info import DatasetInfo
from byol.data.source import LoadRequest, Registered, Source, Splits
from byol.errors import DatasetError, DatasetNotFoundError

log = logging.getLogger(__name__)


def load_folder(
    path: Path, in_memory: bool, strict: bool = False, index_dir: Path | None = None
) -> Splits:
    """The splits of the folder at ``path``; its list of files kept in ``index_dir`` (when
    given) for the next load (``folder_index.py``)."""
    if not path.exists():
        raise DatasetNotFoundError(f"Image folder {path} does not exist; check data_dir.")
    if not path.is_dir():
        raise DatasetError(f"Dataset path {path} is a file, not a folder of images.")
    test_dir = next((path / s for s in ("test", "val") if (path / s).is_dir()), None)
    if (path / "train").is_dir():
        train = ImageFolderDataset(path / "train", strict=strict, index_dir=index_dir)
        test = None
        if test_dir:
            test = ImageFolderDataset(test_dir, None, train.classes, strict, index_dir)
        if test is not None and train.classes and not test.classes:
            # Unlabelled test images would score every encoder at 0% (no label ever matches).
            raise DatasetError(
                f"{test_dir} holds images without class folders while {path / 'train'} has "
                f"{len(train.classes)}, so its images cannot score an encoder; sort them into the "
                f"same class folders, or move {test_dir.name}/ out of {path} to train without "
                "test scores."
            )
    else:
        train, test = ImageFolderDataset(path, strict=strict, index_dir=index_dir), None
    folders = [ds for ds in (train, test) if ds is not None]
    splits: list[Source] = list(folders)
    if in_memory:
        held = []
        for ds in folders:  # decoding drops unreadable files, so the stats below skip them
            tensors = to_memory(ds)
            if tensors is None:
                log.info("%s: images differ in size or exceed 2 GB; decoding them lazily", path)
                break
            held.append(tensors)
        else:
            splits = held
    mean, std, gray = folder_stats(train)
    unreadable = unreadable_summary(folders)
    info = DatasetInfo(path.resolve().name, list(train.classes), mean, std, gray, unreadable)
    return splits[0], splits[1] if test is not None else None, info


def _load_named(request: LoadRequest) -> Splits:
    if request.data_dir is None:
        raise DatasetNotFoundError(
            f"Dataset '{request.name}' needs data_dir: set it to the image folder "
            "(with train/ and val/ sub-folders for ImageNet)."
        )
    train, test, info = load_folder(
        request.data_dir, request.in_memory, request.strict, request.index_dir
    )
    if request.name == "imagenet":
        info.name = "imagenet"
        info.mean, info.std = IMAGENET_MEAN, IMAGENET_STD
    return train, test, info


FOLDER = Registered(_load_named)  # the folder at data_dir
IMAGENET = Registered(_load_named, (IMAGENET_MEAN, IMAGENET_STD))  # train/ and val/ at data_dir
