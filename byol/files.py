"""Writing files so that a crash never leaves half a file in place of a good one: a temporary
file, flushed, then renamed. Every file the package writes goes through here."""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from byol.errors import ByolError, CheckpointError

log = logging.getLogger(__name__)
_CHUNK = 1 << 22
_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), then restored
os.umask(_UMASK)


def _write_error(path: Path, error: OSError) -> CheckpointError:
    if error.errno == errno.ENOSPC:
        cause, fix = f"no space left on the device holding {path.parent}", "free some space"
    else:
        cause, fix = str(error.strerror or error), "check the folder's permissions and space"
    return CheckpointError(
        f"could not write {path.name} ({cause}); the previous file was left intact: {fix}, "
        "then resume."
    )


def atomic_write(path: Path, parts: list[Any], previous: Path | None = None) -> None:
    """Write the bytes-like ``parts`` one after another to ``path`` via a temporary file; with
    ``previous``, the file it replaces is renamed there first. A failure leaves the files that
    were there untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide run files from a team's readers
    try:
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view[:_CHUNK]) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # the renames themselves survive a power cut
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, error) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    # A file name that is not UTF-8 reaches Python as lone surrogates: written as escapes.
    atomic_write(Path(path), [text.encode("utf-8", "backslashreplace")])


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(Path(path), [data])


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2) + "\n")


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files left by a process killed while writing (one run per folder)."""
    for stale in Path(folder).glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def expand_home(path: str | Path) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; a home that cannot be found (an
    unknown user, no $HOME) is a ByolError naming the path rather than torch's RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        head = str(path).split("/")[0]
        raise ByolError(
            f"{str(path)!r} starts with {head!r}, but that home folder cannot be found (no such "
            "user, or $HOME unset); write the path out in full."
        ) from None


def set_aside(path: Path, problem: str) -> Path:
    """Rename a file of ours that cannot be used to ``<name>.unreadable`` (``.unreadable-2``...
    when taken), saying so in one line: a fresh file is then written in its place, and the old
    one is kept to look at."""
    path = Path(path)
    aside, count = path.with_name(f"{path.name}.unreadable"), 1
    while aside.exists():
        count += 1
        aside = path.with_name(f"{path.name}.unreadable-{count}")
    os.replace(path, aside)
    log.warning(
        "byol: warning: %s %s; kept it as %s, a fresh one is written.", path, problem, aside
    )
    return aside


def read_json(path: Path, valid: Callable[[Any], bool], shape: str) -> Any | None:
    """The JSON in ``path`` when it parses and ``valid`` accepts it; None when there is no such
    file, or when it is unreadable or of another shape (it is then set aside, see ``set_aside``;
    ``shape`` says what it should hold)."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ByolError(f"{path} is a folder where a file belongs; move it away.") from None
    try:
        value = json.loads(text)
    except ValueError:  # not UTF-8 (UnicodeDecodeError) or not JSON
        set_aside(path, "is not readable JSON")
        return None
    if not valid(value):
        set_aside(path, f"does not hold {shape}")
        return None
    return value
