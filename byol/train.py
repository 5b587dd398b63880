"""The pretraining loop: views -> loss -> optimizer step -> target EMA, with logging and resume.

Follow one batch: ``EpochBatches`` picks image indices and a seed per image; ``ViewPairs`` turns
each into two views (T and T'); ``BYOL`` returns the symmetric loss; LARS steps the online
network; ``update_target`` moves the target towards it with the cosine tau schedule.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from byol.augment import EvalTransform, TwoViews, paper_views
from byol.backbones import build_backbone
from byol.batch_views import BatchTwoViews, batch_paper_views
from byol.byol import BYOLOutput
from byol.checkpoint import (
    CHECKPOINT_NAME,
    load_latest_checkpoint,
    load_model_state,
    remove_stale_temporaries,
    save_checkpoint,
    save_encoder,
)
from byol.config import Config, from_dict
from byol.data import DatasetInfo, TensorImageDataset, labelled, load_datasets, subset
from byol.errors import CheckpointError, ConfigError, RunInterrupted, TrainingDiverged
from byol.evaluate import autocast, extract_features, knn_accuracy, resolve_precision
from byol.losses import collapse_metric
from byol.methods import build_method
from byol.metrics import MetricsLog
from byol.optim import build_optimizer
from byol.schedules import learning_rate, scaled_learning_rate, target_tau

ENCODER_NAME = "encoder.safetensors"
# Fields that change how a run executes, not what it computes: they may differ on --resume.
RESUMABLE_CHANGES = {
    "max_minutes",
    "num_workers",
    "threads",
    "device",
    "log_every_steps",
    "compile",
}

logger = logging.getLogger(__name__)


def epoch_order(size: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image order of an epoch and one view seed per position: functions of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(size, generator=generator)
    return order, torch.randint(0, 2**62, (size,), generator=generator)


class EpochBatches(torch.utils.data.Sampler):
    """Batches of (image index, view seed) for one epoch, starting at a given batch.

    The order and the seeds are functions of (seed, epoch) only, so a run resumed mid-epoch sees
    exactly the batches and views that an uninterrupted run would have seen.
    """

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, start_batch: int = 0):
        self.size, self.batch_size = size, batch_size
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch

    def __len__(self) -> int:
        return self.size // self.batch_size - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, view_seeds = epoch_order(self.size, self.seed, self.epoch)
        for b in range(self.start_batch, self.size // self.batch_size):  # drop the last partial
            chunk = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield list(zip(order[chunk].tolist(), view_seeds[chunk].tolist(), strict=True))


class ViewPairs(Dataset):
    """Wraps an (image, label) dataset: key (index, seed) -> (view 1, view 2)."""

    def __init__(self, images: Dataset, views: TwoViews) -> None:
        self.images, self.views = images, views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        image, _ = self.images[index]
        return self.views(image, torch.Generator().manual_seed(seed))


def per_image_epoch(
    view_pairs: ViewPairs,
    config: Config,
    device: torch.device,
    epoch: int,
    start_batch: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An epoch of view pairs made image by image in DataLoader workers (any dataset)."""
    loader = DataLoader(
        view_pairs,
        batch_sampler=EpochBatches(
            len(view_pairs), config.batch_size, config.seed, epoch, start_batch
        ),
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if config.num_workers else None,
    )
    for view_1, view_2 in loader:
        yield view_1.to(device, non_blocking=True), view_2.to(device, non_blocking=True)


class BatchedEpochs:
    """Epochs of view pairs made a batch at a time on the training device, from uint8 images
    held there (in-memory datasets): no workers, no per-image Python, no host-device copies."""

    def __init__(self, images: torch.Tensor, views: BatchTwoViews, config: Config) -> None:
        self.images, self.views, self.config = images, views, config

    def epoch(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        c = self.config
        order, view_seeds = epoch_order(self.images.shape[0], c.seed, epoch)
        order = order.to(self.images.device)
        generator = torch.Generator(self.images.device)
        for b in range(start_batch, self.images.shape[0] // c.batch_size):
            generator.manual_seed(int(view_seeds[b]))  # per batch: resume lands on the same views
            batch = self.images[order[b * c.batch_size : (b + 1) * c.batch_size]]
            yield self.views(batch, generator)


def use_batched_views(config: Config, train_set: Dataset) -> bool:
    in_memory = isinstance(train_set, TensorImageDataset)
    if config.views == "batched" and not in_memory:
        raise ConfigError(
            "views=batched needs a dataset held in memory as a tensor, and this one is read "
            "from files image by image; use --set views=per-image (or auto)."
        )
    return config.views == "batched" or (config.views == "auto" and in_memory)


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA device is visible; use --set device=cpu.")
    return torch.device(name)


def build_model(config: Config) -> torch.nn.Module:
    """``config.method`` (BYOL or a baseline; all share BYOL's interface) on a fresh encoder."""
    encoder, feature_dim = build_backbone(config.backbone, config.cifar_stem)
    return build_method(config, encoder, feature_dim)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    view_1: torch.Tensor,
    view_2: torch.Tensor,
    lr: float,
    tau: float,
    precision: str = "fp32",
) -> BYOLOutput:
    """One optimizer step on the online network, then one EMA step of the target."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(view_1.device, precision):
        output = model(view_1, view_2)
    optimizer.zero_grad(set_to_none=True)
    output.loss.backward()
    optimizer.step()
    model.update_target(tau)
    return output


class KnnMonitor:
    """Scores a frozen encoder with weighted kNN: bank = labelled training images, queries =
    the test split. Per-epoch scores may use a class-balanced subset of the bank."""

    def __init__(
        self, config: Config, train: Dataset, test: Dataset, info: DatasetInfo, device: torch.device
    ) -> None:
        self.config, self.device = config, device
        transform = EvalTransform(config.image_size, info.mean, info.std, config.eval_crop_fraction)
        train = labelled(train)
        self.full_bank = _with_transform(train, transform)
        self.bank = self.full_bank
        if 0 < config.knn_bank_subset < len(train):
            bank = subset(train, config.knn_bank_subset, config.seed)
            self.bank = _with_transform(bank, transform)
        self.queries = _with_transform(test, transform)

    def _features(self, encoder: torch.nn.Module, dataset: Dataset):
        c = self.config
        return extract_features(
            encoder, dataset, self.device, c.eval_batch_size, c.precision, 0, c.channels_last
        )

    def _knn(self, bank: tuple, queries: tuple) -> float:
        c = self.config
        return knn_accuracy(*bank, *queries, c.knn_k, c.knn_temperature)

    def score(self, encoder: torch.nn.Module, full: bool = False) -> float:
        bank = self._features(encoder, self.full_bank if full else self.bank)
        return self._knn(bank, self._features(encoder, self.queries))

    def score_pixels(self) -> float:
        return self._knn(_flat_pixels(self.full_bank), _flat_pixels(self.queries))


def _with_transform(dataset: Dataset, transform: Any) -> Dataset:
    clone = copy.copy(dataset)
    clone.transform = transform
    return clone


def _flat_pixels(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(DataLoader(dataset, batch_size=1024))
    return torch.cat([x.flatten(1) for x, _ in batches]), torch.cat([y for _, y in batches])


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


def _check_resumable(checkpoint: dict[str, Any], config: Config, source: Path) -> None:
    """Refuse a checkpoint of another method, or of a run configured differently."""
    method = checkpoint.get("method", "byol")
    if method != config.method:
        raise CheckpointError(
            f"{source} was written by a {method} run, not {config.method}; resume it with the "
            "method that wrote it, or start a new run."
        )
    missing = [k for k in ("model", "optimizer", "step", "config") if k not in checkpoint]
    if missing or not isinstance(checkpoint.get("config"), dict):
        raise CheckpointError(f"{source} lacks {', '.join(missing) or 'a config'}; start anew.")
    run_dir = source.parent
    saved = from_dict(checkpoint["config"])
    changed = [
        f"{f.name}: {getattr(saved, f.name)!r} -> {getattr(config, f.name)!r}"
        for f in dataclasses.fields(Config)
        if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name)
    ]
    if changed:
        raise CheckpointError(
            f"cannot resume {run_dir}: the config differs from the one it was started with "
            f"({'; '.join(changed)}); resume without --preset/--set, or start a new run."
        )


def _diverged(
    what: str, step: int, lr: float, precision: str, saved_step: int | None
) -> TrainingDiverged:
    kept = (
        f"the last good checkpoint (step {saved_step}) was kept"
        if saved_step is not None
        else "no checkpoint had been written yet"
    )
    return TrainingDiverged(
        f"{what} at step {step} (lr {lr:.3g}, precision {precision}); {kept}. The likely cause "
        "is a learning rate too high or too low a precision: lower base_lr or use "
        "precision=fp32, then --resume."
    )


def _check_finite(
    loss: float, step: int, lr: float, precision: str, saved_step: int | None = None
) -> None:
    """Stop before a NaN or inf loss reaches a checkpoint: the last good one stays in place."""
    if not math.isfinite(loss):
        raise _diverged(f"the loss became {loss}", step, lr, precision, saved_step)


def _peak_memory_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def pretrain(
    config: Config, run_dir: Path, resume: bool = False, quiet: bool = False
) -> PretrainResult:
    """Pretrain ``config.method`` as ``config`` says; everything is written into ``run_dir``."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    checkpoint = None
    if resume:  # the newest checkpoint that passes its checksum; a corrupt newest is passed over
        checkpoint, source, passed_over = load_latest_checkpoint(run_dir)
        for problem in passed_over:
            logger.warning("byol: %s Resuming from %s instead.", problem, source)
        _check_resumable(checkpoint, config, source)
    config.validate()
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)  # left by a process killed while writing
    config.save(run_dir / "config.json")
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)

    # --- data ---
    train_set, test_set, info = load_datasets(
        config.dataset, config.data_dir or None, config.download, True, config.strict_images
    )
    monitor = None
    if test_set is not None and info.classes:  # the kNN bank is the whole labelled train split
        monitor = KnnMonitor(config, train_set, test_set, info, device)
    if config.train_subset:
        train_set = subset(train_set, config.train_subset, config.seed)
    if len(train_set) < config.batch_size:
        raise ConfigError(
            f"the training set has {len(train_set)} images, fewer than batch_size="
            f"{config.batch_size}; lower it with --set batch_size=N."
        )
    batched = None
    if use_batched_views(config, train_set):
        images = train_set.images[:, :1] if info.grayscale else train_set.images  # gray: 1 channel
        batched = BatchedEpochs(
            images.to(device), batch_paper_views(config, info.mean, info.std), config
        )
    else:
        views = paper_views(config, info.mean, info.std, info.grayscale)
        view_pairs = ViewPairs(train_set, views)

    # --- model, optimizer, schedules ---
    model = build_model(config).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.compile:
        model.compile()  # in place: the state dict keeps its names, so checkpoints are portable
    peak_lr = scaled_learning_rate(config.base_lr, config.batch_size)
    optimizer = build_optimizer(
        model,  # parameter groups skip the target: it has no gradients
        config.optimizer,
        peak_lr,
        config.weight_decay,
        config.momentum,
        config.lars_trust_coefficient,
    )
    steps_per_epoch = len(train_set) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    step = 0
    saved_step: int | None = None
    if checkpoint is not None:
        load_model_state(model, checkpoint["model"], source)
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{source} holds another optimizer's state ({error}).") from None
        step = saved_step = int(checkpoint["step"])
    log = MetricsLog(run_dir, resume_step=step)  # drops records a killed run wrote later

    def save() -> None:
        nonlocal saved_step
        # The loss checked above came before this step's update, which may itself have overflowed.
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise _diverged(
                "the weights became inf or NaN",
                step,
                lr,
                resolve_precision(device, config.precision),
                saved_step,
            )
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "config": config.to_dict(),
            "method": config.method,
        }
        try:
            save_checkpoint(checkpoint_path, state)
        except CheckpointError as error:
            resume = f" with `byol pretrain --resume {run_dir}`."
            raise CheckpointError(str(error).rstrip(".") + resume) from None
        saved_step = step

    # --- the loop ---
    progress = tqdm(
        total=total_steps * config.batch_size,
        initial=step * config.batch_size,
        unit="img",
        unit_scale=True,
        desc="pretrain",
        disable=quiet,
        dynamic_ncols=True,
    )
    deadline = started + 60 * config.max_minutes if config.max_minutes else math.inf
    train_started, first_step = time.perf_counter(), step
    epoch_collapse: list[float] = []
    collapse = None
    stopped_early = False
    model.train()
    with StopRequests() as stop_requests:
        while step < total_steps and not stopped_early:
            epoch, start_batch = divmod(step, steps_per_epoch)
            if batched is not None:
                pairs = batched.epoch(epoch, start_batch)
            else:
                pairs = per_image_epoch(view_pairs, config, device, epoch, start_batch)
            for view_1, view_2 in pairs:
                if config.channels_last:
                    view_1 = view_1.contiguous(memory_format=torch.channels_last)
                    view_2 = view_2.contiguous(memory_format=torch.channels_last)
                lr = learning_rate(step, total_steps, warmup_steps, peak_lr)
                tau = target_tau(step, total_steps, config.tau_base, config.tau_schedule)
                output = train_step(model, optimizer, view_1, view_2, lr, tau, config.precision)
                step += 1
                progress.update(config.batch_size)

                epoch_done = step % steps_per_epoch == 0
                out_of_time = time.perf_counter() > deadline
                stop_now = stop_requests.received is not None or out_of_time
                checkpoint_due = (
                    epoch_done
                    or stop_now
                    or (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0)
                )
                if step % config.log_every_steps == 0 or step == total_steps or checkpoint_due:
                    loss = output.loss.item()  # the only host-device sync of a step
                    _check_finite(
                        loss, step, lr, resolve_precision(device, config.precision), saved_step
                    )
                    collapse = collapse_metric(output.online_projection).item()
                    epoch_collapse.append(collapse)
                    images = (step - first_step) * config.batch_size
                    rate = images / (time.perf_counter() - train_started)
                    record = dict(step=step, epoch=step / steps_per_epoch, loss=loss, lr=lr)
                    log.write(dict(record, tau=tau, collapse=collapse, images_per_second=rate))
                    progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}", tau=f"{tau:.4f}")
                if epoch_done:
                    record = dict(step=step, epoch=step // steps_per_epoch)
                    record["collapse"] = sum(epoch_collapse) / len(epoch_collapse)
                    epoch_collapse = []
                    every = config.knn_every_epochs
                    if monitor and every and record["epoch"] % every == 0 and step < total_steps:
                        record["knn_top1"] = monitor.score(model.online_encoder)
                        progress.write(
                            f"epoch {record['epoch']}: kNN top-1 {record['knn_top1']:.2f}%"
                        )
                    log.write(record)
                if checkpoint_due:
                    save()
                if stop_requests.received is not None:
                    progress.close()
                    name = signal.Signals(stop_requests.received).name
                    raise RunInterrupted(
                        f"{name} received: stopped after step {step} of {total_steps} and saved a "
                        f"checkpoint; continue with `byol pretrain --resume {run_dir}`."
                    )
                if out_of_time:
                    stopped_early = step < total_steps
                    break
    progress.close()
    train_time = time.perf_counter() - train_started
    images_per_second = (step - first_step) * config.batch_size / max(train_time, 1e-9)

    # --- the encoder and the final scores ---
    save_encoder(run_dir / ENCODER_NAME, model.online_encoder, config.backbone, config.cifar_stem)
    scores: dict[str, float] = {}
    if monitor is not None and config.knn_final:
        scores["knn_top1"] = monitor.score(model.online_encoder, full=True)
        if config.knn_references:
            torch.manual_seed(config.seed)  # the same initial weights the run started from
            random_init = build_model(config).online_encoder.to(device)
            if config.channels_last:
                random_init = random_init.to(memory_format=torch.channels_last)
            scores["knn_top1_random_init"] = monitor.score(random_init, full=True)
            scores["knn_top1_pixels"] = monitor.score_pixels()
    log.write(dict(step=step, epoch=step / steps_per_epoch, final=True, **scores))
    log.close()
    result = PretrainResult(
        run_dir=run_dir,
        steps=step,
        wall_time_s=time.perf_counter() - started,
        knn_top1=scores.get("knn_top1"),
        knn_top1_random_init=scores.get("knn_top1_random_init"),
        knn_top1_pixels=scores.get("knn_top1_pixels"),
        collapse=collapse,
        peak_memory_mb=_peak_memory_mb(),
        images_per_second=images_per_second,
        stopped_early=stopped_early,
    )
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
    summary["unreadable_images"] = info.unreadable
    (run_dir / ".summary.json.tmp").write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(run_dir / ".summary.json.tmp", run_dir / "summary.json")  # never half-written
    return result
