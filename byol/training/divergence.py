"""A run that diverges stops before a NaN or inf reaches a checkpoint, so that the last good one
stays in place; the message names the step, lr and precision and the resume that lowers them."""

from __future__ import annotations

import math

from byol.errors import TrainingDiverged
from byol.training.run_context import RunContext
from byol.training.train_state import TrainState


def check_loss(loss: float, lr: float, step: int, context: RunContext) -> None:
    if not math.isfinite(loss):
        raise _diverged(f"the loss became {loss}", lr, step, context)


def check_weights(state: TrainState, context: RunContext, lr: float) -> None:
    """Before a checkpoint: the loss checked before came before this step's update, which may
    itself have overflowed. Every rank checks (same weights everywhere), so all stop together."""
    if not state.is_finite():
        what = "the weights or batch-norm statistics became inf or NaN"
        raise _diverged(what, lr, state.step, context)


def _diverged(what: str, lr: float, step: int, context: RunContext) -> TrainingDiverged:
    kept = (
        f"the last good checkpoint (step {context.saved_step}) was kept"
        if context.saved_step is not None
        else "no checkpoint had been written yet"
    )
    return TrainingDiverged(
        f"{what} at step {step} (lr {lr:.3g}, precision {context.precision}); {kept}. The "
        "likely cause is a learning rate too high or too low a precision: resume it with "
        f"`byol pretrain --resume {context.run_dir} --set base_lr=...` (lower) or "
        "--set precision=fp32."
    )
