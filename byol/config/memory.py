"""How much memory a run needs, estimated from its config before anything is allocated, so that a
run that cannot fit is refused in one line naming the setting to lower instead of failing in an
allocation minutes (or terabytes) later.

The model is built on PyTorch's ``meta`` device, which records shapes and allocates nothing: its
parameters and buffers (MoCo's queue) are counted exactly, and one forward of a micro-batch on it
lists the size of every tensor that forward makes (activations, the N x N and D x D matrices of
the contrastive and redundancy losses). The figure is rough (backward's transient buffers and the
allocator's slack are left out), so a run is refused only when even it exceeds the memory the
device has; an allocation that fails later is reported by the CLI in one line as well.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from byol import settings
from byol.backbones import build_backbone
from byol.errors import OutOfMemory, memory_text
from byol.methods import Method, build_method

# Optimizer state per trained parameter, in copies of it: a momentum buffer, Adam's two moments.
_OPTIMIZER_COPIES = {"lars": 1, "sgd": 1, "adamw": 2}


def _about(size: float) -> str:
    return f"about {memory_text(size)}" if math.isfinite(size) else memory_text(size)


def device_memory(device: torch.device) -> int | None:
    """The memory of ``device`` in bytes (the machine's, capped by its cgroup, for the CPU);
    None where it cannot be known."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type != "cpu":
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    try:  # a container's limit, when it sets one (cgroup v2)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = "max"
    return min(total, int(limit)) if limit.isdigit() else total


class _Made(TorchDispatchMode):
    """Adds up the bytes of every new tensor an operation makes (views and in-place results
    share their input's memory and are left out); those made without gradients are freed soon,
    so only the largest of them counts."""

    def __init__(self) -> None:
        super().__init__()
        self.kept, self.largest_transient = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        if any(r.alias_info is not None for r in func._schema.returns):
            return out
        size = sum(t.numel() * t.element_size() for t in tree_leaves(out) if torch.is_tensor(t))
        if torch.is_grad_enabled():
            self.kept += size
        else:
            self.largest_transient = max(self.largest_transient, size)
        return out


class _TooLarge(Exception):  # noqa: N818 - a size, not an error
    """A tensor whose size in bytes overflows int64 even on the meta device."""


def _sized(make: Any) -> Any:
    try:
        return make()
    except RuntimeError as error:
        if "overflow" in str(error):
            raise _TooLarge from None
        raise


def _meta_model(config: Any) -> torch.nn.Module:
    return _sized(lambda: _build_on_meta(config))


def _build_on_meta(config: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(config)


def build_model(config: Any) -> Method:
    """``config.method.name`` (BYOL or a baseline) on a fresh encoder."""
    encoder, feature_dim = build_backbone(
        config.model.backbone,
        config.model.cifar_stem,
        config.data.image_size,
        config.model.backbone_kwargs,
    )
    return build_method(config.method, encoder, feature_dim, config.seed)


def _state_bytes(config: Any) -> float:
    """Weights and buffers, the gradients and optimizer state of the trained weights, and the
    copy of them all that writing a checkpoint makes (inf: beyond what int64 counts)."""
    try:
        method = _meta_model(config)
    except _TooLarge:
        return math.inf
    stored = sum(t.numel() * t.element_size() for t in [*method.parameters(), *method.buffers()])
    trained = sum(p.numel() * p.element_size() for p in method.online_parameters())
    optimizer = trained * _OPTIMIZER_COPIES.get(config.optim.optimizer, 2)
    checkpoint = stored + optimizer  # serialised in memory before it is written
    return stored + trained + optimizer + checkpoint  # trained: the gradients


def _forward_bytes(module: torch.nn.Module, inputs: list[torch.Tensor], grad: bool) -> float | None:
    """The bytes a forward of ``module`` keeps (with gradients) or peaks at (without), measured
    on the meta device (inf: beyond what int64 counts); None when the forward cannot run there
    (a method with device-specific steps: MoCo's shuffle generator, VICReg's autocast)."""
    made = _Made()
    try:
        with made, torch.set_grad_enabled(grad):
            module(*inputs)
    except RuntimeError as error:
        return math.inf if "overflow" in str(error) else None
    except Exception:  # noqa: BLE001 - an estimate we cannot make is no reason to refuse a run
        return None
    return made.kept + 3 * made.largest_transient  # in, out and workspace of the largest op


def _views(config: Any, batch: int) -> torch.Tensor:
    side = config.data.image_size
    return _sized(lambda: torch.empty(batch, 3, side, side, device="meta"))


@dataclass(frozen=True)
class Estimate:
    state: float  # weights, buffers, gradients, optimizer state (inf: beyond int64)
    activations: float  # of one micro-batch
    micro_batch: int

    @property
    def total(self) -> float:
        return self.state + self.activations


@functools.lru_cache(maxsize=16)  # a config is frozen, hence a key; runs repeat in one process
def training_estimate(config: Any, micro_batch: int, precision: str = "fp32") -> Estimate:
    """What one process of a run of ``config`` holds at its peak, in bytes."""
    state = _state_bytes(config)
    try:
        views = [_views(config, micro_batch), _views(config, micro_batch)]
    except _TooLarge:
        return Estimate(state, math.inf, micro_batch)
    # Eval mode: the same activations, and a faster forward (batch norm's statistics are
    # computed on the meta device by a slow decomposition).
    activations = 0.0
    if math.isfinite(state):
        method = _meta_model(config).eval()
        activations = _forward_bytes(method, views, grad=True)
        if activations is None:  # the encoder alone, on both views: most of it
            activations = 2 * (_forward_bytes(method.online_encoder, views[:1], grad=True) or 0)
    activations += 2 * views[0].numel() * views[0].element_size()
    if precision == "bf16":  # autocast computes most activations in half the bytes
        activations //= 2
    return Estimate(state, activations, micro_batch)


def _halved(config: Any, path: str) -> Any:
    value = settings.find(config, path)[0]
    return settings.replace(config, path, max(value // 2, 1))


def _largest_share(config: Any) -> str:
    """The setting whose halving saves the most weight and optimizer memory: a width of the
    method's heads, MoCo's queue, or (a ViT's position embedding) the image size. Of settings
    that save about as much (MoCo's queue is queue_size x projection_dim), the one furthest
    above its default."""
    defaults = type(config.method)()
    candidates = {
        f"method.{f.name}": value / max(getattr(defaults, f.name), 1)
        for f in dataclasses.fields(config.method)
        if type(value := getattr(config.method, f.name)) is int and value > 1
    }
    candidates["data.image_size"] = config.data.image_size / 224
    base = _state_bytes(config)
    halved = {path: _state_bytes(_halved(config, path)) for path in candidates}
    best = min(halved.values())
    if math.isfinite(best) and best > base * 7 / 8:
        return "model.backbone (a smaller encoder)"
    path = max((p for p in halved if halved[p] <= best * 1.1), key=candidates.get)
    return f"{path}={settings.find(config, path)[0]}"


def check_training_memory(
    config: Any, device: torch.device, micro_batch: int, precision: str, processes: int = 1
) -> None:
    """Refuse, in one line, a run that cannot fit in ``device``'s memory (shared by
    ``processes`` processes on a CPU), naming what to lower; nothing is allocated."""
    available = device_memory(device)
    if available is None:
        return
    available //= processes if device.type == "cpu" else 1
    estimate = training_estimate(config, micro_batch, precision)
    if estimate.total <= available:
        return
    if estimate.state > available / 2:
        lower = f"lower {_largest_share(config)}"
    else:
        per_image = estimate.activations / micro_batch
        fits = int((available - estimate.state) // max(per_image, 1))
        if fits >= 2:
            steps = config.optim.accumulation_steps * -(-micro_batch // fits)
            lower = (
                f"lower optim.batch_size={config.optim.batch_size}, or split each batch into "
                f"micro-batches of at most {fits} images (--set accumulation_steps={steps} "
                "or more)"
            )
        else:
            lower = f"lower data.image_size={config.data.image_size}"
    raise OutOfMemory(
        f"this run would need {_about(estimate.total)} of memory (weights, "
        f"gradients and optimizer state {memory_text(estimate.state)}; activations "
        f"{memory_text(estimate.activations)} for a micro-batch of {micro_batch} images), more "
        f"than the {memory_text(available)} of {device}; {lower}."
    )


def eval_view_bytes(config: Any, workers: int) -> float:
    """The eval view's resized image (the shorter side at image_size / eval_crop_fraction, as
    floats while resampling), in every worker that makes one."""
    side = config.data.image_size / config.monitor.eval_crop_fraction  # inf for a denormal
    return side * side * 3 * 4 * max(workers, 1)


def check_eval_memory(config: Any, device: torch.device, batch: int) -> None:
    """Refuse, in one line, an encoder and eval batch that cannot fit in ``device``'s memory:
    the frozen encoder's weights, one batch of eval views through it, and the resized images
    the eval transform makes."""
    available = device_memory(device)
    if available is None:
        return
    resized = eval_view_bytes(config, config.runtime.num_workers)
    try:
        encoder = _meta_model(config).online_encoder.eval()
        weights = sum(t.numel() * t.element_size() for t in encoder.state_dict().values())
        views = _views(config, batch)
        features = _forward_bytes(encoder, [views], grad=False) or 0
        features += views.numel() * views.element_size()
    except _TooLarge:
        weights, features = 0, math.inf
    if weights + features + resized <= available:
        return
    parts = {"resized": resized, "weights": weights, "features": features}
    largest = max(parts, key=parts.get)
    if largest == "resized" and config.monitor.eval_crop_fraction < 1:
        lower = f"raise monitor.eval_crop_fraction={config.monitor.eval_crop_fraction:g}"
    elif largest == "weights":
        lower = f"choose a smaller model.backbone than {config.model.backbone}"
    elif largest == "features" and features / batch * 2 < available - weights - resized:
        lower = f"lower the eval batch ({batch} images: --set eval_batch_size=N)"
    else:
        lower = f"lower data.image_size={config.data.image_size}"
    raise OutOfMemory(
        f"evaluating this encoder would need {_about(weights + features + resized)} "
        f"of memory (weights {memory_text(weights)}, a batch of {batch} views "
        f"{memory_text(features)}, resized images {memory_text(resized)}), more than the "
        f"{memory_text(available)} of {device}; {lower}."
    )
