"""The pretraining loop: views -> loss -> optimizer step -> target EMA, with logging and resume.

Follow one batch: ``EpochBatches`` picks image indices and a seed per image; ``ViewPairs`` turns
each into two views (T and T'); ``BYOL`` returns the symmetric loss; LARS steps the online
network; ``update_target`` moves the target towards it with the cosine tau schedule.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import resource
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
from byol.byol import BYOL
from byol.checkpoint import load_checkpoint, save_checkpoint, save_encoder
from byol.config import Config, from_dict
from byol.data import load_datasets, subset
from byol.errors import CheckpointError, ConfigError, TrainingDiverged
from byol.evaluate import autocast, extract_features, knn_accuracy
from byol.losses import collapse_metric
from byol.metrics import MetricsLog
from byol.optim import build_optimizer
from byol.schedules import learning_rate, scaled_learning_rate, target_tau

CHECKPOINT_NAME = "checkpoint.pt"
# Fields that change how a run executes, not what it computes: they may differ on --resume.
RESUMABLE_CHANGES = {"max_minutes", "num_workers", "threads", "device", "log_every_steps"}
ENCODER_NAME = "encoder.safetensors"


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
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        view_seeds = torch.randint(0, 2**62, (self.size,), generator=generator)
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA device is visible; use --set device=cpu.")
    return torch.device(name)


class KnnMonitor:
    """Scores the frozen online encoder with weighted kNN on the labelled test split."""

    def __init__(self, config: Config, train: Dataset, test: Dataset, info: Any, device):
        self.config, self.device = config, device
        transform = EvalTransform(config.image_size, info.mean, info.std, config.eval_crop_fraction)
        self.full_bank = _with_transform(train, transform)
        self.bank = self.full_bank
        if config.knn_bank_subset and config.knn_bank_subset < len(train):
            self.bank = _with_transform(subset(train, config.knn_bank_subset, config.seed), transform)
        self.queries = _with_transform(test, transform)

    def _features(self, encoder: torch.nn.Module, dataset: Dataset):
        c = self.config
        return extract_features(
            encoder, dataset, self.device, c.eval_batch_size, c.precision, 0, c.channels_last
        )

    def score(self, encoder: torch.nn.Module, full: bool = False) -> float:
        bank_f, bank_y = self._features(encoder, self.full_bank if full else self.bank)
        query_f, query_y = self._features(encoder, self.queries)
        c = self.config
        return knn_accuracy(bank_f, bank_y, query_f, query_y, c.knn_k, c.knn_temperature)

    def score_pixels(self) -> float:
        bank_f, bank_y = _flat_pixels(self.full_bank)
        query_f, query_y = _flat_pixels(self.queries)
        c = self.config
        return knn_accuracy(bank_f, bank_y, query_f, query_y, c.knn_k, c.knn_temperature)


def _with_transform(dataset: Dataset, transform: Any) -> Dataset:
    clone = copy.copy(dataset)
    clone.transform = transform
    return clone


def _flat_pixels(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(dataset, batch_size=1024)
    pairs = [(x.flatten(1), torch.as_tensor(y)) for x, y in loader]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def _peak_memory_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def pretrain(config: Config, run_dir: Path, resume: bool = False, quiet: bool = False):
    """Pretrain with BYOL; returns a PretrainResult. Writes everything into ``run_dir``."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(checkpoint_path)
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
    config.validate()
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.json")

    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)

    train_set, test_set, info = load_datasets(
        config.dataset, config.data_dir or None, config.download, in_memory=True
    )
    if config.train_subset:
        train_set = subset(train_set, config.train_subset, config.seed)
    if len(train_set) < config.batch_size:
        raise ConfigError(
            f"the training set has {len(train_set)} images, fewer than batch_size="
            f"{config.batch_size}; lower it with --set batch_size=N."
        )
    views = paper_views(config, info.mean, info.std, grayscale_source=info.grayscale)
    labelled_test = test_set is not None and bool(info.classes)
    monitor = KnnMonitor(config, train_set, test_set, info, device) if labelled_test else None

    encoder, feature_dim = build_backbone(config.backbone, config.cifar_stem)
    model = BYOL(
        encoder,
        feature_dim,
        config.projector_hidden_dim,
        config.projection_dim,
        config.predictor_hidden_dim,
    ).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    peak_lr = scaled_learning_rate(config.base_lr, config.batch_size)
    optimizer = build_optimizer(
        torch.nn.ModuleList([model.online_encoder, model.online_projector, model.predictor]),
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
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step = int(checkpoint["step"])
    log = MetricsLog(run_dir, resume_step=step if checkpoint is not None else None)

    def write_checkpoint() -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "config": config.to_dict(),
            "method": "byol",
        }
        save_checkpoint(checkpoint_path, state)

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
    train_started, train_images = time.perf_counter(), 0
    collapse_sum, collapse_count, last_collapse = 0.0, 0, None
    model.train()
    stopped_early = False
    while step < total_steps and not stopped_early:
        epoch, start_batch = divmod(step, steps_per_epoch)
        sampler = EpochBatches(len(train_set), config.batch_size, config.seed, epoch, start_batch)
        loader = DataLoader(
            ViewPairs(train_set, views),
            batch_sampler=sampler,
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if config.num_workers else None,
        )
        for view_1, view_2 in loader:
            view_1 = view_1.to(device, non_blocking=True)
            view_2 = view_2.to(device, non_blocking=True)
            if config.channels_last:
                view_1 = view_1.contiguous(memory_format=torch.channels_last)
                view_2 = view_2.contiguous(memory_format=torch.channels_last)
            lr = learning_rate(step, total_steps, warmup_steps, peak_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, config.precision):
                output = model(view_1, view_2)
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            optimizer.step()
            tau = target_tau(step, total_steps, config.tau_base)
            model.update_target(tau)
            step += 1
            train_images += config.batch_size
            progress.update(config.batch_size)

            if step % config.log_every_steps == 0 or step == total_steps:
                loss = output.loss.item()
                if not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"the loss became {loss} at step {step} (lr {lr:.3g}, precision "
                        f"{config.precision}); lower base_lr or use precision=fp32, then resume "
                        f"from the last good checkpoint with --resume."
                    )
                last_collapse = collapse_metric(output.online_projection).item()
                collapse_sum, collapse_count = collapse_sum + last_collapse, collapse_count + 1
                rate = train_images / (time.perf_counter() - train_started)
                log.write(
                    dict(
                        step=step,
                        epoch=step / steps_per_epoch,
                        loss=loss,
                        lr=lr,
                        tau=tau,
                        collapse=last_collapse,
                        images_per_second=rate,
                    )
                )
                progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}", tau=f"{tau:.4f}")

            epoch_done = step % steps_per_epoch == 0
            out_of_time = time.perf_counter() > deadline
            if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
                _check_finite(output.loss, step)
                write_checkpoint()
            if epoch_done or out_of_time:
                record: dict[str, Any] = dict(step=step, epoch=step // steps_per_epoch)
                if collapse_count:
                    record["collapse"] = collapse_sum / collapse_count
                collapse_sum, collapse_count = 0.0, 0
                knn_due = config.knn_every_epochs and record["epoch"] % config.knn_every_epochs == 0
                if monitor is not None and knn_due and epoch_done and step < total_steps:
                    record["knn_top1"] = monitor.score(model.online_encoder)
                    progress.write(f"epoch {record['epoch']}: kNN top-1 {record['knn_top1']:.2f}%")
                log.write(record)
                _check_finite(output.loss, step)
                write_checkpoint()
            if out_of_time:
                stopped_early = step < total_steps
                break
    progress.close()
    train_time = time.perf_counter() - train_started

    save_encoder(run_dir / ENCODER_NAME, model.online_encoder, config.backbone, config.cifar_stem)
    knn = knn_random = knn_pixels = None
    if monitor is not None:
        knn = monitor.score(model.online_encoder, full=True)
        if config.knn_references:
            torch.manual_seed(config.seed)
            random_encoder, _ = build_backbone(config.backbone, config.cifar_stem)
            random_encoder = random_encoder.to(device)
            if config.channels_last:
                random_encoder = random_encoder.to(memory_format=torch.channels_last)
            knn_random = monitor.score(random_encoder, full=True)
            knn_pixels = monitor.score_pixels()
    final: dict[str, Any] = dict(step=step, epoch=step / steps_per_epoch, final=True)
    for key, value in (
        ("knn_top1", knn),
        ("knn_top1_random_init", knn_random),
        ("knn_top1_pixels", knn_pixels),
    ):
        if value is not None:
            final[key] = value
    log.write(final)
    log.close()
    result = PretrainResult(
        run_dir=run_dir,
        steps=step,
        wall_time_s=time.perf_counter() - started,
        knn_top1=knn,
        knn_top1_random_init=knn_random,
        knn_top1_pixels=knn_pixels,
        collapse=last_collapse,
        peak_memory_mb=_peak_memory_mb(),
        images_per_second=train_images / max(train_time, 1e-9),
    )
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
    summary["stopped_early"] = stopped_early
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


def _check_finite(loss: torch.Tensor, step: int) -> None:
    """Never overwrite a good checkpoint with weights that a NaN or inf loss has reached."""
    if not torch.isfinite(loss).item():
        raise TrainingDiverged(
            f"the loss became {loss.item()} at step {step}; the last good checkpoint was kept. "
            "Lower base_lr or use precision=fp32, then resume with --resume."
        )
