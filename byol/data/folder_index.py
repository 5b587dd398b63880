"""The image files under a folder, found by one walk and kept in an index file (beside the run
that reads the folder), so that a resumed run or an evaluation does not walk a million files
again.

The index holds every file's path relative to the folder and the modification time of every
directory walked. Adding, removing or renaming a file changes its directory's time, so the index
is walked again when any directory's time differs or one is gone, or when a directory changed
within two seconds of the walk (a change in the same clock tick would keep its time); a file
rewritten in place keeps its name, and is read (or found unreadable) as it is then.

The file is a NumPy ``.npz`` of plain arrays (no pickle: loaded with ``allow_pickle=False``):
the relative paths as one byte string joined by NUL (which no file name holds), the directories
likewise with their times as int64. One that does not load, does not add up or names a path
outside the folder is walked again, with a warning; an index of an older format is walked again
and replaced.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from pathlib import Path

import numpy as np

from byol.data.decode import IMAGE_EXTENSIONS
from byol.errors import ByolError
from byol.files import write_bytes

log = logging.getLogger(__name__)

FORMAT = "byol-folder-index/2"
RACY_NS = 2_000_000_000  # directory times this close to the walk are not trusted
# The arrays of an index and their dtypes: each 1-D but ``walked`` and ``count`` (scalars).
ARRAYS = {
    "format": np.uint8,
    "folder": np.uint8,
    "walked": np.int64,
    "count": np.int64,
    "names": np.uint8,
    "directories": np.uint8,
    "mtimes": np.int64,
}
_EXTENSIONS = frozenset(IMAGE_EXTENSIONS)


class UnusableIndex(Exception):
    """An index file that is there but cannot be trusted; its reason is logged."""


def _is_image_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in _EXTENSIONS  # a name starting with "." is hidden


def walk(folder: Path) -> tuple[list[str], dict[str, int]]:
    """(the image files under ``folder``, sorted as paths sort; each directory's mtime in ns).

    Linked folders are followed, each real folder once (a link to a parent would loop); hidden
    ones are skipped. Only regular files count (a FIFO named .png would block the reader), and
    broken links stay in, to be reported as unreadable. ``os.scandir`` tells files from folders
    without a ``stat`` per file: the walk costs a system call per directory, not per file.
    """
    found: list[str] = []
    times: dict[str, int] = {}
    seen: set[str] = set()
    pending = [str(folder)]
    while pending:
        directory = pending.pop()
        real = os.path.realpath(directory)
        if real in seen:
            continue
        seen.add(real)
        try:
            times[directory] = os.stat(directory).st_mtime_ns
            entries = list(os.scandir(directory))
        except OSError:  # unreadable or vanished: os.walk passes over these too
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                pending.append(entry.path)
            elif _is_image_name(entry.name) and (
                entry.is_file() or (entry.is_symlink() and not os.path.exists(entry.path))
            ):
                found.append(entry.path)
    # The order Path objects sort in (part by part): the separator before any other character.
    found.sort(key=lambda path: path.replace(os.sep, "\0"))
    return found, times


def index_path(index_dir: Path, folder: Path) -> Path:
    key = hashlib.sha256(os.path.realpath(folder).encode()).hexdigest()[:16]
    return index_dir / f"{folder.name or 'folder'}-{key}.npz"


def _joined(names: list[str]) -> np.ndarray:
    # A name that is not UTF-8 reaches Python as lone surrogates: surrogateescape gives its bytes.
    return np.frombuffer("\0".join(names).encode("utf-8", "surrogateescape"), np.uint8)


def _split(array: np.ndarray) -> list[str]:
    text = array.tobytes().decode("utf-8", "surrogateescape")
    return text.split("\0") if text else []


def _outside(array: np.ndarray) -> bool:
    """Whether any of the NUL-joined relative paths is absolute or climbs out with ``..``."""
    joined = b"\0" + array.tobytes() + b"\0"
    sep = os.sep.encode()
    return any(
        pattern in joined
        for pattern in (b"\0" + sep, b"\0.." + sep, sep + b".." + sep, sep + b"..\0", b"\0..\0")
    )


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the index at ``path``, checked against ``ARRAYS``; raises UnusableIndex."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if set(npz.files) != set(ARRAYS):
                raise UnusableIndex(f"it holds {sorted(npz.files)}, not {sorted(ARRAYS)}")
            arrays = {name: npz[name] for name in ARRAYS}
    # zipfile and numpy raise many types on a cut or altered file (BadZipFile, EOFError,
    # ValueError for a pickle or a short array, ...): any of them means "unusable".
    except Exception as error:
        raise UnusableIndex(str(error) or type(error).__name__) from None
    for name, dtype in ARRAYS.items():
        ndim = 0 if name in ("walked", "count") else 1
        if arrays[name].dtype != dtype or arrays[name].ndim != ndim:
            raise UnusableIndex(f"its {name} is not a {ndim}-D {np.dtype(dtype)} array")
    return arrays


def _saved(path: Path, folder: Path) -> list[str] | None:
    """The files (relative names) of the index at ``path`` when it is of ``folder`` and no
    directory of it changed; None when there is none or it is out of date. Raises UnusableIndex."""
    if not path.is_file():
        return None
    arrays = _arrays(path)
    if arrays["format"].tobytes() != FORMAT.encode():
        raise UnusableIndex(f"its format is not {FORMAT}")
    if arrays["folder"].tobytes() != os.fsencode(os.path.realpath(folder)):
        return None  # another folder's, copied here: this one is walked
    directories, mtimes = _split(arrays["directories"]), arrays["mtimes"]
    if len(directories) != len(mtimes) or not directories:
        raise UnusableIndex(f"it lists {len(directories)} directories and {len(mtimes)} times")
    if _outside(arrays["names"]) or _outside(arrays["directories"]):
        raise UnusableIndex("it names a path outside the folder")
    walked = int(arrays["walked"])
    for relative, mtime in zip(directories, mtimes.tolist(), strict=True):
        # A directory changed in the same clock tick as the walk keeps its time: one whose time
        # is that close to the walk's is walked again (as git treats racy entries).
        try:
            if os.stat(folder / relative).st_mtime_ns != mtime or mtime >= walked:
                return None
        except OSError:  # a directory gone
            return None
    names = _split(arrays["names"])
    if len(names) != int(arrays["count"]) or "" in names:
        raise UnusableIndex(f"it holds {len(names)} names where it counts {int(arrays['count'])}")
    return names


def _save(path: Path, folder: Path, names: list[str], times: dict[str, int], walked: int) -> None:
    arrays = {
        "format": np.frombuffer(FORMAT.encode(), np.uint8),
        "folder": np.frombuffer(os.fsencode(os.path.realpath(folder)), np.uint8),
        "walked": np.array(walked, np.int64),
        "count": np.array(len(names), np.int64),
        "names": _joined(names),
        "directories": _joined([os.path.relpath(d, folder) for d in times]),
        "mtimes": np.array(list(times.values()), np.int64),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        write_bytes(path, buffer.getbuffer())
        path.with_suffix(".json").unlink(missing_ok=True)  # the index of an older format
    except (OSError, ByolError):
        pass  # an index is a saving, never a need: a read-only place walks each time


def relative_image_names(folder: Path, index_dir: Path | None = None) -> list[str]:
    """The image files under ``folder`` (see ``walk``), relative to it, read from an index in
    ``index_dir`` when one is there and still true, else walked and (with ``index_dir``) saved
    there."""
    folder = Path(folder)
    path = index_path(index_dir, folder) if index_dir is not None else None
    if path is not None:
        try:
            names = _saved(path, folder)
        except UnusableIndex as error:
            log.warning(
                "the folder index %s cannot be used (%s); walking %s again", path, error, folder
            )
        else:
            if names is not None:
                return names
    walked = time.time_ns() - RACY_NS
    files, times = walk(folder)
    start = len(str(folder)) + 1
    names = [name[start:] for name in files]
    if path is not None:
        _save(path, folder, names, times, walked)
    return names


def image_names(folder: Path, index_dir: Path | None = None) -> list[str]:
    """As ``relative_image_names``, each joined to ``folder``."""
    root = str(folder) + os.sep
    return [root + name for name in relative_image_names(folder, index_dir)]


def images_under(folder: Path, index_dir: Path | None = None) -> list[Path]:
    """As ``image_names``, as paths."""
    return [Path(name) for name in image_names(folder, index_dir)]
