"""SIGINT and SIGTERM during training: finish the step in flight, checkpoint, stop."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopRequests:
    """Turns SIGINT/SIGTERM into a flag checked after each step, so the step in flight finishes
    and a checkpoint is written; a second signal interrupts at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
