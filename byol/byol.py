"""BYOL (PAPER.md section 1): an online network learns to predict a slow-moving target network.

online:  x -> encoder f_theta -> y -> projector g_theta -> z -> predictor q_theta -> p
target:  x -> encoder f_xi    -> y' -> projector g_xi   -> z'      (no gradient)
loss:    L(p(v), z'(v')) + L(p(v'), z'(v)),  L = 2 - 2 cos
update:  theta <- optimizer step;  xi <- tau xi + (1 - tau) theta
"""

import copy
from typing import NamedTuple

import torch
from torch import nn

from byol.heads import mlp
from byol.losses import byol_loss


class BYOLOutput(NamedTuple):
    loss: torch.Tensor  # scalar, L + L~ (summed over the two view orders)
    online_projection: torch.Tensor  # NxD, z of the first view, detached: for the collapse metric


class BYOL(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        projector_hidden_dim: int = 4096,
        projection_dim: int = 256,
        predictor_hidden_dim: int = 4096,
        use_predictor: bool = True,
    ) -> None:
        super().__init__()
        self.online_encoder = encoder
        self.online_projector = mlp(feature_dim, projector_hidden_dim, projection_dim)
        self.predictor = (
            mlp(projection_dim, predictor_hidden_dim, projection_dim)
            if use_predictor
            else nn.Identity()
        )
        # The target starts as a copy of the online encoder and projector and is never trained.
        self.target_encoder = copy.deepcopy(self.online_encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.online_projector).requires_grad_(False)

    def online_parameters(self) -> list[nn.Parameter]:
        """What the optimizer trains: online encoder, projector and predictor."""
        modules = (self.online_encoder, self.online_projector, self.predictor)
        return [p for m in modules for p in m.parameters()]

    def train_predictor_only(self, only: bool) -> None:
        """Freeze (or unfreeze) the online encoder and projector, so the optimizer trains q_theta
        alone: the target is the online copy then, so its EMA step changes nothing either."""
        self.online_encoder.requires_grad_(not only)
        self.online_projector.requires_grad_(not only)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> BYOLOutput:
        z_1 = self.online_projector(self.online_encoder(view_1))  # NxD
        z_2 = self.online_projector(self.online_encoder(view_2))  # NxD
        p_1, p_2 = self.predictor(z_1), self.predictor(z_2)  # NxD
        with torch.no_grad():  # stop-gradient: the target only provides regression targets
            target_1 = self.target_projector(self.target_encoder(view_1))  # NxD
            target_2 = self.target_projector(self.target_encoder(view_2))  # NxD
        loss = byol_loss(p_1, target_2) + byol_loss(p_2, target_1)
        return BYOLOutput(loss, z_1.detach())

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """xi <- tau * xi + (1 - tau) * theta, for encoder and projector, in one fused op."""
        online = [*self.online_encoder.parameters(), *self.online_projector.parameters()]
        target = [*self.target_encoder.parameters(), *self.target_projector.parameters()]
        torch._foreach_lerp_(target, online, 1.0 - tau)
