"""BYOL (arXiv:2006.07733, Section 3.1): an online network learns to predict a slow-moving target.

online:  x -> encoder f_theta -> y -> projector g_theta -> z -> predictor q_theta -> p
target:  x -> encoder f_xi    -> y' -> projector g_xi   -> z'      (no gradient)
loss:    L(p(v), z'(v')) + L(p(v'), z'(v)),  L = 2 - 2 cos
update:  theta <- optimizer step;  xi <- tau xi + (1 - tau) theta
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from byol.errors import ConfigError
from byol.methods.base import (
    Method,
    MethodOutput,
    MethodSettings,
    ProjectorSettings,
    method_name,
)
from byol.methods.heads import mlp
from byol.methods.losses import byol_loss
from byol.settings import setting


@dataclass(frozen=True)
class BYOLSettings(ProjectorSettings):
    """BYOL's heads (arXiv:2006.07733, Section 3.3) and two knobs for short budgets."""

    name: str = method_name("byol")
    predictor_hidden_dim: int = setting(4096, "hidden width of the predictor q", low=1)
    use_predictor: bool = setting(True, "false: BYOL without q_theta (an ablation; it collapses)")
    # Not in the paper, for short budgets: q_theta alone for the first steps, so that its random
    # initial map does not steer the encoder (docs/cpu-preset.md measures it).
    predictor_warmup_steps: int = setting(
        0, "train the predictor alone for this many first steps (not in the paper)", low=0
    )
    # Not in the paper either: Tian et al. (ICML 2021) find that a faster predictor helps.
    predictor_lr_scale: float = setting(
        1.0,
        "the predictor's learning rate is this times the others' (not in the paper)",
        above=0.0,
    )


class BYOL(Method):
    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        projector_hidden_dim: int = 4096,
        projection_dim: int = 256,
        predictor_hidden_dim: int = 4096,
        use_predictor: bool = True,
        predictor_lr_scale: float = 1.0,
        predictor_warmup_steps: int = 0,
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
        self.predictor_lr_scale = predictor_lr_scale
        # Without q_theta there is nothing to warm up.
        self.predictor_warmup_steps = predictor_warmup_steps if use_predictor else 0

    Settings: ClassVar[type[MethodSettings]] = BYOLSettings

    @classmethod
    def from_settings(
        cls, settings: BYOLSettings, encoder: nn.Module, feature_dim: int, seed: int
    ) -> BYOL:
        s = settings
        return cls(
            encoder,
            feature_dim,
            s.projector_hidden_dim,
            s.projection_dim,
            s.predictor_hidden_dim,
            s.use_predictor,
            s.predictor_lr_scale,
            s.predictor_warmup_steps,
        )

    def online_parameters(self) -> list[nn.Parameter]:
        """What the optimizer trains: online encoder, projector and predictor."""
        modules = (self.online_encoder, self.online_projector, self.predictor)
        return [p for m in modules for p in m.parameters()]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.online_encoder, self.target_encoder),
            (self.online_projector, self.target_projector),
        ]

    def lr_scales(self) -> dict[nn.Module, float]:
        # Not in the paper (docs/method.md): q_theta may learn faster than the rest.
        return {self.predictor: self.predictor_lr_scale}

    def check_world_size(self, world_size: int) -> None:
        if self.predictor_warmup_steps and world_size > 1:
            raise ConfigError(
                "predictor_warmup_steps works in one process only (DDP cannot skip the encoder's "
                "gradients); set predictor_warmup_steps=0 or run without torchrun."
            )

    def before_step(self, step: int) -> None:
        warmup = self.predictor_warmup_steps
        if warmup and step <= warmup:  # toggled until the step it ends, then left alone
            self.train_predictor_only(step < warmup)

    def train_predictor_only(self, only: bool) -> None:
        """Freeze (or unfreeze) the online encoder and projector, so the optimizer trains q_theta
        alone: the target is the online copy then, so its EMA step changes nothing either."""
        self.online_encoder.requires_grad_(not only)
        self.online_projector.requires_grad_(not only)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> MethodOutput:
        z_1 = self.online_projector(self.online_encoder(view_1))  # NxD
        z_2 = self.online_projector(self.online_encoder(view_2))  # NxD
        p_1, p_2 = self.predictor(z_1), self.predictor(z_2)  # NxD
        with torch.no_grad():  # stop-gradient: the target only provides regression targets
            target_1 = self.target_projector(self.target_encoder(view_1))  # NxD
            target_2 = self.target_projector(self.target_encoder(view_2))  # NxD
        loss = byol_loss(p_1, target_2) + byol_loss(p_2, target_1)
        return MethodOutput(loss, z_1.detach())


METHOD = BYOL  # what byol.methods.build_method finds in this module
