"""``pretrain``: set up a run, loop over its steps, finish it. Everything lands in the run folder.

Follow one batch: ``training.epochs`` picks images and makes their two views (T and T'); the
method (``byol.methods``) returns its loss; ``training.step`` takes one optimizer step and one EMA
step of the target; this loop logs, checkpoints, scores kNN at epoch ends and stops cleanly on a
signal or a time limit. It never names a method: each declares its hooks (``methods/base.py``).

Under torchrun every process runs this loop on its share of each global batch
(``optim.batch_size`` is the global batch), cut into ``optim.accumulation_steps`` micro-batches;
``byol/distributed.py`` holds the process-group plumbing and docs/distributed.md the launch
commands.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from byol import distributed, run_folder
from byol.config import Config
from byol.errors import TrainingDiverged
from byol.methods.losses import collapse_metric
from byol.runtime import peak_memory_mb, resolve_device
from byol.training.run_state import AlreadyFinished, RunState, build_model, set_up
from byol.training.schedules import learning_rate, target_tau
from byol.training.signals import StopRequests
from byol.training.step import accumulated_step
from byol.views.picture import png_bytes, views_picture

__all__ = ["PretrainResult", "build_model", "pretrain"]


@dataclass
class PretrainResult:
    run_dir: Path
    steps: int
    wall_time_s: float
    knn_top1: float | None
    knn_top1_random_init: float | None
    knn_top1_pixels: float | None
    collapse: float | None
    peak_memory_mb: float
    images_per_second: float
    stopped_early: bool
    already_finished: bool = False  # resumed after it had finished: nothing was done


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
            run = set_up(config, Path(run_dir), resume, ranks, device)
        except AlreadyFinished as finished:
            return _finished_result(Path(run_dir), finished.summary)
        try:
            loop = _train(run, started, quiet)
            return _finish(run, started, *loop)
        except KeyboardInterrupt:  # a second Ctrl-C (or SIGTERM) while the first is handled
            raise _stopped_at_once(run) from None
        except TrainingDiverged as error:  # marks the folder: its resume may lower the lr
            if ranks.is_main:
                marker = {"error": str(error), "last_good_step": run.saved_step}
                run_folder.write_json(run.run_dir / run_folder.DIVERGED, marker)
            raise
        finally:
            run.release()


def _finished_result(run_dir: Path, summary: dict) -> PretrainResult:
    """A run resumed after it had finished: its summary, unchanged; nothing was trained."""
    fields = {f.name for f in dataclasses.fields(PretrainResult)} - {"run_dir", "already_finished"}
    values = {k: summary.get(k) for k in fields}
    return PretrainResult(run_dir=run_dir, **values, already_finished=True)


def _train(run: RunState, started: float, quiet: bool) -> tuple[float | None, float, bool]:
    """The loop: returns (last collapse metric, images per second, stopped early)."""
    c, method = run.config, run.method
    progress = run.progress_bar(quiet)
    deadline = started + 60 * c.runtime.max_minutes if c.runtime.max_minutes else math.inf
    train_started, first_step = time.perf_counter(), run.step
    collapse, stopped_early = None, False
    method.train()
    with StopRequests() as stop_requests:
        while run.step < run.total_steps and not stopped_early:
            for micro_batches in run.epoch_batches():
                step = run.step
                if step == 0:
                    micro_batches = _show_views(run, list(micro_batches))
                # Schedules count optimizer steps, never micro-batches: tau reaches 1 at the
                # schedule's end (the run's, unless schedule_epochs is longer).
                lr = learning_rate(step, run.schedule_steps, run.warmup_steps, run.peak_lr)
                tau = target_tau(
                    step, run.schedule_steps, c.schedule.tau_base, c.schedule.tau_schedule
                )
                method.before_step(step)
                output = accumulated_step(
                    run.trained, run.optimizer, micro_batches, lr, tau, run.precision,
                    c.optim.accumulation_steps,
                )  # fmt: skip
                run.step = step = step + 1
                progress.update(c.optim.batch_size)

                epoch_done = step % run.steps_per_epoch == 0
                interrupted, out_of_time = distributed.any_rank(
                    stop_requests.received is not None, time.perf_counter() > deadline
                )
                stop_now = interrupted or out_of_time
                every = c.runtime.checkpoint_every_steps
                checkpoint_due = epoch_done or stop_now or (every and step % every == 0)
                if (
                    step % c.runtime.log_every_steps == 0
                    or step == run.total_steps
                    or checkpoint_due
                ):
                    elapsed = time.perf_counter() - train_started
                    speed = (
                        (step - first_step) * c.optim.batch_size / elapsed,
                        run.data_wait_s / elapsed,
                    )
                    collapse = _log_step(run, output, lr, tau, speed, progress)
                if epoch_done:
                    _end_epoch(run, progress)
                if checkpoint_due:
                    run.save_checkpoint(lr)
                if interrupted:
                    progress.close()
                    distributed.barrier()  # no rank exits before rank 0's checkpoint is written
                    _raise_interrupted(run, stop_requests.received)
                if out_of_time:
                    stopped_early = step < run.total_steps
                    break
    progress.close()
    train_time = time.perf_counter() - train_started
    return (
        collapse,
        (run.step - first_step) * c.optim.batch_size / max(train_time, 1e-9),
        stopped_early,
    )


def _show_views(run: RunState, micro_batches: list) -> Iterator:
    """The first step's example views T and T': views.png in the run folder and a picture for
    the loggers (rank 0); the micro-batches go on to the step unchanged."""
    if run.ranks.is_main:
        picture = views_picture(*micro_batches[0], run.info.mean, run.info.std)
        run_folder.write_bytes(run.run_dir / run_folder.VIEWS, png_bytes(picture))
        run.log.image("views", picture, 0)
    return iter(micro_batches)


def _log_step(run: RunState, output, lr: float, tau: float, speed: tuple, progress) -> float:  # noqa: ANN001
    """The only host-device sync of a step: global-batch loss and collapse metric, logged with
    the speed: (images per second, share of the time spent waiting for data)."""
    rate, data_share = speed
    loss = distributed.mean_over_ranks(output.loss).item()
    run.check_finite(loss, lr)
    collapse = collapse_metric(distributed.gather(output.online_projection)).item()
    run.epoch_collapse.append(collapse)
    record = dict(step=run.step, epoch=run.step / run.steps_per_epoch, loss=loss, lr=lr)
    run.log.write(
        dict(record, tau=tau, collapse=collapse, images_per_second=rate, data_share=data_share)
    )
    progress.set_postfix(
        loss=f"{loss:.3f}", lr=f"{lr:.3g}", tau=f"{tau:.4f}", data=f"{data_share:.0%}"
    )
    return collapse


def _end_epoch(run: RunState, progress) -> None:  # noqa: ANN001
    """The epoch's mean collapse metric and, every knn_every_epochs, the kNN monitor's score."""
    c = run.config
    record = dict(step=run.step, epoch=run.step // run.steps_per_epoch)
    record["collapse"] = sum(run.epoch_collapse) / len(run.epoch_collapse)
    run.epoch_collapse = []
    every = c.monitor.knn_every_epochs
    if run.monitor and every and record["epoch"] % every == 0 and run.step < run.total_steps:
        record["knn_top1"] = run.monitor.score(run.method.online_encoder)
        progress.write(f"epoch {record['epoch']}: kNN top-1 {record['knn_top1']:.2f}%")
    run.log.write(record)
    distributed.barrier()  # the other ranks wait for rank 0's kNN


def _stopped_at_once(run: RunState) -> Exception:
    from byol.checkpoint import has_checkpoint
    from byol.errors import RunInterrupted

    if not has_checkpoint(run.run_dir):
        return RunInterrupted("interrupted at once, before the first checkpoint: start again.")
    return RunInterrupted(
        f"interrupted at once (a second signal): the steps after the last checkpoint (step "
        f"{run.saved_step}) are lost; continue from it with `byol pretrain --resume "
        f"{run.run_dir}`."
    )


def _raise_interrupted(run: RunState, received: int | None) -> None:
    from byol.errors import RunInterrupted

    name = signal.Signals(received).name if received else "a stop signal"
    raise RunInterrupted(
        f"{name} received: stopped after step {run.step} of {run.total_steps} and saved a "
        f"checkpoint; continue with `byol pretrain --resume {run.run_dir}`."
    )


def _finish(
    run: RunState, started: float, collapse: float | None, images_per_second: float, early: bool
) -> PretrainResult:
    """The encoder file, the final kNN scores and the summary."""
    c, ranks = run.config, run.ranks
    if ranks.is_main:
        run.save_encoder()
    # The checkpoint and the encoder are on disk when any rank returns; rank 0 alone then runs
    # the final kNN and writes the summary, while the others are done.
    distributed.barrier()
    scores = _final_scores(run) if run.monitor is not None and c.monitor.knn_final else {}
    run.log.write(dict(step=run.step, epoch=run.step / run.steps_per_epoch, final=True, **scores))
    run.log.close()
    result = PretrainResult(
        run_dir=run.run_dir,
        steps=run.step,
        wall_time_s=time.perf_counter() - started,
        knn_top1=scores.get("knn_top1"),
        knn_top1_random_init=scores.get("knn_top1_random_init"),
        knn_top1_pixels=scores.get("knn_top1_pixels"),
        collapse=collapse,
        peak_memory_mb=peak_memory_mb(),
        images_per_second=images_per_second,
        stopped_early=early,
    )
    if ranks.is_main:
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
        del summary["already_finished"]
        summary["world_size"] = ranks.world_size
        summary["precision"] = run.precision  # what training ran in, with auto resolved
        summary["data_wait_s"] = run.data_wait_s  # of the training time: views and images
        summary["unreadable_images"] = run.info.unreadable
        run_folder.write_json(run.run_dir / run_folder.SUMMARY, summary)
    return result


def _final_scores(run: RunState) -> dict[str, float]:
    c = run.config
    scores = {"knn_top1": run.monitor.score(run.method.online_encoder, full=True)}
    if c.monitor.knn_references:
        torch.manual_seed(c.seed)  # the same initial weights the run started from
        random_init = build_model(c).online_encoder.to(run.device)
        if c.runtime.channels_last:
            random_init = random_init.to(memory_format=torch.channels_last)
        scores["knn_top1_random_init"] = run.monitor.score(random_init, full=True)
        scores["knn_top1_pixels"] = run.monitor.score_pixels()
    return scores
