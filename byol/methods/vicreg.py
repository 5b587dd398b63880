"""VICReg (Bardes, Ponce and LeCun, ICLR 2022, arXiv:2105.04906; docs/method.md, "Baselines").

one network:  x -> encoder f -> y -> expander h (Linear-BN-ReLU, Linear-BN-ReLU, Linear) -> z
loss:         lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]
  s  invariance: mean squared difference of the two views' embeddings, over batch and dims
  v  variance:   1/d sum_j max(0, gamma - sqrt(Var(z^j) + eps)), a hinge on each dim's std
  c  covariance: 1/d sum_{i != j} C(Z)_ij^2, C the DxD covariance of the batch's embeddings
No predictor, no target, no negatives, no batch standardisation: v keeps every dimension spread
(no collapse to a point) and c decorrelates them (no collapse onto a few informative ones).
Under torchrun all three terms are computed over the global batch, gathered with gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from byol import distributed
from byol.methods.barlow import wide_projector
from byol.methods.base import Method, MethodOutput, MethodSettings, method_name
from byol.methods.losses import at_least_float32
from byol.settings import setting


@dataclass(frozen=True)
class VICRegSettings(MethodSettings):
    """VICReg's expander and the weights of its three terms, at the paper's values."""

    name: str = method_name("vicreg")
    expander_dim: int = setting(8192, "width of each of the expander's three layers", low=1)
    lambda_: float = setting(25.0, "weight of the invariance term s(Z, Z')", low=0.0)
    mu: float = setting(25.0, "weight of the variance terms v(Z) + v(Z')", low=0.0)
    nu: float = setting(1.0, "weight of the covariance terms c(Z) + c(Z')", low=0.0)
    gamma: float = setting(1.0, "the std the variance hinge asks of each dimension", low=0.0)
    eps: float = setting(1e-4, "added to each variance under the square root", above=0.0)


class VICRegTerms(NamedTuple):
    """The three unweighted terms of the loss, each a scalar."""

    invariance: torch.Tensor  # s(Z, Z')
    variance: torch.Tensor  # v(Z) + v(Z')
    covariance: torch.Tensor  # c(Z) + c(Z')


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """v(Z) = 1/d sum_j max(0, gamma - sqrt(Var(z^j) + eps)) of NxD embeddings."""
    std = torch.sqrt(z.var(dim=0) + eps)  # D; unbiased, as the paper's Var
    return F.relu(gamma - std).mean()


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The d(d-1) off-diagonal entries of a DxD matrix. Read through a view rather than taken as
    total minus diagonal, so that squares near 1 on the diagonal cannot swamp small ones off it."""
    d = matrix.shape[0]
    return matrix.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """c(Z) = 1/d sum_{i != j} C(Z)_ij^2 of NxD embeddings, C(Z) their covariance."""
    n, d = z.shape
    centred = z - z.mean(dim=0)  # NxD
    covariance = centred.T @ centred / (n - 1)  # DxD, unbiased like the variance term
    return off_diagonal(covariance).pow(2).sum() / d


def vicreg_terms(
    z_1: torch.Tensor, z_2: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4
) -> VICRegTerms:
    """s, v + v' and c + c' of the two views' NxD embeddings (over several processes: the global
    batch gathered with gradients). Computed in float32 at least, autocast off: in bf16 the DxD
    covariance's products would round away the small off-diagonal entries c penalises."""
    with torch.autocast(z_1.device.type, enabled=False):
        z_1, z_2 = at_least_float32(z_1), at_least_float32(z_2)
        # Mean over batch *and* dims, as the paper's Algorithm 1 (F.mse_loss) and its code, for
        # which lambda = 25 was tuned; the paper's formula for s sums over dims, d times larger.
        invariance = F.mse_loss(z_1, z_2)
        variance = variance_term(z_1, gamma, eps) + variance_term(z_2, gamma, eps)
        covariance = covariance_term(z_1) + covariance_term(z_2)
    return VICRegTerms(invariance, variance, covariance)


def vicreg_loss(
    z_1: torch.Tensor,
    z_2: torch.Tensor,
    lambda_: float = 25.0,
    mu: float = 25.0,
    nu: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')] (the paper's loss; its Algorithm 1).

    The official code (facebookresearch/vicreg, main_vicreg.py) halves the variance sum, an
    effective mu of 12.5 (its issue #8); the paper's formula is kept here: set mu=12.5 for that.
    """
    s, v, c = vicreg_terms(z_1, z_2, gamma, eps)
    return lambda_ * s + mu * v + nu * c


class VICReg(Method):
    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        width: int = 8192,
        lambda_: float = 25.0,
        mu: float = 25.0,
        nu: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.online_encoder = encoder
        # The paper's expander is Barlow Twins' projector: 3 x 8192, BN and ReLU between (its
        # biases before BN are dropped: BN's shift makes them redundant).
        self.online_projector = wide_projector(feature_dim, width)
        self.weights = (lambda_, mu, nu)
        self.gamma, self.eps = gamma, eps

    Settings: ClassVar[type[MethodSettings]] = VICRegSettings

    @classmethod
    def from_settings(
        cls, settings: VICRegSettings, encoder: nn.Module, feature_dim: int, seed: int
    ) -> VICReg:
        s = settings
        return cls(encoder, feature_dim, s.expander_dim, s.lambda_, s.mu, s.nu, s.gamma, s.eps)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> MethodOutput:
        z_1 = self.online_projector(self.online_encoder(view_1))  # NxD
        z_2 = self.online_projector(self.online_encoder(view_2))  # NxD
        # The same global loss on every process; DDP's mean of their gradients is its gradient.
        all_z_1, all_z_2 = distributed.gather_with_grad(z_1), distributed.gather_with_grad(z_2)
        loss = vicreg_loss(all_z_1, all_z_2, *self.weights, self.gamma, self.eps)  # BxD each
        return MethodOutput(loss, z_1.detach())


METHOD = VICReg  # what byol.methods.build_method finds in this module
