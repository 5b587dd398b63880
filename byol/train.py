"""The pretraining loop: views -> loss -> optimizer step -> target EMA, with logging and resume.

Follow one batch: ``EpochBatches`` picks image indices and a seed per image; ``ViewPairs`` turns
each into two views (T and T'); ``BYOL`` returns the symmetric loss; LARS steps the online
network; ``update_target`` moves the target towards it with the cosine tau schedule.

Under torchrun every process runs this loop on its share of each global batch (``config.batch_size``
is the global batch), cut into ``config.accumulation_steps`` micro-batches; ``byol/distributed.py``
holds the process-group plumbing and docs/distributed.md the launch commands.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import math
import os
import resource
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from byol import distributed
from byol.augment import EvalTransform, TwoViews, paper_views
from byol.backbones import build_backbone, last_stage_input_side
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
    # The global batch and the schedules stay; only which images share batch-norm statistics
    # changes, as it does with the process count: a run can move to fewer devices.
    "accumulation_steps",
}

logger = logging.getLogger(__name__)


def epoch_order(size: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image order of an epoch and one view seed per position: functions of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(size, generator=generator)
    return order, torch.randint(0, 2**62, (size,), generator=generator)


ONE_PROCESS = distributed.Ranks()


class EpochBatches(torch.utils.data.Sampler):
    """Micro-batches of (image index, view seed) for one epoch, starting at a given global batch.

    The order and the seeds are functions of (seed, epoch) only, so a run resumed mid-epoch sees
    exactly the batches and views that an uninterrupted run would have seen. Every rank computes
    the same global batches and yields its own slices of each (``distributed.shard_slices``): the
    ranks' images and per-image view seeds together are the one-process batch.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        epoch: int,
        start_batch: int = 0,
        ranks: distributed.Ranks = ONE_PROCESS,
        accumulation_steps: int = 1,
    ):
        self.size, self.batch_size = size, batch_size
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch
        self.slices = distributed.shard_slices(batch_size, ranks, accumulation_steps)

    def __len__(self) -> int:
        return (self.size // self.batch_size - self.start_batch) * len(self.slices)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, view_seeds = epoch_order(self.size, self.seed, self.epoch)
        for b in range(self.start_batch, self.size // self.batch_size):  # drop the last partial
            batch = order[b * self.batch_size : (b + 1) * self.batch_size].tolist()
            seeds = view_seeds[b * self.batch_size : (b + 1) * self.batch_size].tolist()
            for part in self.slices:
                yield list(zip(batch[part], seeds[part], strict=True))


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


Pairs = tuple[torch.Tensor, torch.Tensor]


def per_image_epoch(
    view_pairs: ViewPairs,
    config: Config,
    device: torch.device,
    epoch: int,
    start_batch: int,
    ranks: distributed.Ranks = ONE_PROCESS,
) -> Iterator[Iterator[Pairs]]:
    """An epoch of view pairs made image by image in DataLoader workers (any dataset): for each
    optimizer step, this rank's micro-batches, made as they are consumed."""
    sampler = EpochBatches(
        len(view_pairs),
        config.batch_size,
        config.seed,
        epoch,
        start_batch,
        ranks,
        config.accumulation_steps,
    )
    loader = DataLoader(
        view_pairs,
        batch_sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if config.num_workers else None,
    )
    micro_batches = (
        (view_1.to(device, non_blocking=True), view_2.to(device, non_blocking=True))
        for view_1, view_2 in loader
    )
    for _ in range(len(sampler) // config.accumulation_steps):
        yield itertools.islice(micro_batches, config.accumulation_steps)


class BatchedEpochs:
    """Epochs of view pairs made a batch at a time on the training device, from uint8 images
    held there (in-memory datasets): no workers, no per-image Python, no host-device copies.

    Each rank draws the view parameters of the whole global batch, exactly as one process would
    (cheap: a few numbers per image), and makes the views of its own slices only; so the ranks'
    views together are the one-process batch's, bit for bit in the parameters.
    """

    def __init__(
        self,
        images: torch.Tensor,
        views: BatchTwoViews,
        config: Config,
        ranks: distributed.Ranks = ONE_PROCESS,
    ) -> None:
        self.images, self.views, self.config = images, views, config
        self.slices = distributed.shard_slices(config.batch_size, ranks, config.accumulation_steps)

    def epoch(self, epoch: int, start_batch: int) -> Iterator[Iterator[Pairs]]:
        """For each optimizer step, this rank's micro-batches, made as they are consumed."""
        c = self.config
        order, view_seeds = epoch_order(self.images.shape[0], c.seed, epoch)
        order = order.to(self.images.device)
        generator = torch.Generator(self.images.device)
        height, width = self.images.shape[-2:]
        for b in range(start_batch, self.images.shape[0] // c.batch_size):
            generator.manual_seed(int(view_seeds[b]))  # per batch: resume lands on the same views
            params = self.views.sample(c.batch_size, height, width, generator)
            yield self._micro_batches(order[b * c.batch_size : (b + 1) * c.batch_size], params)

    def _micro_batches(self, batch: torch.Tensor, params: tuple) -> Iterator[Pairs]:
        for part in self.slices:
            yield self.views.apply(self.images[batch[part]], (params[0][part], params[1][part]))


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


def training_precision(config: Config, device: torch.device) -> str:
    """The precision the training step runs in. ``auto`` keeps fp32 on a CPU where layer4's
    stride-2 convolution sees a 1x1 map (16 px and below with the torchvision stem): oneDNN's
    bf16 weight gradient of that convolution holds NaN there (BENCHMARKS.md, "bf16 pitfall")."""
    precision = resolve_precision(device, config.precision)
    if (
        config.precision == "auto"
        and precision == "bf16"
        and device.type == "cpu"
        and last_stage_input_side(config.image_size, config.cifar_stem) <= 1
    ):
        return "fp32"
    return precision


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
    return accumulated_step(model, optimizer, [(view_1, view_2)], lr, tau, precision)


def accumulated_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Iterable[Pairs],
    lr: float,
    tau: float,
    precision: str = "fp32",
    accumulation_steps: int = 1,
) -> BYOLOutput:
    """One optimizer step on the gradient of ``accumulation_steps`` micro-batches, then one EMA
    step of the target: the step of one batch made of them all, except that batch-norm statistics
    are per micro-batch. ``model`` may be DDP-wrapped: gradients are averaged over ranks once, on
    the last micro-batch. Returns the mean loss and all projections of this rank's micro-batches.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.zero_grad(set_to_none=True)
    losses, projections = [], []
    for i, (view_1, view_2) in enumerate(micro_batches):
        with distributed.no_sync(model, skip=i < accumulation_steps - 1):
            with autocast(view_1.device, precision):
                output = model(view_1, view_2)
            (output.loss / accumulation_steps).backward()  # the mean over micro-batches
        losses.append(output.loss.detach())
        projections.append(output.online_projection)
    if len(losses) != accumulation_steps:
        raise RuntimeError(f"expected {accumulation_steps} micro-batches, got {len(losses)}")
    optimizer.step()
    distributed.unwrap(model).update_target(tau)  # every rank: same weights, same EMA
    return BYOLOutput(torch.stack(losses).mean(), torch.cat(projections))


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
        (bank, bank_labels), (queries, query_labels) = map(_pixels, (self.full_bank, self.queries))
        if _grey(bank) and _grey(queries):
            # Three equal channels have the same cosine similarities as one, at 3x the cost.
            bank, queries = bank[:, :1], queries[:, :1]
        return self._knn((bank.flatten(1), bank_labels), (queries.flatten(1), query_labels))


def _with_transform(dataset: Dataset, transform: Any) -> Dataset:
    clone = copy.copy(dataset)
    clone.transform = transform
    return clone


def _pixels(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(DataLoader(dataset, batch_size=1024))
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def _grey(images: torch.Tensor) -> bool:
    return images.shape[1] > 1 and bool((images == images[:, :1]).all())


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


def _channels_last(pair: Pairs) -> Pairs:
    return tuple(v.contiguous(memory_format=torch.channels_last) for v in pair)


def _peak_memory_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def pretrain(
    config: Config, run_dir: Path, resume: bool = False, quiet: bool = False
) -> PretrainResult:
    """Pretrain ``config.method`` as ``config`` says; everything is written into ``run_dir``.

    Under torchrun (or in a process group already initialised) every process calls this and
    trains on its share of each global batch; rank 0 alone writes files and scores kNN.
    """
    with distributed.process_group(resolve_device(config.device)) as (ranks, device):
        return _pretrain(config, run_dir, resume, quiet, ranks, device)


def _pretrain(
    config: Config,
    run_dir: Path,
    resume: bool,
    quiet: bool,
    ranks: distributed.Ranks,
    device: torch.device,
) -> PretrainResult:
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
    distributed.check_batch(config.batch_size, ranks.world_size, config.accumulation_steps)
    if config.effective_predictor_warmup_steps and ranks.world_size > 1:
        raise ConfigError(
            "predictor_warmup_steps works in one process only (DDP cannot skip the encoder's "
            "gradients); set predictor_warmup_steps=0 or run without torchrun."
        )
    if ranks.is_main:  # the other ranks write no files
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)  # left by a process killed while writing
        config.save(run_dir / "config.json")
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    if config.threads:
        torch.set_num_threads(config.threads)

    # --- data ---
    with distributed.main_first():  # rank 0 alone downloads or extracts, the others then read
        train_set, test_set, info = load_datasets(
            config.dataset, config.data_dir or None, config.download, True, config.strict_images
        )
    monitor = None
    # The kNN bank is the whole labelled train split; rank 0 alone scores.
    if test_set is not None and info.classes and ranks.is_main:
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
            images.to(device), batch_paper_views(config, info.mean, info.std), config, ranks
        )
    else:
        views = paper_views(config, info.mean, info.std, info.grayscale)
        view_pairs = ViewPairs(train_set, views)

    # --- model, optimizer, schedules ---
    model = build_model(config)
    if ranks.world_size > 1 and config.sync_batchnorm:  # global BN statistics (PAPER.md 4)
        model = distributed.convert_sync_batchnorm(model, device)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.compile:
        model.compile()  # in place: the state dict keeps its names, so checkpoints are portable
    trained = distributed.wrap(model, device)  # DDP over the online branch when several ranks
    precision = training_precision(config, device)
    peak_lr = scaled_learning_rate(config.base_lr, config.batch_size)
    optimizer = build_optimizer(
        model,  # parameter groups skip the target: it has no gradients
        config.optimizer,
        peak_lr,
        config.weight_decay,
        config.momentum,
        config.lars_trust_coefficient,
        {model.predictor: config.predictor_lr_scale} if hasattr(model, "predictor") else None,
    )
    steps_per_epoch = len(train_set) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    # The schedules may span more steps than the run takes (schedule_epochs): lr and tau then stop
    # short of their end values, as a longer run's would at this step.
    schedule_steps = max(total_steps, int(round(steps_per_epoch * config.schedule_epochs)))
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
    # Drops records a killed run wrote after its checkpoint; rank 0 alone writes.
    log = MetricsLog(run_dir, resume_step=step, enabled=ranks.is_main)

    def save() -> None:
        nonlocal saved_step
        # Every rank checks (same weights everywhere), so all stop together. The loss checked above
        # came before this step's update, which may itself have overflowed.
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise _diverged(
                "the weights became inf or NaN",
                step,
                lr,
                precision,
                saved_step,
            )
        if ranks.is_main:
            _save(step)
        saved_step = step

    def _save(step: int) -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "config": config.to_dict(),
            "method": config.method,
            "world_size": ranks.world_size,  # for the record: resuming on another count works
        }
        try:
            save_checkpoint(checkpoint_path, state)
        except CheckpointError as error:
            resume = f" with `byol pretrain --resume {run_dir}`."
            raise CheckpointError(str(error).rstrip(".") + resume) from None

    # --- the loop ---
    progress = tqdm(
        total=total_steps * config.batch_size,
        initial=step * config.batch_size,
        unit="img",
        unit_scale=True,
        desc="pretrain",
        disable=quiet or not ranks.is_main,
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
                steps = batched.epoch(epoch, start_batch)
            else:
                steps = per_image_epoch(view_pairs, config, device, epoch, start_batch, ranks)
            for micro_batches in steps:
                if config.channels_last:
                    micro_batches = map(_channels_last, micro_batches)
                # Schedules count optimizer steps, never micro-batches: tau reaches 1 at the
                # schedule's end (the run's, unless schedule_epochs is longer).
                lr = learning_rate(step, schedule_steps, warmup_steps, peak_lr)
                tau = target_tau(step, schedule_steps, config.tau_base, config.tau_schedule)
                # Randomness inside a step (MoCo's batch-norm shuffle) drawn from the step number,
                # so a resumed run repeats it; host-side seeding, no device sync.
                torch.manual_seed(config.seed * 1_000_003 + step)
                warmup = config.effective_predictor_warmup_steps
                if warmup and step <= warmup:  # toggled until the step it ends, then left alone
                    model.train_predictor_only(step < warmup)
                output = accumulated_step(
                    trained,
                    optimizer,
                    micro_batches,
                    lr,
                    tau,
                    precision,
                    config.accumulation_steps,
                )
                step += 1
                progress.update(config.batch_size)

                epoch_done = step % steps_per_epoch == 0
                interrupted, out_of_time = distributed.any_rank(
                    stop_requests.received is not None, time.perf_counter() > deadline
                )
                stop_now = interrupted or out_of_time
                checkpoint_due = (
                    epoch_done
                    or stop_now
                    or (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0)
                )
                if step % config.log_every_steps == 0 or step == total_steps or checkpoint_due:
                    # The only host-device sync of a step; global-batch values on every rank.
                    loss = distributed.mean_over_ranks(output.loss).item()
                    _check_finite(loss, step, lr, precision, saved_step)
                    collapse = collapse_metric(distributed.gather(output.online_projection)).item()
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
                    distributed.barrier()  # the other ranks wait for rank 0's kNN
                if checkpoint_due:
                    save()
                if interrupted:
                    progress.close()
                    distributed.barrier()  # no rank exits before rank 0's checkpoint is written
                    received = stop_requests.received
                    name = signal.Signals(received).name if received else "a stop signal"
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
    if ranks.is_main:
        save_encoder(
            run_dir / ENCODER_NAME, model.online_encoder, config.backbone, config.cifar_stem
        )
    # The checkpoint and the encoder are on disk when any rank returns; rank 0 alone then runs
    # the final kNN and writes the summary, while the others are done.
    distributed.barrier()
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
    if ranks.is_main:
        summary["world_size"] = ranks.world_size
        summary["precision"] = precision  # what training ran in, with auto resolved
        summary["unreadable_images"] = info.unreadable
        (run_dir / ".summary.json.tmp").write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(run_dir / ".summary.json.tmp", run_dir / "summary.json")  # never half-written
    return result
