"""Schedules as plain functions of the optimizer step k (arXiv:2006.07733, Sections 3.1 and 3.3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from byol.config import Config


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up from 0 to peak_lr over warmup_steps, then cosine decay to 0 at total_steps."""
    if step < warmup_steps:
        return peak_lr * (step / warmup_steps)  # int / int: exact for any count of steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def target_tau(step: int, total_steps: int, tau_base: float, schedule: str = "cosine") -> float:
    """tau = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2: tau_base at k=0, 1 at k=K.

    ``schedule="constant"`` keeps tau_base throughout: the paper's tau=0 ablation (target = the
    online network, stop-gradient) needs it, since the cosine schedule would lift tau towards 1.
    """
    if schedule == "constant":
        return tau_base
    progress = min(step / max(total_steps, 1), 1.0)
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def scaled_learning_rate(base_lr: float, batch_size: int) -> float:
    """The paper's linear scaling rule: lr = base_lr * batch_size / 256."""
    return base_lr * batch_size / 256


def steps_of(epochs: float, steps_per_epoch: int) -> int:
    """``epochs`` in whole steps, rounded to the nearest, computed exactly: a float product
    would overflow to inf for a huge count of epochs (Python's integers do not)."""
    return round(Fraction(epochs) * steps_per_epoch)


@dataclass(frozen=True)
class Schedule:
    """A run's step counts and its lr and tau at each optimizer step (never a micro-batch)."""

    steps_per_epoch: int
    total_steps: int
    # lr and tau span schedule_steps, which may exceed the run's (schedule_epochs): they then stop
    # short of their end values, as a longer run's would at this step.
    schedule_steps: int
    warmup_steps: int
    peak_lr: float
    tau_base: float
    tau_schedule: str

    @classmethod
    def of(cls, config: Config, train_size: int) -> Schedule:
        steps_per_epoch = train_size // config.optim.batch_size
        total_steps = steps_per_epoch * config.schedule.epochs
        return cls(
            steps_per_epoch,
            total_steps,
            max(total_steps, steps_of(config.schedule.schedule_epochs, steps_per_epoch)),
            steps_of(config.schedule.warmup_epochs, steps_per_epoch),
            scaled_learning_rate(config.optim.base_lr, config.optim.batch_size),
            config.schedule.tau_base,
            config.schedule.tau_schedule,
        )

    def lr(self, step: int) -> float:
        return learning_rate(step, self.schedule_steps, self.warmup_steps, self.peak_lr)

    def tau(self, step: int) -> float:
        """tau reaches 1 at the schedule's end (the run's, unless schedule_epochs is longer)."""
        return target_tau(step, self.schedule_steps, self.tau_base, self.tau_schedule)
