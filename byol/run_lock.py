"""One run per folder: an advisory lock held by the process writing a run, and the way readers
(eval, report) learn that a run is being written now."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from byol.errors import ByolError

LOCK = ".lock"  # held by the one process writing this run


class RunLock:
    """An advisory lock on a run folder, held for the life of a run: a second process that would
    write the same run is refused, naming the holder. The operating system releases it when its
    holder exits, killed or not, so a lock left by a dead process is simply taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._file: Any = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ByolError(
                f"{self.path.parent} is in use by process {holder} (another byol run writing it); "
                "wait for it to finish, or choose another --run-dir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # releases the lock; the file stays, harmless
            self._file = None


def writer_of(run_dir: Path) -> str | None:
    """The process id of the byol run writing ``run_dir`` now, or None: readers (eval, report) use
    it to say that what they see is a snapshot of a run in progress."""
    import fcntl

    path = Path(run_dir) / LOCK
    try:
        handle = open(path)  # noqa: SIM115 - closed below in every case
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
