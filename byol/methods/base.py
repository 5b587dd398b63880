"""What every method is to the training loop, and the one EMA.

A method is an ``nn.Module`` that maps two batches of views to a ``MethodOutput`` and declares,
instead of the loop knowing it by name:
- what the optimizer trains (``online_parameters``) and what is kept (``online_encoder``);
- its momentum pairs, (online module, target module): after every optimizer step each target
  moves towards its online twin, xi <- tau xi + (1 - tau) theta (arXiv:2006.07733, Eq. 1);
- learning-rate scales for some of its modules (``lr_scales``);
- per-step hooks: ``before_step(step)`` (BYOL's predictor warm-up, MoCo's shuffle generator)
  and ``after_target_update()`` (MoCo's queue);
- what it cannot do under several processes (``check_world_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from byol.settings import setting


class MethodOutput(NamedTuple):
    loss: torch.Tensor  # scalar, summed over the two view orders
    online_projection: torch.Tensor  # NxD, of the first view, detached: for the collapse metric


@torch.no_grad()
def ema_update(pairs: list[tuple[nn.Module, nn.Module]], tau: float) -> None:
    """xi <- tau * xi + (1 - tau) * theta over every (online, target) pair, in one fused op."""
    if not pairs:
        return
    online = [p for source, _ in pairs for p in source.parameters()]
    target = [p for _, copy in pairs for p in copy.parameters()]
    torch._foreach_lerp_(target, online, 1.0 - tau)


@dataclass(frozen=True)
class MethodSettings:
    """A method's own settings: each method subclasses this next to its code, with its name as
    the default of ``name`` and every field declared with ``byol.settings.setting``."""

    name: str = setting("byol", "the method: a name in byol.methods.METHODS")
    # Flat names of earlier releases (config.json of old run folders) -> this class's fields.
    OLD_NAMES: ClassVar[dict[str, str]] = {}


@dataclass(frozen=True)
class ProjectorSettings(MethodSettings):
    """The settings of a method with BYOL's projector g (arXiv:2006.07733, Section 3.3), which
    SimCLR and MoCo share so that only the objectives differ."""

    projector_hidden_dim: int = setting(4096, "hidden width of the projector g", low=1)
    projection_dim: int = setting(256, "output width of the projector g", low=1)


def method_name(name: str) -> str:
    """The ``name`` field of a method's settings class: its registry name as the default."""
    return setting(name, "the method: a name in byol.methods.METHODS")


class Method(nn.Module):
    """The interface the loop, the checkpoints and the evaluation rely on."""

    online_encoder: nn.Module
    Settings: ClassVar[type[MethodSettings]]

    @classmethod
    def from_settings(
        cls, settings: MethodSettings, encoder: nn.Module, feature_dim: int, seed: int
    ) -> Method:
        """This method around ``encoder`` (``feature_dim``-d outputs); ``seed`` seeds any random
        stream the method keeps of its own (MoCo's batch shuffle)."""
        raise NotImplementedError

    def online_parameters(self) -> list[nn.Parameter]:
        """What the optimizer trains: every parameter outside the momentum targets."""
        targets = {id(p) for _, target in self.momentum_pairs() for p in target.parameters()}
        return [p for p in self.parameters() if id(p) not in targets]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) module pairs that the EMA moves; none for methods without a target."""
        return []

    def lr_scales(self) -> dict[nn.Module, float]:
        """Modules whose learning rate is a multiple of the others' (parameter groups)."""
        return {}

    def check_world_size(self, world_size: int) -> None:
        """Raise a ConfigError when these settings cannot run in ``world_size`` processes."""

    def before_step(self, step: int) -> None:
        """Called before optimizer step ``step`` (counted from 0, also after a resume)."""

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """After each optimizer step: the EMA of every momentum pair, then the method's update."""
        ema_update(self.momentum_pairs(), tau)
        self.after_target_update()

    def after_target_update(self) -> None:
        """The method's own bookkeeping after the EMA (MoCo: this step's keys into the queue)."""
