"""SimCLR (Chen et al., ICML 2020; docs/method.md, "Baselines"): BYOL's contrastive baseline.

one network:  x -> encoder f -> y -> projector g -> z       (no predictor, no target)
loss:         NT-Xent over the 2N views of a batch: the other view of the same image is the
              positive, the 2N - 2 views of the other images are the negatives.

Under torchrun every process gathers the projections of all processes (with gradients), so every
view still sees every other view of the global batch as a negative, as with one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from byol import distributed
from byol.methods.base import (
    Method,
    MethodOutput,
    MethodSettings,
    ProjectorSettings,
    method_name,
)
from byol.methods.heads import mlp
from byol.methods.losses import nt_xent
from byol.settings import setting


@dataclass(frozen=True)
class SimCLRSettings(ProjectorSettings):
    """SimCLR with BYOL's projector, so that only the objective differs."""

    name: str = method_name("simclr")
    temperature: float = setting(0.1, "NT-Xent temperature (the paper's range: 0.1-0.5)", above=0.0)
    OLD_NAMES: ClassVar[dict[str, str]] = {"simclr_temperature": "temperature"}


class SimCLR(Method):
    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        projector_hidden_dim: int = 4096,
        projection_dim: int = 256,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        self.online_encoder = encoder
        # BYOL's projector, as in the paper's SimCLR reproduction, so only the objective differs.
        self.online_projector = mlp(feature_dim, projector_hidden_dim, projection_dim)
        self.temperature = temperature

    Settings: ClassVar[type[MethodSettings]] = SimCLRSettings

    @classmethod
    def from_settings(
        cls, settings: SimCLRSettings, encoder: nn.Module, feature_dim: int, seed: int
    ) -> SimCLR:
        s = settings
        return cls(encoder, feature_dim, s.projector_hidden_dim, s.projection_dim, s.temperature)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> MethodOutput:
        z_1 = self.online_projector(self.online_encoder(view_1))  # NxD
        z_2 = self.online_projector(self.online_encoder(view_2))  # NxD
        loss = nt_xent(
            z_1,
            z_2,
            self.temperature,
            all_z_1=distributed.gather_with_grad(z_1),  # the global batch's views: negatives
            all_z_2=distributed.gather_with_grad(z_2),
            offset=distributed.current().rank * len(z_1),  # where this process's rows are in it
        )
        return MethodOutput(loss, z_1.detach())


METHOD = SimCLR  # what byol.methods.build_method finds in this module
