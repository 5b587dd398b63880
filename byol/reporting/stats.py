"""A score over seeds: its mean and standard deviation, written the one way every table and
figure of ``byol ablate``, ``byol reproduce`` and ``byol curves`` writes it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stat:
    """Mean and standard deviation over seeds (std 0 and n 1 for a single run)."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[Any]) -> Stat | None:
        values = [v for v in values if isinstance(v, (int, float))]
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, len(values))

    def text(self, digits: int = 2) -> str:
        """The mean, with its standard deviation where seeds give one."""
        return f"{self.mean:.{digits}f}" + (f" ± {self.std:.{digits}f}" if self.n > 1 else "")

    __str__ = text
