"""The run folder: every file name in it, the one way to write a file there (a temporary file,
flushed, then renamed: a crash never leaves half a file in place of a good one), the config, the
metrics log, the summary, and which config changes a resumed run accepts.

    RUN_DIR/config.json            the resolved Config
    RUN_DIR/metrics.jsonl          one JSON record per logged step and per epoch (+ tensorboard/)
    RUN_DIR/checkpoint.pt          resumable state, with checkpoint-previous.pt as the fallback
    RUN_DIR/encoder.safetensors    the online encoder, torchvision key names
    RUN_DIR/summary.json           the finished run's numbers
    RUN_DIR/results.json|.md       `byol eval` tables; features/ and subsets/ are its caches
    RUN_DIR/report.html            `byol report`; export/ is `byol export`
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from byol.config import Config, from_dict, resume_changes
from byol.errors import CheckpointError
from byol.loggers import TENSORBOARD as TENSORBOARD  # its folder, named where the logger is
from byol.loggers import open_loggers
from byol.run_lock import LOCK as LOCK  # re-exported: every run file's name is found here
from byol.run_lock import RunLock as RunLock
from byol.run_lock import writer_of as writer_of

CONFIG = "config.json"
METRICS = "metrics.jsonl"

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint-previous.pt"
ENCODER = "encoder.safetensors"
SUMMARY = "summary.json"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
REPORT = "report.html"
FEATURES = "features"
SUBSETS = "subsets"
EXPORT = "export"
VIEWS = "views.png"  # example views T and T' of the first step
DIVERGED = "diverged.json"  # the run diverged: a resume may change its `recovery` settings
ABLATION_EVAL = "ablation_eval.json"

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


def save_config(run_dir: Path, config: Config) -> None:
    write_json(Path(run_dir) / CONFIG, config.to_dict())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as a list of records; a line cut short by a killed process is skipped."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and mirrors their numbers to the loggers that
    ``config.runtime.loggers`` names (TensorBoard by default; ``byol/loggers.py``)."""

    def __init__(
        self,
        run_dir: Path,
        resume_step: int | None = None,
        enabled: bool = True,
        config: Config | None = None,
    ) -> None:
        self.path = Path(run_dir) / METRICS
        self.enabled = enabled  # False on ranks other than 0: they write nothing
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # Records written after the checkpoint we resume from will be written again.
            kept = [r for r in read_metrics(run_dir) if r["step"] <= resume_step]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a")
        names = config.runtime.loggers if config is not None else "tensorboard"
        self.loggers = open_loggers(run_dir, names, config.to_dict() if config else None)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        numbers = {
            k: v
            for k, v in record.items()
            if k not in ("step", "epoch")
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
        }
        for logger in self.loggers:
            logger.scalars(numbers, record["step"])

    def image(self, name: str, picture: Any, step: int) -> None:
        """An H x W x 3 uint8 picture, to every logger."""
        if self.enabled:
            for logger in self.loggers:
                logger.image(name, picture, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        for logger in self.loggers:
            logger.close()


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """summary.json of a finished run, None when there is none (yet) or it is unreadable."""
    path = Path(run_dir) / SUMMARY
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def check_resumable(checkpoint: dict[str, Any], config: Config, source: Path) -> None:
    """Refuse a checkpoint of another method, or of a run configured differently."""
    method = checkpoint.get("method", "byol")
    if method != config.method.name:
        raise CheckpointError(
            f"{source} was written by a {method} run, not {config.method.name}; resume it with the "
            "method that wrote it, or start a new run."
        )
    missing = [k for k in ("model", "optimizer", "step", "config") if k not in checkpoint]
    if missing or not isinstance(checkpoint.get("config"), dict):
        raise CheckpointError(f"{source} lacks {', '.join(missing) or 'a config'}; start anew.")
    step = checkpoint["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(
            f"{source} holds step={step!r}, not a count of steps (altered after it was written); "
            "resume from checkpoint-previous.pt or start a new run."
        )
    saved = from_dict(checkpoint["config"])
    # Which settings may change is each setting's own `resumable`/`recovery` flag (config/tree.py).
    changed = resume_changes(saved, config, diverged=(source.parent / DIVERGED).exists())
    if changed:
        raise CheckpointError(
            f"cannot resume {source.parent}: the config differs from the one it was started with "
            f"({'; '.join(changed)}); resume without --preset/--set, or start a new run."
        )
