"""``pretrain``: set up a run, loop over its steps, finish it. Everything lands in the run folder.

Follow one batch: ``training.epochs`` picks images and makes their two views (T and T'); the
method (``byol.methods``) returns its loss; ``training.step`` takes one optimizer step and one EMA
step of the target; this loop logs, checkpoints, scores kNN at epoch ends and stops cleanly on a
signal or a time limit. It never names a method: each declares its hooks (``methods/base.py``).

The loop holds two things: the ``TrainState`` (train_state.py: the method, the optimizer, the
step), which is exactly what a checkpoint holds, and the ``RunContext`` (run_context.py: config,
data and views, monitor, logs, lock, schedule), which ``set_up`` builds and no checkpoint holds.

Under torchrun every process runs this loop on its share of each global batch
(``optim.batch_size`` is the global batch), cut into ``optim.accumulation_steps`` micro-batches;
``byol/distributed.py`` holds the process-group plumbing and docs/distributed.md the launch
commands.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from byol import distributed, run_folder
from byol.checkpoint import has_checkpoint
from byol.config import Config
from byol.errors import RunInterrupted, TrainingDiverged
from byol.methods import MethodOutput
from byol.methods.losses import collapse_metric
from byol.runtime import resolve_device
from byol.training.divergence import check_loss, check_weights
from byol.training.finish import PretrainResult, finish, finished_result
from byol.training.run_context import AlreadyFinished, RunContext, set_up
from byol.training.signals import StopRequests
from byol.training.step import Pairs, accumulated_step
from byol.training.train_state import TrainState, build_model, save_train_state
from byol.views.picture import png_bytes, views_picture

__all__ = ["PretrainResult", "build_model", "pretrain", "save_checkpoint"]


def pretrain(
    config: Config, run_dir: Path, resume: bool = False, quiet: bool = False
) -> PretrainResult:
    """Pretrain ``config.method.name`` as ``config`` says; everything is written into ``run_dir``.

    Under torchrun (or in a process group already initialised) every process calls this and
    trains on its share of each global batch; rank 0 alone writes files and scores kNN.
    """
    started = time.perf_counter()
    with distributed.process_group(resolve_device(config.runtime.device)) as (ranks, device):
        try:
            state, context = set_up(config, Path(run_dir), resume, ranks, device)
        except AlreadyFinished as finished:
            return finished_result(Path(run_dir), finished.summary)
        try:
            loop = _train(state, context, started, quiet)
            return finish(state, context, started, *loop)
        except KeyboardInterrupt:  # a second Ctrl-C (or SIGTERM) while the first is handled
            raise _stopped_at_once(context) from None
        except TrainingDiverged as error:  # marks the folder: its resume may lower the lr
            if ranks.is_main:
                marker = {"error": str(error), "last_good_step": context.saved_step}
                run_folder.write_json(context.run_dir / run_folder.DIVERGED, marker)
            raise
        finally:
            context.release()


def _train(
    state: TrainState, context: RunContext, started: float, quiet: bool
) -> tuple[float | None, float, bool]:
    """The loop: returns (last collapse metric, images per second, stopped early)."""
    c, schedule = context.config, context.schedule
    progress = context.progress_bar(state.step, quiet)
    deadline = started + 60 * c.runtime.max_minutes if c.runtime.max_minutes else math.inf
    since = time.perf_counter(), state.step  # for the speed: training alone, this process's
    collapse, stopped_early = None, False
    state.method.train()
    with StopRequests() as stop_requests:
        while state.step < schedule.total_steps and not stopped_early:
            for micro_batches in context.epoch_batches(state.step):
                if state.step == 0:
                    micro_batches = _show_views(context, list(micro_batches))
                output, lr, tau = _step(state, context, micro_batches)
                step = state.step
                progress.update(c.optim.batch_size)

                epoch_done = step % schedule.steps_per_epoch == 0
                interrupted, out_of_time = distributed.any_rank(
                    stop_requests.received is not None, time.perf_counter() > deadline
                )
                every = c.runtime.checkpoint_every_steps
                checkpoint_due = epoch_done or interrupted or out_of_time
                checkpoint_due = checkpoint_due or bool(every and step % every == 0)
                log_due = step % c.runtime.log_every_steps == 0 or step == schedule.total_steps
                if log_due or checkpoint_due:
                    collapse = _log_step(state, context, output, (lr, tau), since, progress)
                if epoch_done:
                    _end_epoch(state, context, progress)
                if checkpoint_due:
                    save_checkpoint(state, context, lr)
                if interrupted:
                    progress.close()
                    distributed.barrier()  # no rank exits before rank 0's checkpoint is written
                    _raise_interrupted(state, context, stop_requests.received)
                if out_of_time:
                    stopped_early = step < schedule.total_steps
                    break
    progress.close()
    images = (state.step - since[1]) * c.optim.batch_size
    return collapse, images / max(time.perf_counter() - since[0], 1e-9), stopped_early


def _step(
    state: TrainState, context: RunContext, micro_batches: Iterable[Pairs]
) -> tuple[MethodOutput, float, float]:
    """Optimizer step ``state.step`` and the EMA after it: (output, lr, tau). The schedules
    count optimizer steps, never micro-batches."""
    step, schedule = state.step, context.schedule
    lr, tau = schedule.lr(step), schedule.tau(step)
    state.method.before_step(step)
    output = accumulated_step(
        context.trained,
        state.optimizer,
        micro_batches,
        lr,
        tau,
        context.precision,
        context.config.optim.accumulation_steps,
    )
    state.step = step + 1
    return output, lr, tau


def save_checkpoint(state: TrainState, context: RunContext, lr: float) -> None:
    """``state`` into the run folder's checkpoint (rank 0 writes it), once every rank has found
    its weights finite: a diverged run keeps its last good checkpoint."""
    check_weights(state, context, lr)
    if context.ranks.is_main:
        path = context.run_dir / run_folder.CHECKPOINT
        save_train_state(state, path, context.config, context.ranks.world_size)
    context.saved_step = state.step


def _show_views(context: RunContext, micro_batches: list) -> Iterator:
    """The first step's example views T and T': views.png in the run folder and a picture for
    the loggers (rank 0); the micro-batches go on to the step unchanged."""
    if context.ranks.is_main:
        picture = views_picture(*micro_batches[0], context.info.mean, context.info.std)
        run_folder.write_bytes(context.run_dir / run_folder.VIEWS, png_bytes(picture))
        context.log.image("views", picture, 0)
    return iter(micro_batches)


def _log_step(
    state: TrainState,
    context: RunContext,
    output: MethodOutput,
    lr_tau: tuple[float, float],
    since: tuple[float, int],
    progress,  # noqa: ANN001
) -> float:
    """The only host-device sync of a step: global-batch loss and collapse metric, logged with
    the speed since ``since`` (time, step): images per second, share of it spent waiting for
    data."""
    (lr, tau), step, elapsed = lr_tau, state.step, time.perf_counter() - since[0]
    rate = (step - since[1]) * context.config.optim.batch_size / elapsed
    data_share = context.data_wait_s / elapsed
    loss = distributed.mean_over_ranks(output.loss).item()
    check_loss(loss, lr, step, context)
    collapse = collapse_metric(distributed.gather(output.online_projection)).item()
    context.epoch_collapse.append(collapse)
    record = dict(step=step, epoch=step / context.schedule.steps_per_epoch, loss=loss, lr=lr)
    context.log.write(
        dict(record, tau=tau, collapse=collapse, images_per_second=rate, data_share=data_share)
    )
    progress.set_postfix(
        loss=f"{loss:.3f}", lr=f"{lr:.3g}", tau=f"{tau:.4f}", data=f"{data_share:.0%}"
    )
    return collapse


def _end_epoch(state: TrainState, context: RunContext, progress) -> None:  # noqa: ANN001
    """The epoch's mean collapse metric and, every knn_every_epochs, the kNN monitor's score."""
    step, monitor = state.step, context.monitor
    record = dict(step=step, epoch=step // context.schedule.steps_per_epoch)
    record["collapse"] = sum(context.epoch_collapse) / len(context.epoch_collapse)
    context.epoch_collapse = []
    every = context.config.monitor.knn_every_epochs
    if monitor and every and record["epoch"] % every == 0 and step < context.schedule.total_steps:
        record["knn_top1"] = monitor.score(state.method.online_encoder)
        progress.write(f"epoch {record['epoch']}: kNN top-1 {record['knn_top1']:.2f}%")
    context.log.write(record)
    distributed.barrier()  # the other ranks wait for rank 0's kNN


def _stopped_at_once(context: RunContext) -> Exception:
    if not has_checkpoint(context.run_dir):
        return RunInterrupted("interrupted at once, before the first checkpoint: start again.")
    return RunInterrupted(
        f"interrupted at once (a second signal): the steps after the last checkpoint (step "
        f"{context.saved_step}) are lost; continue from it with `byol pretrain --resume "
        f"{context.run_dir}`."
    )


def _raise_interrupted(state: TrainState, context: RunContext, received: int | None) -> None:
    name = signal.Signals(received).name if received else "a stop signal"
    raise RunInterrupted(
        f"{name} received: stopped after step {state.step} of {context.schedule.total_steps} "
        f"and saved a checkpoint; continue with `byol pretrain --resume {context.run_dir}`."
    )
