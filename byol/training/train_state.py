"""What a checkpoint holds and a resume restores: ``TrainState``, written by ``save_train_state``
and read back by ``read_checkpoint`` and ``load_train_state``. Everything else a run needs (data,
monitor, logs, lock) is its ``RunContext`` (run_context.py); the file itself (checksum, atomic
write, the previous checkpoint kept) is ``byol/checkpoint.py``'s.

No random generator's state is saved, since none is needed: every random stream of a run is a
function of its seed and the step (each epoch's image order and view seeds: ``epochs.epoch_order``;
MoCo's batch-norm shuffle: its ``before_step``), so the step alone brings a resumed run to the
draws an uninterrupted run makes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from byol import run_folder
from byol.checkpoint import load_latest_checkpoint, load_model_state, save_checkpoint
from byol.config import Config
from byol.config.memory import build_model as build_model  # re-exported: what a run trains
from byol.errors import CheckpointError, ConfigError
from byol.methods import Method
from byol.settings.fields import FLOAT_LIMIT
from byol.training.optim import build_optimizer, optimizer_state_problem

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """The training state: a checkpoint's "model", "optimizer" and "step", nothing more."""

    method: Method  # unwrapped: hooks, EMA, the encoder; with its target and buffers (MoCo's queue)
    optimizer: torch.optim.Optimizer
    step: int = 0  # optimizer steps taken, never micro-batches

    def is_finite(self) -> bool:
        """Whether every weight and buffer is finite: buffers too, as an inf batch-norm running
        variance makes a resumed run diverge again."""
        tensors = [*self.method.parameters(), *self.method.buffers()]
        return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def new_train_state(
    method: Method, config: Config, peak_lr: float, kernels: str = "foreach"
) -> TrainState:
    """Step 0 of ``method`` (already on its device: the optimizer's state follows its weights),
    its optimizer running ``kernels`` (``speed.SpeedChoices.optimizer_kernels``)."""
    largest = peak_lr * max([1.0, *method.lr_scales().values()])
    if largest > FLOAT_LIMIT:  # the optimizer's step would overflow converting it to float32
        raise ConfigError(
            f"the peak learning rate would be {largest:.3g} (base_lr * batch_size / 256, times "
            f"the largest lr scale), beyond float32's {FLOAT_LIMIT:.3g}; lower optim.base_lr."
        )
    optimizer = build_optimizer(
        method,  # parameter groups skip the target: it has no gradients
        config.optim.optimizer,
        peak_lr,
        config.optim.weight_decay,
        config.optim.momentum,
        config.optim.lars_trust_coefficient,
        method.lr_scales(),
        kernels,
    )
    return TrainState(method, optimizer)


def save_train_state(state: TrainState, path: Path, config: Config, world_size: int) -> None:
    """``state`` as a checkpoint at ``path``, with the config and method that a resume checks
    (run_folder.check_resumable)."""
    checkpoint = {
        "model": state.method.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "step": state.step,
        "config": config.to_dict(),
        "method": config.method.name,
        "world_size": world_size,  # for the record: another count resumes
    }
    try:
        save_checkpoint(path, checkpoint)
    except CheckpointError as error:
        resume = f" with `byol pretrain --resume {path.parent}`."
        raise CheckpointError(str(error).rstrip(".") + resume) from None


def read_checkpoint(run_dir: Path, config: Config) -> tuple[dict[str, Any], Path]:
    """The newest checkpoint of ``run_dir`` that passes its checksum (a corrupt newest one is
    passed over) and may be resumed with ``config``; and its path."""
    checkpoint, source, passed_over = load_latest_checkpoint(run_dir)
    for problem in passed_over:
        logger.warning("byol: %s Resuming from %s instead.", problem, source)
    run_folder.check_resumable(checkpoint, config, source)
    return checkpoint, source


def load_train_state(
    state: TrainState, checkpoint: dict[str, Any], source: Path, total_steps: int
) -> None:
    """``state`` (freshly built for this run) set to the checkpoint's, each part checked first:
    a mismatch is refused in one line naming ``source``."""
    load_model_state(state.method, checkpoint["model"], source)
    problem = optimizer_state_problem(checkpoint["optimizer"], state.optimizer)
    if problem:
        raise CheckpointError(f"{source} holds {problem}; start a new run.")
    try:
        state.optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{source} holds another optimizer's state ({error}).") from None
    step = checkpoint["step"]
    if step > total_steps:
        raise CheckpointError(
            f"{source} is at step {step}, beyond this run's {total_steps} steps; resume from "
            "checkpoint-previous.pt or start a new run."
        )
    state.step = step
