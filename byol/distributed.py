"""Data-parallel training on PyTorch's own stack: torchrun, DistributedDataParallel, global BN.

One code path from one process to many nodes (docs/distributed.md). Under ``torchrun`` each process
reads RANK, WORLD_SIZE and LOCAL_RANK from the environment, joins the process group, and trains on
its share of every global batch; without torchrun the same code runs as one process and every
helper below is a no-op. ``config.optim.batch_size`` is always the global batch.

    torchrun --nproc_per_node 8 -m byol pretrain --preset imagenet-paper
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from byol.errors import ConfigError

# Rank 0 alone scores kNN and prepares datasets while the others wait in a collective; the default
# timeout (10 min for NCCL) would kill a run whose per-epoch kNN on a large bank takes longer.
TIMEOUT = timedelta(minutes=60)

# Small CPU-side collectives (stop flags, barriers) go through a gloo group even when training
# uses NCCL, so agreeing on "stop now?" every step never waits for the GPU's queue to drain.
_control_group: dist.ProcessGroup | None = None


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank among ``world_size`` processes, and on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes every file (metrics, checkpoints, encoder) and scores kNN."""
        return self.rank == 0


def launched() -> bool:
    """True in a process started by torchrun (or any launcher that sets its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_rank() -> int:
    """This process's rank as the launcher set it (0 without a launcher); usable before and after
    the process group exists."""
    return int(os.environ.get("RANK", 0))


def current() -> Ranks:
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    )


def is_distributed() -> bool:
    return current().world_size > 1


def local_device(device: torch.device, ranks: Ranks) -> torch.device:
    """``cuda`` without an index means this process's GPU, cuda:LOCAL_RANK, under torchrun."""
    if device.type == "cuda" and device.index is None and ranks.world_size > 1:
        return torch.device("cuda", ranks.local_rank)
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[tuple[Ranks, torch.device]]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs) for the duration of
    the block and yield (ranks, this process's device). A group someone else initialised (tests,
    notebooks) is used as is and left open; without a launcher this is one process, rank 0."""
    global _control_group
    owned = launched() and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized()
    if owned:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if device.type == "cuda":
            device = torch.device("cuda", device.index if device.index is not None else local_rank)
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=_device_id(device))
    ranks = current()
    device = local_device(device, ranks)
    if ranks.world_size > 1:
        gloo = dist.get_backend() == "gloo"
        _control_group = None if gloo else dist.new_group(backend="gloo", timeout=TIMEOUT)
    try:
        yield ranks, device
    finally:
        _control_group = None
        if owned:
            dist.destroy_process_group()


def _device_id(device: torch.device) -> torch.device | None:
    # Binding the group to its GPU lets NCCL set up eagerly; gloo on CPU takes no device.
    return device if device.type == "cuda" else None


def check_batch(batch_size: int, world_size: int, accumulation_steps: int) -> int:
    """The micro-batch each process runs: the global batch split over processes and
    accumulation steps, which must divide it."""
    parts = world_size * accumulation_steps
    if batch_size % parts:
        raise ConfigError(
            f"batch_size={batch_size} (the global batch) does not split into {world_size} "
            f"process(es) x {accumulation_steps} accumulation step(s); use a multiple of {parts}."
        )
    if batch_size // parts < 2:  # batch norm needs two images to compute a variance
        raise ConfigError(
            f"batch_size={batch_size} over {world_size} process(es) x {accumulation_steps} "
            "accumulation step(s) leaves one image per micro-batch, and batch norm needs two; "
            f"use at most accumulation_steps={max(batch_size // (2 * world_size), 1)}."
        )
    return batch_size // parts


def shard_slices(batch_size: int, ranks: Ranks, accumulation_steps: int = 1) -> list[slice]:
    """The positions of a global batch this rank trains on, one slice per micro-batch.

    Rank r takes the r-th contiguous block of batch_size / world_size positions and cuts it into
    ``accumulation_steps`` micro-batches: over all ranks the slices cover the batch exactly once.
    """
    micro = check_batch(batch_size, ranks.world_size, accumulation_steps)
    start = ranks.rank * batch_size // ranks.world_size
    return [slice(start + m * micro, start + (m + 1) * micro) for m in range(accumulation_steps)]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around the model when there are several processes, else the model.

    The gradients of the trainable (online) parameters are averaged over ranks; the target has no
    gradients and is updated by the same EMA on every rank. Buffers are not broadcast: with global
    BN they are identical everywhere, with per-device BN rank 0's are the ones saved.
    """
    if not is_distributed():
        return model
    device_ids = [device] if device.type == "cuda" else None
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def no_sync(model: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """While ``skip``, DDP keeps gradients local (accumulation micro-batches before the last)."""
    if skip and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    # torch.distributed.nn.functional is the autograd-aware collective API this file relies on;
    # it warns that it will be replaced, which would print once per process on every run.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
        warnings.filterwarnings("ignore", message=".*torch.distributed.nn.functional.*")
        yield


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 (rank order), keeping gradients.

    For losses that need the global batch (SimCLR's negatives, Barlow Twins' cross-correlation).
    The backward sums, over ranks, the gradients every rank's loss sends to each slice and returns
    each rank its own slice; DDP then averages parameter gradients over ranks. So the gradient is
    that of one process on the global batch when the mean over ranks of the returned losses is the
    global loss: each rank returns the loss of its own rows against the gathered columns (SimCLR),
    or the same global loss on every rank (Barlow Twins). Identity with one process.
    """
    if not is_distributed():
        return tensor
    with _quiet_deprecation():
        return torch.cat(torch.distributed.nn.functional.all_gather(tensor))


def all_reduce_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of ``tensor``; its gradient is the sum over ranks of the gradients."""
    if not is_distributed():
        return tensor
    with _quiet_deprecation():
        return torch.distributed.nn.functional.all_reduce(tensor)


@torch.no_grad()
def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0, without gradients (metrics)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The mean over ranks (the global batch's loss from each rank's micro-batch mean)."""
    if not is_distributed():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true everywhere if it is true on any rank: every rank stops at the same step
    when one of them gets a signal or runs out of time (a rank that left alone would hang the
    others in their next collective)."""
    if not is_distributed():
        return tuple(flags)
    values = torch.tensor([int(f) for f in flags], dtype=torch.int32)
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=_control_group)
    return tuple(bool(v) for v in values.tolist())


def barrier() -> None:
    if is_distributed():
        dist.barrier(group=_control_group)


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (downloads, extractions, caches), then the others, which find
    the files ready and so never write them concurrently."""
    is_main = current().is_main
    if not is_main:
        barrier()
    try:
        yield
    finally:
        if is_main:
            barrier()
