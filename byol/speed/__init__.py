"""How fast a run executes: memory layout, torch.compile and its mode, the optimizer's kernels,
the views' intra-op threads, pinned memory and non-blocking copies, chosen once per run.

``choose`` is a pure function of the run's shape and of what the config asks; ``auto`` reads
``MEASURED``, the one table of recorded measurements (docs/speed.md cites each row's source). A
CPU row applies to CPUs of its own kind only (``cpu_kind``: native or emulated bf16). On a CPU a
shape no row of its kind covers runs as before ``auto`` existed (contiguous, eager, torch's
default optimizer kernels): ``auto`` never guesses for an unmeasured shape. On CUDA, measured
nowhere yet, the rules follow PyTorch's guidance for tensor cores and CUDA graphs. No choice
moves a random draw; layout and compilation change results by floating-point rounding only.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import torch

from byol.backbones import TIMM
from byol.errors import ConfigError
from byol.runtime import compile_blocker, cpu_has_native_bf16
from byol.speed.measured import EMULATED_BF16, MEASURED, NATIVE_BF16, Measured

SWITCH = ("auto", "true", "false")
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
OPTIMIZER_KERNELS = ("auto", "for-loop", "foreach", "fused")
# A compiled run must win back twice its first steps' compile time before auto turns compile on:
# the compile cost varies with the machine and the cache, the gain with the load.
COMPILE_COST_MARGIN = 2.0
# On CUDA no compile gain is measured yet: auto compiles only runs long enough that a minute or
# two of compilation is a small share whatever the gain (78k steps: 800 CIFAR-10 epochs).
CUDA_COMPILE_MIN_STEPS = 10_000


@dataclass(frozen=True)
class RunShape:
    """What the choice depends on. ``capability``: on a CPU "native-bf16" or ""; on CUDA the
    compute capability as "major.minor". ``batch_size``: one process's images per step."""

    device_type: str
    capability: str
    backbone_kind: str
    image_size: int
    precision: str
    steps: int
    batch_size: int = 256
    optimizer: str = "lars"
    world_size: int = 1
    accumulation_steps: int = 1
    compiler_ready: bool = True


@dataclass(frozen=True)
class Requested:
    """What the config asks: each "auto" or a value, as the runtime settings hold them."""

    channels_last: str = "auto"
    compile: str = "auto"
    compile_mode: str = "auto"
    optimizer_kernels: str = "auto"


@dataclass(frozen=True)
class SpeedChoices:
    channels_last: bool
    compile: bool
    compile_mode: str  # "" when not compiled
    optimizer_kernels: str  # "for-loop" | "foreach" | "fused"
    pin_memory: bool
    non_blocking: bool
    why: str  # the measurement or rule that decided, in words
    view_threads: int = 0  # set by the caller: it depends on the data path (``view_threads``)

    def summary(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def short(self) -> str:
        """For the progress line: what runs differently from the eager contiguous default."""
        parts = ["channels_last"] if self.channels_last else []
        parts += [f"compile:{self.compile_mode}"] if self.compile else []
        parts.append(self.optimizer_kernels)
        parts += [f"views {self.view_threads} thr"] if self.view_threads else []
        return " ".join(parts)


def backbone_kind(backbone: str, cifar_stem: bool) -> str:
    """The kind ``MEASURED`` keys on: torchvision | cifar-stem | narrow | timm-vit | timm."""
    if backbone.startswith(TIMM):
        name = backbone.removeprefix(TIMM)
        return "timm-vit" if name.startswith(("vit", "deit", "eva")) else "timm"
    if backbone in ("resnet18-narrow", "resnet18-half"):
        return "narrow"  # their steps are far shorter than ResNet-18's: no row stands for them
    return "cifar-stem" if cifar_stem else "torchvision"


def device_capability(device: torch.device) -> str:
    """``RunShape.capability`` of ``device``: "native-bf16" or "" on a CPU, "major.minor" on
    CUDA, "" elsewhere."""
    if device.type == "cuda":
        return "{}.{}".format(*torch.cuda.get_device_capability(device))
    return NATIVE_BF16 if device.type == "cpu" and cpu_has_native_bf16() else ""


@functools.cache  # the toolchain does not change within a process
def compiler_ready(device_type: str = "cpu") -> bool:
    """Whether torch.compile's generated code can be built here (``runtime.compile_blocker``)."""
    return compile_blocker(torch.device(device_type)) is None


def choose(shape: RunShape, requested: Requested = Requested()) -> SpeedChoices:
    """Every speed switch of a run of ``shape``: what ``requested`` sets, ``auto`` chosen."""
    channels_last, compiled, why = _layout_and_compile(shape, requested)
    cuda = shape.device_type == "cuda"
    return SpeedChoices(
        channels_last=channels_last,
        compile=compiled,
        compile_mode=_compile_mode(shape, requested.compile_mode) if compiled else "",
        optimizer_kernels=_optimizer_kernels(shape, requested.optimizer_kernels),
        pin_memory=cuda,  # page-locked host batches copy to the GPU asynchronously
        non_blocking=cuda,
        why=why,
    )


def _layout_and_compile(shape: RunShape, requested: Requested) -> tuple[bool, bool, str]:
    fixed_layout = None if requested.channels_last == "auto" else requested.channels_last == "true"
    fixed_compile = None if requested.compile == "auto" else requested.compile == "true"
    if fixed_layout is not None and fixed_compile is not None:
        return fixed_layout, fixed_compile, "as set"
    row = measured_row(shape)
    if row is not None:
        return _from_measurements(shape, row, fixed_layout, fixed_compile)
    if shape.device_type == "cuda":
        layout, compiled, why = _cuda_rules(shape)
        layout = layout if fixed_layout is None else fixed_layout
        return layout, compiled if fixed_compile is None else fixed_compile, why
    why = "no measurement of this shape: as before auto (contiguous, eager)"
    return bool(fixed_layout), bool(fixed_compile), why


def cpu_kind(shape: RunShape) -> str:
    """The kind of CPU ``shape`` runs on, as ``Measured.cpu_kind`` names it; "" off a CPU."""
    if shape.device_type != "cpu":
        return ""
    return NATIVE_BF16 if shape.capability == NATIVE_BF16 else EMULATED_BF16


def measured_row(shape: RunShape) -> Measured | None:
    """The row of ``MEASURED`` that stands for ``shape``, if any: measured on a CPU of its kind
    (or for any, where a row names none) and in one process, as every row was."""
    if shape.world_size != 1:
        return None
    for row in MEASURED:
        if (
            row.device_type == shape.device_type
            and row.backbone_kind == shape.backbone_kind
            and row.sizes[0] <= shape.image_size <= row.sizes[1]
            and row.precision == shape.precision
            and row.cpu_kind in ("", cpu_kind(shape))
        ):
            return row
    return None


def _from_measurements(
    shape: RunShape, row: Measured, fixed_layout: bool | None, fixed_compile: bool | None
) -> tuple[bool, bool, str]:
    """The measured combination that finishes the run soonest, counting the compile time twice
    (``COMPILE_COST_MARGIN``); combinations never measured are not candidates."""
    step_seconds = shape.batch_size / row.images_per_second
    speedups = {(False, False): 1.0, **{(cl, co): x for cl, co, x in row.speedups}}
    candidates = {
        combo: x
        for combo, x in speedups.items()
        if fixed_layout in (None, combo[0])
        and fixed_compile in (None, combo[1])
        and (not combo[1] or fixed_compile or shape.compiler_ready)
    }
    if not candidates:  # the one combination the settings fix was never measured
        return bool(fixed_layout), bool(fixed_compile), f"not measured with this: {row.source}"

    def run_seconds(combo: tuple[bool, bool]) -> float:
        cost = COMPILE_COST_MARGIN * row.compile_seconds if combo[1] and not fixed_compile else 0
        return shape.steps * step_seconds / candidates[combo] + cost

    best = min(candidates, key=run_seconds)
    return *best, f"measured {candidates[best]:.2f}x: {row.source}"


def _cuda_rules(shape: RunShape) -> tuple[bool, bool, str]:
    """channels_last where convolutions run on tensor cores (bf16, compute capability 7.0 and
    up); compile for long runs where inductor can build."""
    major = int(shape.capability.split(".")[0]) if shape.capability else 0
    conv = shape.backbone_kind in ("torchvision", "cifar-stem", "narrow")
    layout = conv and shape.precision == "bf16" and major >= 7
    compiled = shape.compiler_ready and shape.steps >= CUDA_COMPILE_MIN_STEPS
    return layout, compiled, "CUDA rules (PyTorch's guidance; not yet measured here)"


def _compile_mode(shape: RunShape, requested: str) -> str:
    """CUDA graphs (reduce-overhead) on one GPU: every step has the same shapes (the last partial
    batch is dropped). Not under DDP, whose hooks run between the graphs, nor with several
    micro-batches, whose outputs one graph replay would overwrite. "default" elsewhere."""
    if requested != "auto":
        return requested
    one_graph = shape.world_size == 1 and shape.accumulation_steps == 1
    return "reduce-overhead" if shape.device_type == "cuda" and one_graph else "default"


def _optimizer_kernels(shape: RunShape, requested: str) -> str:
    """LARS is written with foreach kernels only. torch's SGD and AdamW: fused on CUDA, where it
    is one kernel per step; on a CPU, torch's own default (the for-loop) until measured."""
    if shape.optimizer == "lars":
        if requested not in ("auto", "foreach"):
            raise ConfigError(
                f"optimizer_kernels={requested} with optimizer=lars: LARS runs foreach kernels "
                "only; set optimizer_kernels=auto."
            )
        return "foreach"
    if requested != "auto":
        return requested
    return "fused" if shape.device_type == "cuda" else "for-loop"


def view_threads(
    requested: int, device_type: str, cpu_count: int, workers: int, step_threads: int, path: str
) -> int:
    """The intra-op threads that make views in the training process: ``requested`` when set;
    on a CPU with crops cut in DataLoader workers, the cores the workers leave (at least one:
    two threads beside two busy workers on two cores made views ~18x slower, BENCHMARKS.md);
    else the step's."""
    if requested:
        return requested
    if device_type == "cpu" and path == "cropped" and workers:
        return max(1, min(step_threads, cpu_count - workers))
    return step_threads
