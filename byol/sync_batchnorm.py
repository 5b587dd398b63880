"""Batch-norm statistics over the global batch of several processes (arXiv:2006.07733, Section 3.3
computes them over all devices): torch's SyncBatchNorm on GPUs, ``CpuSyncBatchNorm`` on CPU
(gloo), where torch's has no kernel."""

from __future__ import annotations

import torch
from torch import nn

from byol.distributed import all_reduce_with_grad, is_distributed
from byol.errors import ConfigError


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm with statistics over the global batch, for CPU processes (gloo).

    torch's SyncBatchNorm (used on GPUs) refuses CPU tensors, and DDP refuses it on CPU modules;
    this layer computes the same statistics with differentiable all-reduces, so the gradient of
    the global mean and variance reaches every rank's inputs as in torch's backward. Parameters and
    buffers are BatchNorm's: state dicts load into either layer. One process: plain batch norm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)
        factor = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if factor is None:  # cumulative moving average, as nn.BatchNorm
                factor = 1.0 / float(self.num_batches_tracked)
        # Statistics in float64, as torch's CPU kernels accumulate them: in float32 a channel whose
        # spread is tiny against its mean loses its variance to cancellation.
        x = input.double()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype)
        total = all_reduce_with_grad(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        # Two passes (mean, then squared deviations) rather than E[x^2] - E[x]^2: no cancellation.
        var = all_reduce_with_grad(centred.pow(2).sum(dims)) / n
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape).double() + self.bias.view(shape).double()
        if self.track_running_stats:
            with torch.no_grad():  # running variance is unbiased, as torch's layers keep it
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), factor)
        return out.to(input.dtype)


PLAIN_BATCHNORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    CpuSyncBatchNorm,
)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm1d/2d/3d in ``module`` (online and target networks, projector and predictor
    heads alike) normalised with global-batch statistics: torch's SyncBatchNorm on GPUs,
    ``CpuSyncBatchNorm`` on CPU. Weights, biases and running statistics are kept.

    A subclass that adds work to its forward (timm's BatchNormAct2d applies its activation) would
    lose it in a plain replacement: on GPUs timm's own converter keeps it, on CPU it is refused.
    """
    extended = [
        type(m).__name__
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m) not in PLAIN_BATCHNORMS
    ]
    if extended and device.type != "cpu":
        import timm.layers  # only timm models hold such layers

        return timm.layers.convert_sync_batchnorm(module)
    if extended:
        raise ConfigError(
            f"this backbone's {extended[0]} layers cannot share batch statistics across CPU "
            "processes; set sync_batchnorm=false (per-process statistics)."
        )
    return _convert(module, device)


def _convert(module: nn.Module, device: torch.device) -> nn.Module:
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        synced = CpuSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:  # the same Parameter objects: an optimizer built before still holds them
            synced.weight, synced.bias = module.weight, module.bias
        synced.running_mean = module.running_mean
        synced.running_var = module.running_var
        synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, _convert(child, device))
    return module
