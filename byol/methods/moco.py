"""MoCo v2 (Chen et al., 2020; docs/method.md, "Baselines"), a momentum method like BYOL.

query (online):  x -> encoder f_theta -> projector g_theta -> q
key (momentum):  x -> encoder f_xi    -> projector g_xi    -> k   (no gradient; EMA of online)
loss:            InfoNCE(q(v), k(v')) + InfoNCE(q(v'), k(v)): each query against the key of the
                 other view (positive) and a queue of keys from earlier steps (negatives).
update:          after the optimizer step, xi <- tau xi + (1 - tau) theta (the loop's tau
                 schedule is MoCo's momentum), then this step's keys replace the oldest queued.

Under torchrun every process computes the loss of its own queries (DDP averages the gradients) and
enqueues the keys of all processes, so the queues stay identical and hold the global batch's keys.

The loss is symmetrised (both view orders, summed, as BYOL's) so every method sees the same views
per step; the original MoCo v2 uses one order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
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
from byol.methods.losses import at_least_float32, info_nce
from byol.settings import setting


@dataclass(frozen=True)
class MoCoSettings(ProjectorSettings):
    """MoCo v2 with BYOL's projector; its momentum is the run's tau schedule."""

    name: str = method_name("moco")
    queue_size: int = setting(65536, "negatives kept from earlier steps", low=1)
    temperature: float = setting(0.2, "InfoNCE temperature", above=0.0)
    OLD_NAMES: ClassVar[dict[str, str]] = {
        "moco_queue_size": "queue_size",
        "moco_temperature": "temperature",
    }


class MoCo(Method):
    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        projector_hidden_dim: int = 4096,
        projection_dim: int = 256,
        queue_size: int = 65536,
        temperature: float = 0.2,
        bn_splits: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.online_encoder = encoder
        self.online_projector = mlp(feature_dim, projector_hidden_dim, projection_dim)
        self.target_encoder = copy.deepcopy(self.online_encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.online_projector).requires_grad_(False)
        self.temperature, self.bn_splits = temperature, bn_splits
        # Buffers, so the queue travels with the model's state_dict into checkpoints.
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, projection_dim), dim=1))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        self._keys: torch.Tensor | None = None  # this step's keys, enqueued by update_target
        # The batch-norm shuffle draws from its own generator, seeded from the step number in
        # before_step, so a resumed run repeats it and nothing else draws from it.
        self.seed, self._shuffle_seed = seed, seed * 1_000_003
        self._shuffle: torch.Generator | None = None

    Settings: ClassVar[type[MethodSettings]] = MoCoSettings

    @classmethod
    def from_settings(
        cls, settings: MoCoSettings, encoder: nn.Module, feature_dim: int, seed: int
    ) -> MoCo:
        s = settings
        return cls(
            encoder,
            feature_dim,
            s.projector_hidden_dim,
            s.projection_dim,
            s.queue_size,
            s.temperature,
            seed=seed,
        )

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.online_encoder, self.target_encoder),
            (self.online_projector, self.target_projector),
        ]

    def before_step(self, step: int) -> None:
        self._shuffle_seed, self._shuffle = self.seed * 1_000_003 + step, None

    def _shuffle_generator(self, device: torch.device) -> torch.Generator:
        if self._shuffle is None or self._shuffle.device != device:
            self._shuffle = torch.Generator(device).manual_seed(self._shuffle_seed)
        return self._shuffle

    def _query(self, view: torch.Tensor) -> torch.Tensor:
        chunks = view.chunk(self.bn_splits)  # batch-norm statistics per chunk, like per-GPU BN
        return torch.cat([self.online_projector(self.online_encoder(c)) for c in chunks])

    @torch.no_grad()
    def _key(self, view: torch.Tensor) -> torch.Tensor:
        # Shuffle BN on one device: keys see batch-norm statistics of other images than their
        # queries do, so the loss cannot be lowered by matching batch statistics.
        generator = self._shuffle_generator(view.device)
        order = torch.randperm(len(view), device=view.device, generator=generator)
        chunks = view[order].chunk(self.bn_splits)
        keys = torch.cat([self.target_projector(self.target_encoder(c)) for c in chunks])
        return keys[order.argsort()]

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> MethodOutput:
        q_1, q_2 = self._query(view_1), self._query(view_2)  # NxD
        k_1, k_2 = self._key(view_1), self._key(view_2)  # NxD
        negatives = self.queue.clone()  # KxD, the keys of earlier steps
        loss = info_nce(q_1, k_2, negatives, self.temperature)
        loss = loss + info_nce(q_2, k_1, negatives, self.temperature)
        if self.training:
            # Every process's keys, in the one-process order: all first views, then all second.
            keys = torch.cat([distributed.gather(k_1), distributed.gather(k_2)])
            # Accumulation runs several forwards per optimizer step: all their keys are enqueued.
            self._keys = keys if self._keys is None else torch.cat([self._keys, keys])
        return MethodOutput(loss, q_1.detach())

    @torch.no_grad()
    def after_target_update(self) -> None:
        """After the momentum update of the key encoder: this step's keys into the queue."""
        if self._keys is not None:
            self.enqueue(self._keys)
            self._keys = None

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """First in, first out: the newest keys overwrite the oldest, wrapping around the end."""
        size = self.queue.shape[0]
        keys = F.normalize(at_least_float32(keys[-size:]), dim=1)
        slots = (self.queue_pointer + torch.arange(len(keys), device=keys.device)) % size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_pointer.copy_((self.queue_pointer + len(keys)) % size)


METHOD = MoCo  # what byol.methods.build_method finds in this module
