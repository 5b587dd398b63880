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

import json
from pathlib import Path
from typing import Any

from byol.config import Config, from_dict, resume_changes
from byol.errors import CheckpointError
from byol.files import atomic_write as atomic_write  # re-exported: run files are written here
from byol.files import read_json, set_aside
from byol.files import remove_stale_temporaries as remove_stale_temporaries
from byol.files import write_bytes as write_bytes
from byol.files import write_json as write_json
from byol.files import write_text as write_text
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
# summary.json keys ending in this are the final scores on the epochs' kNN bank, written where
# it is a subset (knn_bank_subset) of the whole one.
EPOCH_BANK = "_epoch_bank"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
REPORT = "report.html"
FEATURES = "features"
SUBSETS = "subsets"
FOLDER_INDEX = "folder-index"  # the files of the image folders read (byol/data/folder_index.py)
EXPORT = "export"
VIEWS = "views.png"  # example views T and T' of the first step
DIVERGED = "diverged.json"  # the run diverged: a resume may change its `recovery` settings
ABLATION_EVAL = "ablation_eval.json"


def save_config(run_dir: Path, config: Config) -> None:
    write_json(Path(run_dir) / CONFIG, config.to_dict())


def _parse_metrics(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """(the records of metrics.jsonl, how many of its lines are not records). A last line cut
    short by a killed process is no fault: it is dropped without counting."""
    lines = data.split(b"\n")[:-1]  # after the last newline: nothing, or a line cut short
    records, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            record = None
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            records.append(record)
        else:
            bad += 1
    return records, bad


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as a list of records; lines that are not records are left out."""
    path = Path(run_dir) / METRICS
    return _parse_metrics(path.read_bytes())[0] if path.is_file() else []


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
            records, bad = _parse_metrics(self.path.read_bytes())
            if bad:  # kept as it was, to look at; the records in it carry on
                set_aside(self.path, f"holds {bad} line(s) that are not metrics records")
            # Records written after the checkpoint we resume from will be written again.
            kept = [r for r in records if r["step"] <= resume_step]
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
    """summary.json of a finished run, None when there is none (yet); one unreadable or of
    another shape is set aside (``files.read_json``) and None returned."""
    return read_json(Path(run_dir) / SUMMARY, lambda value: isinstance(value, dict), "an object")


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
