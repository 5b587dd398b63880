"""The image files under a folder, found by one walk and kept in an index file (beside the run
that reads the folder), so that a resumed run or an evaluation does not walk a million files
again.

The index holds every file's path relative to the folder and the modification time of every
directory walked. Adding, removing or renaming a file changes its directory's time, so the index
is walked again when any directory's time differs or one is gone, or when a directory changed
within two seconds of the walk (a change in the same clock tick would keep its time); a file
rewritten in place keeps its name, and is read (or found unreadable) as it is then.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from byol.data.decode import IMAGE_EXTENSIONS
from byol.errors import ByolError
from byol.files import write_text

FORMAT = "byol-folder-index/1"
RACY_NS = 2_000_000_000  # directory times this close to the walk are not trusted


_EXTENSIONS = frozenset(IMAGE_EXTENSIONS)


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
    return index_dir / f"{folder.name or 'folder'}-{key}.json"


def _saved(path: Path, folder: Path) -> list[str] | None:
    """The index at ``path`` when it is of ``folder`` and no directory of it changed."""
    try:
        saved = json.loads(path.read_text())
        if saved.get("format") != FORMAT or saved.get("folder") != os.path.realpath(folder):
            return None
        for relative, mtime in saved["directories"].items():
            # A directory changed in the same clock tick as the walk keeps its time: one whose
            # time is that close to the walk's is walked again (as git treats racy entries).
            if os.stat(folder / relative).st_mtime_ns != mtime or mtime >= saved["walked"]:
                return None
        files = saved["files"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no index, another format, a directory gone: walk again
    root = str(folder)
    return [os.path.join(root, name) for name in files.split("\0")] if files else []


def image_names(folder: Path, index_dir: Path | None = None) -> list[str]:
    """The image files under ``folder`` (see ``walk``) as strings, read from an index in
    ``index_dir`` when one is there and still true, else walked and (with ``index_dir``) saved
    there."""
    folder = Path(folder)
    path = index_path(index_dir, folder) if index_dir is not None else None
    files = _saved(path, folder) if path is not None else None
    if files is None:
        walked = time.time_ns() - RACY_NS
        files, times = walk(folder)
        if path is not None:
            start = len(str(folder)) + 1
            index = {
                "format": FORMAT,
                "folder": os.path.realpath(folder),
                "walked": walked,
                "directories": {os.path.relpath(d, folder): t for d, t in times.items()},
                "files": "\0".join(name[start:] for name in files),  # no name holds a NUL
            }
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_text(path, json.dumps(index))
            except (OSError, ByolError):
                pass  # an index is a saving, never a need: a read-only place walks each time
    return files


def images_under(folder: Path, index_dir: Path | None = None) -> list[Path]:
    """As ``image_names``, as paths."""
    return [Path(name) for name in image_names(folder, index_dir)]
