"""A run's state and its set-up: data, views, model, optimizer and schedules, restored from the
newest checkpoint on --resume; checkpoints and the encoder file written from it."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from byol import distributed, run_folder
from byol.backbones import build_backbone
from byol.checkpoint import load_latest_checkpoint, load_model_state, save_checkpoint, save_encoder
from byol.config import Config
from byol.data import DatasetInfo, indexable, load_datasets, subset
from byol.errors import CheckpointError, ConfigError, TrainingDiverged
from byol.methods import Method, build_method
from byol.run_folder import MetricsLog
from byol.runtime import resolve_precision
from byol.sync_batchnorm import convert_sync_batchnorm
from byol.training.epochs import BatchedEpochs, Pairs, ViewPairs, per_image_epoch, view_path
from byol.training.monitor import KnnMonitor
from byol.training.optim import build_optimizer
from byol.training.schedules import scaled_learning_rate
from byol.views.batched import batch_paper_views
from byol.views.cropped import cropped_paper_views
from byol.views.per_image import paper_views

logger = logging.getLogger(__name__)


class AlreadyFinished(Exception):  # noqa: N818 - a state, not an error
    """--resume of a run that had finished: nothing to do."""

    def __init__(self, summary: dict[str, Any]) -> None:
        super().__init__("the run had already finished")
        self.summary = summary


def build_model(config: Config) -> Method:
    """``config.method.name`` (BYOL or a baseline) on a fresh encoder."""
    encoder, feature_dim = build_backbone(
        config.model.backbone,
        config.model.cifar_stem,
        config.data.image_size,
        config.model.backbone_kwargs,
    )
    return build_method(config.method, encoder, feature_dim, config.seed)


@dataclass
class RunState:
    config: Config
    run_dir: Path
    ranks: distributed.Ranks
    device: torch.device
    info: DatasetInfo
    train_set: Dataset
    monitor: KnnMonitor | None
    views: BatchedEpochs | ViewPairs
    method: Method  # unwrapped: hooks, EMA, the encoder kept
    trained: torch.nn.Module  # what the step calls: the method, DDP-wrapped when several ranks
    optimizer: torch.optim.Optimizer
    precision: str
    peak_lr: float
    steps_per_epoch: int
    total_steps: int
    schedule_steps: int
    warmup_steps: int
    step: int = 0
    saved_step: int | None = None
    log: MetricsLog | None = None
    epoch_collapse: list[float] = field(default_factory=list)
    lock: run_folder.RunLock | None = None  # rank 0's hold on the run folder
    data_wait_s: float = 0.0  # time the loop waited for views and images

    def release(self) -> None:
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None

    def epoch_batches(self) -> Iterator[Iterator[Pairs]]:
        """This epoch's steps from the current one on, each an iterator of micro-batches."""
        epoch, start_batch = divmod(self.step, self.steps_per_epoch)
        if isinstance(self.views, BatchedEpochs):
            steps = self.views.epoch(epoch, start_batch)
        else:
            steps = per_image_epoch(
                self.views, self.config, self.device, epoch, start_batch, self.ranks
            )
        if self.config.runtime.channels_last:
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

    def progress_bar(self, quiet: bool) -> tqdm:
        return tqdm(
            total=self.total_steps * self.config.optim.batch_size,
            initial=self.step * self.config.optim.batch_size,
            unit="img",
            unit_scale=True,
            desc="pretrain",
            disable=quiet or not self.ranks.is_main,
            dynamic_ncols=True,
        )

    def diverged(self, what: str, lr: float) -> TrainingDiverged:
        kept = (
            f"the last good checkpoint (step {self.saved_step}) was kept"
            if self.saved_step is not None
            else "no checkpoint had been written yet"
        )
        return TrainingDiverged(
            f"{what} at step {self.step} (lr {lr:.3g}, precision {self.precision}); {kept}. The "
            "likely cause is a learning rate too high or too low a precision: resume it with "
            f"`byol pretrain --resume {self.run_dir} --set base_lr=...` (lower) or "
            "--set precision=fp32."
        )

    def check_finite(self, loss: float, lr: float) -> None:
        """Stop before a NaN or inf loss reaches a checkpoint: the last good one stays in place."""
        if not math.isfinite(loss):
            raise self.diverged(f"the loss became {loss}", lr)

    def save_checkpoint(self, lr: float) -> None:
        # Every rank checks (same weights everywhere), so all stop together. The loss checked
        # before came before this step's update, which may itself have overflowed.
        # Buffers too: an inf batch-norm running variance makes a resumed run diverge again.
        tensors = [*self.method.parameters(), *self.method.buffers()]
        if not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()):
            raise self.diverged("the weights or batch-norm statistics became inf or NaN", lr)
        if self.ranks.is_main:
            state = {
                "model": self.method.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "step": self.step,
                "config": self.config.to_dict(),
                "method": self.config.method.name,
                "world_size": self.ranks.world_size,  # for the record: another count resumes
            }
            try:
                save_checkpoint(self.run_dir / run_folder.CHECKPOINT, state)
            except CheckpointError as error:
                resume = f" with `byol pretrain --resume {self.run_dir}`."
                raise CheckpointError(str(error).rstrip(".") + resume) from None
        self.saved_step = self.step

    def save_encoder(self) -> None:
        c = self.config
        path = self.run_dir / run_folder.ENCODER
        encoder = self.method.online_encoder
        save_encoder(path, encoder, c.model.backbone, c.model.cifar_stem, c.model.backbone_kwargs)


def _channels_last(pair: Pairs) -> Pairs:
    return tuple(v.contiguous(memory_format=torch.channels_last) for v in pair)


def set_up(
    config: Config, run_dir: Path, resume: bool, ranks: distributed.Ranks, device: torch.device
) -> RunState:
    """Everything a run needs before its first step; on resume, restored from the checkpoint."""
    checkpoint, source = None, None
    if resume:  # the newest checkpoint that passes its checksum; a corrupt newest is passed over
        checkpoint, source, passed_over = load_latest_checkpoint(run_dir)
        for problem in passed_over:
            logger.warning("byol: %s Resuming from %s instead.", problem, source)
        run_folder.check_resumable(checkpoint, config, source)
        summary = run_folder.read_summary(run_dir)
        if summary and summary.get("stopped_early") is False:
            if summary.get("steps") == checkpoint["step"]:  # its newest checkpoint is its last
                raise AlreadyFinished(summary)
    config.validate()
    distributed.check_batch(
        config.optim.batch_size, ranks.world_size, config.optim.accumulation_steps
    )
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
    precision = resolve_precision(
        device, config.runtime.precision, config.data.image_size, config.model.cifar_stem
    )
    train_set, monitor, views, info = _data(config, ranks, device, precision)
    method = build_model(config)  # after the seed, before anything else draws from it
    method.check_world_size(ranks.world_size)
    method, trained = _place(method, config, ranks, device)
    lock = None
    if ranks.is_main:  # the other ranks write no files
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = run_folder.RunLock(run_dir).__enter__()  # before touching another's files
        run_folder.remove_stale_temporaries(run_dir)  # left by a process killed while writing
        (run_dir / run_folder.DIVERGED).unlink(missing_ok=True)  # resumed: written again if so
        run_folder.save_config(run_dir, config)
    steps_per_epoch = len(train_set) // config.optim.batch_size
    total_steps = steps_per_epoch * config.schedule.epochs
    peak_lr = scaled_learning_rate(config.optim.base_lr, config.optim.batch_size)
    run = RunState(
        config,
        run_dir,
        ranks,
        device,
        info,
        train_set,
        monitor,
        views,
        method,
        trained,
        optimizer=build_optimizer(
            method,  # parameter groups skip the target: it has no gradients
            config.optim.optimizer,
            peak_lr,
            config.optim.weight_decay,
            config.optim.momentum,
            config.optim.lars_trust_coefficient,
            method.lr_scales(),
        ),
        precision=precision,
        peak_lr=peak_lr,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        # The schedules may span more steps than the run takes (schedule_epochs): lr and tau
        # then stop short of their end values, as a longer run's would at this step.
        schedule_steps=max(
            total_steps, int(round(steps_per_epoch * config.schedule.schedule_epochs))
        ),
        warmup_steps=int(round(config.schedule.warmup_epochs * steps_per_epoch)),
    )
    if checkpoint is not None:
        _restore(run, checkpoint, source)
    # Drops records a killed run wrote after its checkpoint; rank 0 alone writes.
    run.log = MetricsLog(run_dir, resume_step=run.step, enabled=ranks.is_main, config=config)
    run.lock = lock
    return run


def _data(
    config: Config, ranks: distributed.Ranks, device: torch.device, precision: str
) -> tuple[Dataset, KnnMonitor | None, BatchedEpochs | ViewPairs, DatasetInfo]:
    with distributed.main_first():  # rank 0 alone downloads or extracts, the others then read
        train_set, test_set, info = load_datasets(
            config.data.dataset,
            config.data.data_dir or None,
            config.data.download,
            True,
            config.data.strict_images,
        )
    monitor = None
    # The kNN bank is the whole labelled train split; rank 0 alone scores.
    if test_set is not None and info.classes and ranks.is_main:
        monitor = KnnMonitor(config, train_set, test_set, info, device, precision)
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
        views = ViewPairs(train_set, made)
    return train_set, monitor, views, info


def _place(
    method: Method, config: Config, ranks: distributed.Ranks, device: torch.device
) -> tuple[Method, torch.nn.Module]:
    """The method on its device and memory format, and what the step calls: the method,
    DDP-wrapped when there are several ranks."""
    if ranks.world_size > 1 and config.model.sync_batchnorm:  # global BN statistics (Section 3.3)
        method = convert_sync_batchnorm(method, device)
    method.to(device)
    if config.runtime.channels_last:
        method.to(memory_format=torch.channels_last)
    if config.runtime.compile:
        method.compile()  # in place: the state dict keeps its names, so checkpoints are portable
    return method, distributed.wrap(method, device)  # DDP over the online branch


def _restore(run: RunState, checkpoint: dict[str, Any], source: Path) -> None:
    load_model_state(run.method, checkpoint["model"], source)
    try:
        run.optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{source} holds another optimizer's state ({error}).") from None
    step = checkpoint["step"]
    if step > run.total_steps:
        raise CheckpointError(
            f"{source} is at step {step}, beyond this run's {run.total_steps} steps; resume from "
            "checkpoint-previous.pt or start a new run."
        )
    for group in run.optimizer.param_groups:  # load_state_dict checks no shapes
        for parameter in group["params"]:
            for name, value in run.optimizer.state.get(parameter, {}).items():
                if torch.is_tensor(value) and value.dim() and value.shape != parameter.shape:
                    raise CheckpointError(
                        f"{source} holds an optimizer {name} of shape {tuple(value.shape)} for "
                        f"a parameter of shape {tuple(parameter.shape)}; start a new run."
                    )
    run.step = run.saved_step = step
