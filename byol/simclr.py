"""SimCLR (Chen et al., 2020; PAPER.md section 8), in the shape of ``BYOL`` for comparisons.

one network:  x -> encoder f -> y -> projector g -> z       (no predictor, no target)
loss:         NT-Xent over the 2N views of a batch: the other view of the same image is the
              positive, the 2N - 2 views of the other images are the negatives.

Training is single-process, so the batch is the global batch: every view sees every other view
of the step as a negative.
"""

from __future__ import annotations

import torch
from torch import nn

from byol.byol import BYOLOutput  # the one output shape every method returns
from byol.heads import mlp
from byol.losses import nt_xent


class SimCLR(nn.Module):
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

    def online_parameters(self) -> list[nn.Parameter]:
        return [*self.online_encoder.parameters(), *self.online_projector.parameters()]

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> BYOLOutput:
        z_1 = self.online_projector(self.online_encoder(view_1))  # NxD
        z_2 = self.online_projector(self.online_encoder(view_2))  # NxD
        return BYOLOutput(nt_xent(z_1, z_2, self.temperature), z_1.detach())

    def update_target(self, tau: float) -> None:
        """SimCLR has no target network: nothing to update."""
