"""One optimizer step of any method, then one EMA step of its target."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from byol import distributed
from byol.methods import MethodOutput
from byol.runtime import autocast

Pairs = tuple[torch.Tensor, torch.Tensor]


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    view_1: torch.Tensor,
    view_2: torch.Tensor,
    lr: float,
    tau: float,
    precision: str = "fp32",
) -> MethodOutput:
    """One optimizer step on the online network, then one EMA step of the target."""
    return accumulated_step(model, optimizer, [(view_1, view_2)], lr, tau, precision)


def accumulated_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Iterable[Pairs],
    lr: float,
    tau: float,
    precision: str = "fp32",
    accumulation_steps: int = 1,
) -> MethodOutput:
    """One optimizer step on the gradient of ``accumulation_steps`` micro-batches, then one EMA
    step of the target: the step of one batch made of them all, except that batch-norm statistics
    are per micro-batch. ``model`` may be DDP-wrapped: gradients are averaged over ranks once, on
    the last micro-batch. Returns the mean loss and all projections of this rank's micro-batches.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.zero_grad(set_to_none=True)
    losses, projections = [], []
    for i, (view_1, view_2) in enumerate(micro_batches):
        with distributed.no_sync(model, skip=i < accumulation_steps - 1):
            with autocast(view_1.device, precision):
                output = model(view_1, view_2)
            (output.loss / accumulation_steps).backward()  # the mean over micro-batches
        losses.append(output.loss.detach())
        projections.append(output.online_projection)
    if len(losses) != accumulation_steps:
        raise RuntimeError(f"expected {accumulation_steps} micro-batches, got {len(losses)}")
    optimizer.step()
    distributed.unwrap(model).update_target(tau)  # every rank: same weights, same EMA
    return MethodOutput(torch.stack(losses).mean(), torch.cat(projections))
