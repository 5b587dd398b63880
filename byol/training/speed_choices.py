"""The speed switches of a run (``byol/speed``), from its settings and its shape."""

from __future__ import annotations

import torch

from byol import distributed, speed
from byol.config import Config
from byol.training.epochs import BatchedEpochs, PerImageEpochs
from byol.training.stream_epochs import StreamEpochs
from byol.views.cropped import CroppedViews


def view_path_of(views: BatchedEpochs | PerImageEpochs | StreamEpochs) -> str:
    """Where ``views`` makes its views (``epochs.view_path``'s names)."""
    if isinstance(views, BatchedEpochs):
        return "batched"
    made = views.view_pairs.views if isinstance(views, PerImageEpochs) else views.views
    return "cropped" if isinstance(made, CroppedViews) else "per-image"


def speed_choices(
    config: Config, ranks: distributed.Ranks, device: torch.device, precision: str, steps: int
) -> speed.SpeedChoices:
    """The speed switches for a run of ``steps`` steps of this shape (``byol/speed``)."""
    r, model = config.runtime, config.model
    shape = speed.RunShape(
        device_type=device.type,
        capability=speed.device_capability(device),
        backbone_kind=speed.backbone_kind(model.backbone, model.cifar_stem),
        image_size=config.data.image_size,
        precision=precision,
        steps=steps,
        batch_size=config.optim.batch_size // ranks.world_size,
        optimizer=config.optim.optimizer,
        world_size=ranks.world_size,
        accumulation_steps=config.optim.accumulation_steps,
        compiler_ready=speed.compiler_ready(device.type),
    )
    asked = speed.Requested(r.channels_last, r.compile, r.compile_mode, r.optimizer_kernels)
    return speed.choose(shape, asked)
