"""The methods ``byol pretrain --method`` trains, built from a Config.

Every method has BYOL's interface, which is all the training loop and the evaluation rely on:
``forward(view_1, view_2)`` returns ``.loss`` and ``.online_projection``; ``update_target(tau)``
runs once after each optimizer step (a no-op without a target network); ``.online_encoder`` is
the network kept for downstream use; ``online_parameters()`` is what the optimizer trains.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from byol.barlow import BarlowTwins
from byol.byol import BYOL, BYOLOutput
from byol.config import METHODS, Config
from byol.moco import MoCo
from byol.simclr import SimCLR


class Method(Protocol):
    online_encoder: nn.Module

    def __call__(self, view_1: torch.Tensor, view_2: torch.Tensor) -> BYOLOutput: ...

    def update_target(self, tau: float) -> None: ...

    def online_parameters(self) -> list[nn.Parameter]: ...


def build_method(config: Config, encoder: nn.Module, feature_dim: int) -> nn.Module:
    """``config.method`` around ``encoder`` (which outputs ``feature_dim``-d representations)."""
    c = config
    if c.method == "byol":
        return BYOL(
            encoder,
            feature_dim,
            c.projector_hidden_dim,
            c.projection_dim,
            c.predictor_hidden_dim,
            c.use_predictor,
        )
    if c.method == "simclr":
        return SimCLR(
            encoder, feature_dim, c.projector_hidden_dim, c.projection_dim, c.simclr_temperature
        )
    if c.method == "barlow":
        return BarlowTwins(encoder, feature_dim, c.barlow_projector_dim, c.barlow_lambda)
    if c.method == "moco":
        return MoCo(
            encoder,
            feature_dim,
            c.projector_hidden_dim,
            c.projection_dim,
            c.moco_queue_size,
            c.moco_temperature,
        )
    raise ValueError(f"unknown method {c.method!r}; choose one of {', '.join(METHODS)}")
