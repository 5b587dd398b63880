"""Where and in what precision a run computes: the device, the precision (resolved once, then
shared by training, the kNN monitor, the probes and the protocols), and peak memory."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import resource
import shutil
import subprocess
import sysconfig
from pathlib import Path

import torch

from byol.backbones import last_stage_input_side
from byol.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The device ``name`` means here; one this build or machine lacks is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = (
                "this PyTorch build has no CUDA"
                if torch.version.cuda is None
                else "none is visible"
            )
            raise ConfigError(f"device={name!r} but {why}; use --set device=cpu (or auto).")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={name!r} but {torch.cuda.device_count()} CUDA device(s) are visible "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); choose one of them."
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "device='mps' but this PyTorch build or machine has no MPS (Apple GPU) support; "
            "use --set device=cpu (or auto)."
        )
    return torch.device(name)


def describe_machine() -> str:
    """The CPU's model and the cores this process may use (and the GPU when torch sees one), with
    torch's version: the machine line of reports and benchmarks."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = names[0] if names else model
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{model}, {len(os.sched_getaffinity(0))} cores{gpu}, torch {torch.__version__}"


@functools.cache  # asked once per process; the CPU's flags do not change
def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bf16 natively (x86 avx512_bf16 or amx_bf16). Read from the kernel's
    flags because torch's own check also says yes where bf16 is emulated, and slower than fp32."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    lines = [line for line in text.splitlines() if line.startswith("flags")]
    flags = {flag for line in lines for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def device_precision(device: torch.device, precision: str) -> str:
    """``auto`` is bf16 on a CUDA device that has it and on a CPU with native bf16 (1.24x faster
    on the main job with the same kNN, BENCHMARKS.md); fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def resolve_precision(
    device: torch.device, precision: str, image_size: int, cifar_stem: bool = False
) -> str:
    """The precision a run computes in, "fp32" or "bf16". ``auto`` keeps fp32 on a CPU where
    layer4's stride-2 convolution sees a 1x1 map (16 px and below with the torchvision stem):
    oneDNN's bf16 weight gradient of that convolution holds NaN there (BENCHMARKS.md, "bf16
    pitfall"). An explicit ``bf16`` is obeyed."""
    resolved = device_precision(device, precision)
    if (
        precision == "auto"
        and resolved == "bf16"
        and device.type == "cpu"
        and last_stage_input_side(image_size, cifar_stem) <= 1
    ):
        return "fp32"
    return resolved


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for a resolved ``precision`` of "bf16", nothing for "fp32"."""
    if device_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_parallelism(threads: int, num_workers: int) -> None:
    """Refuse counts of threads or DataLoader workers far beyond this machine's cores: OpenMP
    allocates state per thread up front (two billion threads abort the process) and each worker
    is a process of its own."""
    cores = os.cpu_count() or 1
    most = max(4 * cores, 32)
    for name, count in (("threads", threads), ("num_workers", num_workers)):
        if count > most:
            raise ConfigError(
                f"runtime.{name}={count} is far more than the {cores} CPU cores here; use at "
                f"most {most} (--set {name}=N)."
            )


def apply_threads(threads: int, num_workers: int) -> None:
    """Use ``threads`` intra-op threads (0: torch's default), once ``check_parallelism`` passes."""
    check_parallelism(threads, num_workers)
    if threads:
        torch.set_num_threads(threads)


def compile_blocker(device: torch.device) -> str | None:
    """What torch.compile would lack on ``device``, found without compiling anything (None:
    nothing): its generated code is built with a C/C++ compiler against the Python headers (and
    on CUDA by triton), and without them it fails only after minutes of tracing."""
    headers = Path(sysconfig.get_path("include")) / "Python.h"
    if not headers.is_file():
        return f"the Python headers ({headers} is missing; install python3-dev or alike)"
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "triton (pip install triton)"
        names, what = [os.environ.get("CC", ""), "gcc", "cc", "clang"], "a working C compiler"
    elif device.type == "cpu":
        names, what = [os.environ.get("CXX", ""), "g++", "c++", "clang++"], "a working C++ compiler"
    else:
        return None
    if not any(_runs(name) for name in names):
        variable = "$CC" if device.type == "cuda" else "$CXX"
        return f"{what} (none of {', '.join(names[1:])} or {variable} runs)"
    return None


def _runs(command: str) -> bool:
    """Whether ``command --version`` runs and succeeds (milliseconds)."""
    words = command.split()
    if not words or shutil.which(words[0]) is None:
        return False
    try:
        done = subprocess.run([*words, "--version"], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def peak_memory_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024
