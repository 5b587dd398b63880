"""A run's context: everything around its ``TrainState`` that no checkpoint holds (config, run
folder, ranks, device, data and views, monitor, metrics log, lock, schedule, timings). ``set_up``
builds both, restoring the state from the newest checkpoint on --resume."""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from tqdm.std import TqdmMonitorWarning

from byol import distributed, run_folder, speed
from byol.config import Config
from byol.config.memory import check_eval_memory, check_training_memory
from byol.data import DatasetInfo, indexable, load_datasets, subset
from byol.errors import ConfigError
from byol.methods import Method
from byol.run_folder import MetricsLog
from byol.runtime import apply_threads, compile_blocker, resolve_precision
from byol.sync_batchnorm import convert_sync_batchnorm
from byol.training.epochs import (
    BatchedEpochs,
    Pairs,
    PerImageEpochs,
    ViewPairs,
    view_path,
    views_threads,
)
from byol.training.monitor import KnnMonitor
from byol.training.schedules import Schedule
from byol.training.speed_choices import speed_choices, view_path_of
from byol.training.stream_epochs import StreamEpochs
from byol.training.train_state import (
    TrainState,
    build_model,
    load_train_state,
    new_train_state,
    read_checkpoint,
)
from byol.views.batched import batch_paper_views
from byol.views.cropped import cropped_paper_views
from byol.views.per_image import paper_views

logger = logging.getLogger(__name__)


class AlreadyFinished(Exception):  # noqa: N818 - a state, not an error
    """--resume of a run that had finished: nothing to do."""

    def __init__(self, summary: dict[str, Any]) -> None:
        super().__init__("the run had already finished")
        self.summary = summary


@dataclass
class RunContext:
    config: Config
    run_dir: Path
    ranks: distributed.Ranks
    device: torch.device
    precision: str  # resolved: never "auto"
    speed: speed.SpeedChoices  # the speed switches, with auto resolved
    info: DatasetInfo
    views: BatchedEpochs | PerImageEpochs | StreamEpochs
    monitor: KnnMonitor | None  # rank 0 alone scores
    trained: (
        torch.nn.Module
    )  # what the step calls: the state's method, DDP-wrapped on several ranks
    schedule: Schedule
    log: MetricsLog
    lock: run_folder.RunLock | None  # rank 0's hold on the run folder
    saved_step: int | None = None  # of the newest checkpoint written, or resumed from
    epoch_collapse: list[float] = field(default_factory=list)  # this epoch's, as logged
    data_wait_s: float = 0.0  # time the loop waited for views and images

    def release(self) -> None:
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None

    def epoch_batches(self, step: int) -> Iterator[Iterator[Pairs]]:
        """The steps of ``step``'s epoch from that step on, each an iterator of micro-batches."""
        steps = self.views.epoch(*divmod(step, self.schedule.steps_per_epoch))
        if self.speed.channels_last:
            steps = (map(_channels_last, micro_batches) for micro_batches in steps)
        return (self._timed(micro_batches) for micro_batches in self._timed(steps))

    def _timed(self, items: Iterator) -> Iterator:
        """``items``, adding the time spent waiting for each (views made, images loaded) to
        ``data_wait_s``: the share of a step that data costs, shown in the progress bar."""
        items = iter(items)
        while True:
            start = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.data_wait_s += time.perf_counter() - start
            yield item

    def progress_bar(self, step: int, quiet: bool) -> tqdm:
        with warnings.catch_warnings():  # short of memory for its monitor thread, tqdm says so
            warnings.simplefilter("ignore", TqdmMonitorWarning)  # and works without it
            return tqdm(
                total=self.schedule.total_steps * self.config.optim.batch_size,
                initial=step * self.config.optim.batch_size,
                unit="img",
                unit_scale=True,
                desc=f"pretrain ({self.precision} {self.speed.short()})",
                disable=quiet or not self.ranks.is_main,
                dynamic_ncols=True,
            )


def _channels_last(pair: Pairs) -> Pairs:
    return tuple(v.contiguous(memory_format=torch.channels_last) for v in pair)


def set_up(
    config: Config, run_dir: Path, resume: bool, ranks: distributed.Ranks, device: torch.device
) -> tuple[TrainState, RunContext]:
    """Everything a run needs before its first step; on resume, restored from the checkpoint."""
    checkpoint, source = read_checkpoint(run_dir, config) if resume else (None, None)
    if checkpoint is not None:
        summary = run_folder.read_summary(run_dir)
        if summary and summary.get("stopped_early") is False:
            if summary.get("steps") == checkpoint["step"]:  # its newest checkpoint is its last
                raise AlreadyFinished(summary)
    config.validate()
    micro_batch = distributed.check_batch(
        config.optim.batch_size, ranks.world_size, config.optim.accumulation_steps
    )
    precision = resolve_precision(
        device, config.runtime.precision, config.data.image_size, config.model.cifar_stem
    )
    # Before anything is allocated: a run that cannot fit is refused naming what to lower.
    check_training_memory(config, device, micro_batch, precision, ranks.world_size)
    check_eval_memory(config, device, config.monitor.eval_batch_size)  # the kNN monitor
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    apply_threads(config.runtime.threads, config.runtime.num_workers)
    # A resume or an evaluation reads the folder's files from there; rank 0 alone writes files.
    index_dir = run_dir / run_folder.FOLDER_INDEX if ranks.is_main else None
    train_size, monitor, views, info = _data(config, ranks, device, precision, index_dir)
    schedule = Schedule.of(config, train_size)
    # From the whole run's length, not the steps left: a resumed run lays out and compiles as
    # the uninterrupted one did, so it computes the same to the last rounding.
    choices = speed_choices(config, ranks, device, precision, schedule.total_steps)
    choices = dataclasses.replace(
        choices, view_threads=views_threads(config, device, view_path_of(views))
    )
    if monitor is not None:
        monitor.channels_last = choices.channels_last
    method = build_model(config)  # after the seed, before anything else draws from it
    method.check_world_size(ranks.world_size)
    method, trained = _place(method, config, ranks, device, choices)
    lock = _claim(run_dir, config) if ranks.is_main else None  # the other ranks write no files
    try:
        state = new_train_state(method, config, schedule.peak_lr, choices.optimizer_kernels)
        if checkpoint is not None:
            load_train_state(state, checkpoint, source, schedule.total_steps)
        # Drops records a killed run wrote after its checkpoint; rank 0 alone writes.
        log = MetricsLog(run_dir, resume_step=state.step, enabled=ranks.is_main, config=config)
    except BaseException:
        if lock is not None:  # a refused checkpoint leaves the folder free for the next try
            lock.__exit__(None, None, None)
        raise
    context = RunContext(
        config,
        run_dir,
        ranks,
        device,
        precision,
        choices,
        info,
        views,
        monitor,
        trained,
        schedule,
        log,
        lock,
        saved_step=state.step if checkpoint is not None else None,
    )
    return state, context


def _claim(run_dir: Path, config: Config) -> run_folder.RunLock:
    """Rank 0's lock on the run folder, taken before it touches another's files."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_folder.RunLock(run_dir).__enter__()
    run_folder.remove_stale_temporaries(run_dir)  # left by a process killed while writing
    (run_dir / run_folder.DIVERGED).unlink(missing_ok=True)  # resumed: written again if so
    run_folder.save_config(run_dir, config)
    return lock


def _data(
    config: Config,
    ranks: distributed.Ranks,
    device: torch.device,
    precision: str,
    index_dir: Path | None,
) -> tuple[int, KnnMonitor | None, BatchedEpochs | PerImageEpochs | StreamEpochs, DatasetInfo]:
    with distributed.main_first():  # rank 0 alone downloads or extracts, the others then read
        train_set, test_set, info = load_datasets(
            config.data.dataset,
            config.data.data_dir or None,
            config.data.download,
            True,
            config.data.strict_images,
            config.data.hf_options(),
            index_dir,
        )
    monitor = None
    # The kNN bank is the whole labelled train split; rank 0 alone scores.
    if test_set is not None and info.classes and ranks.is_main:
        monitor = KnnMonitor(config, train_set, test_set, info, device, precision)
    if getattr(train_set, "streaming", False):  # read by pieces (tar shards): stream_epochs.py
        views = StreamEpochs(train_set, config, info, device, ranks)
        return views.images_per_epoch, monitor, views, info
    indexable(train_set, "pretraining (a seeded image order per epoch, resumable mid-epoch)")
    if config.data.train_subset:
        train_set = subset(train_set, config.data.train_subset, config.seed)
    if len(train_set) < config.optim.batch_size:
        raise ConfigError(
            f"the training set has {len(train_set)} images, fewer than batch_size="
            f"{config.optim.batch_size}; lower it with --set batch_size=N."
        )
    path = view_path(config, train_set)
    if path == "batched":
        images = train_set.images_tensor()[:, :1] if info.grayscale else train_set.images_tensor()
        views = BatchedEpochs(
            images.to(device),
            batch_paper_views(config.views, config.data.image_size, info.mean, info.std),
            config,
            ranks,
        )
    else:
        make = cropped_paper_views if path == "cropped" else paper_views
        made = make(config.views, config.data.image_size, info.mean, info.std, info.grayscale)
        views = PerImageEpochs(ViewPairs(train_set, made), config, device, ranks)
    return len(train_set), monitor, views, info


def _place(
    method: Method,
    config: Config,
    ranks: distributed.Ranks,
    device: torch.device,
    choices: speed.SpeedChoices,
) -> tuple[Method, torch.nn.Module]:
    """The method on its device and memory format, and what the step calls: the method,
    DDP-wrapped when there are several ranks."""
    if ranks.world_size > 1 and config.model.sync_batchnorm:  # global BN statistics (Section 3.3)
        method = convert_sync_batchnorm(method, device)
    method.to(device)
    if choices.channels_last:
        method.to(memory_format=torch.channels_last)
    missing = compile_blocker(device) if choices.compile else None
    if missing:
        logger.warning("byol: warning: torch.compile needs %s; training without it.", missing)
    elif choices.compile:  # in place: the state dict keeps its names, so checkpoints are portable
        method.compile(mode=choices.compile_mode)
    return method, distributed.wrap(method, device)  # DDP over the online branch
