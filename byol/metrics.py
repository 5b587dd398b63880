"""What a run records: metrics.jsonl (one JSON object per line) and TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and mirrors their numbers to TensorBoard."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, enabled: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled  # False on ranks other than 0: they write nothing
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # Records written after the checkpoint we resume from will be written again.
            kept = [
                line for line in self.path.read_text().splitlines() if _step(line) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = self.path.open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        except ImportError:  # tensorboard is a dependency; tolerate its absence in minimal envs
            self._tensorboard = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def _step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
