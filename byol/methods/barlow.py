"""Barlow Twins (Zbontar et al., ICML 2021; docs/method.md, "Baselines").

one network:  x -> encoder f -> y -> wide projector (Linear-BN-ReLU, Linear-BN-ReLU, Linear) -> z
loss:         sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2, C = cross-correlation of the
              batch-standardised z of the two views. No predictor, no target, no negatives.
Under torchrun C is computed over the global batch, gathered with gradients from every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from byol import distributed
from byol.methods.base import Method, MethodOutput, MethodSettings, method_name
from byol.methods.losses import barlow_twins_loss
from byol.settings import setting


@dataclass(frozen=True)
class BarlowSettings(MethodSettings):
    """Barlow Twins' wide projector and the weight of its redundancy term."""

    name: str = method_name("barlow")
    projector_dim: int = setting(8192, "width of each of the projector's three layers", low=1)
    lambda_: float = setting(5e-3, "weight of the off-diagonal (redundancy) term", low=0.0)
    OLD_NAMES: ClassVar[dict[str, str]] = {
        "barlow_projector_dim": "projector_dim",
        "barlow_lambda": "lambda_",
    }


def wide_projector(in_dim: int, width: int = 8192) -> nn.Sequential:
    """The paper's 8192-8192-8192 projector: three linear layers, BN and ReLU between them."""
    return nn.Sequential(
        nn.Linear(in_dim, width, bias=False),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
        nn.Linear(width, width, bias=False),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
        nn.Linear(width, width, bias=False),
    )


class BarlowTwins(Method):
    def __init__(
        self, encoder: nn.Module, feature_dim: int, width: int = 8192, lambda_: float = 5e-3
    ) -> None:
        super().__init__()
        self.online_encoder = encoder
        self.online_projector = wide_projector(feature_dim, width)
        self.lambda_ = lambda_

    Settings: ClassVar[type[MethodSettings]] = BarlowSettings

    @classmethod
    def from_settings(
        cls, settings: BarlowSettings, encoder: nn.Module, feature_dim: int, seed: int
    ) -> BarlowTwins:
        return cls(encoder, feature_dim, settings.projector_dim, settings.lambda_)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> MethodOutput:
        z_1 = self.online_projector(self.online_encoder(view_1))  # NxD
        z_2 = self.online_projector(self.online_encoder(view_2))  # NxD
        # The same global loss on every process; DDP's mean of their gradients is its gradient.
        all_z_1, all_z_2 = distributed.gather_with_grad(z_1), distributed.gather_with_grad(z_2)
        return MethodOutput(barlow_twins_loss(all_z_1, all_z_2, self.lambda_), z_1.detach())


METHOD = BarlowTwins  # what byol.methods.build_method finds in this module
