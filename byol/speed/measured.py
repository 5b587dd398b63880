"""The measurements ``auto`` chooses from (``byol/speed/__init__.py``): one row per measured
shape, each with its source; docs/speed.md gives the commands, machines and dates."""

from __future__ import annotations

from dataclasses import dataclass

# The two kinds of CPU a row can come from: the speedups differ between them (compile at 32 px:
# 0.98x on the Zen 4, 1.17x on the Ice Lake), so a row applies to CPUs of its own kind only.
NATIVE_BF16 = "native-bf16"  # avx512_bf16 or AMX (``byol.runtime.cpu_has_native_bf16``)
EMULATED_BF16 = "emulated-bf16"  # neither: bf16 is emulated and runs slower than fp32


@dataclass(frozen=True)
class Measured:
    """One measured shape: the speed of each combination of (channels_last, compile) relative to
    neither, the rate without either, and the extra time the first compiled steps took."""

    device_type: str
    backbone_kind: str
    sizes: tuple[int, int]  # the image sides (inclusive) the measurement stands for
    precision: str
    speedups: tuple[tuple[bool, bool, float], ...]  # (channels_last, compile, x as fast)
    images_per_second: float  # neither lever, at the measured batch, one process
    compile_seconds: float = 0.0
    cpu_kind: str = ""  # NATIVE_BF16 or EMULATED_BF16 on a CPU; "" on other devices
    source: str = ""


# Two CPUs, 2 threads, one process. Every CPU row states its kind and applies to CPUs of that kind
# only: a shape measured on one kind runs as before auto on the other. The torchvision rows were
# measured on ResNet-18 and stand for every torchvision ResNet but the 1/8-width one (deeper nets
# take longer steps, which only makes the compile estimate more conservative); the timm-vit rows
# on ViT-S with 8x8 tokens (patch 4 at 32 px, 8 at 64 px), trained with AdamW as its presets are.
# Sources in docs/speed.md, "Where auto's figures come from".
MEASURED: tuple[Measured, ...] = (
    # A 2-core AMD EPYC (Zen 4) with native bf16.
    Measured(
        "cpu",
        "torchvision",
        (32, 32),
        "fp32",
        ((True, False, 1.09), (False, True, 0.98), (True, True, 1.00)),
        images_per_second=274.6,
        compile_seconds=57.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (64, 64),
        "fp32",
        ((True, False, 1.19), (False, True, 1.11), (True, True, 1.11)),
        images_per_second=63.7,
        compile_seconds=65.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (96, 96),
        "fp32",
        ((True, False, 1.18), (False, True, 1.33), (True, True, 1.41)),
        images_per_second=24.7,
        compile_seconds=86.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (64, 64),
        "bf16",
        ((True, False, 1.16), (False, True, 1.10), (True, True, 1.09)),
        images_per_second=100.3,
        compile_seconds=89.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (96, 96),
        "bf16",
        ((True, False, 1.18), (False, True, 1.09), (True, True, 1.17)),
        images_per_second=42.6,
        compile_seconds=103.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (32, 32),
        "bf16",
        ((True, False, 1.12), (False, True, 0.98), (True, True, 1.00)),
        images_per_second=348.3,
        compile_seconds=67.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (224, 224),
        "fp32",
        ((True, False, 1.35), (False, True, 1.50), (True, True, 1.52)),
        images_per_second=4.1,
        compile_seconds=78.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 64",
    ),
    Measured(
        "cpu",
        "torchvision",
        (224, 224),
        "bf16",
        ((True, False, 1.19), (False, True, 1.11), (True, True, 1.15)),
        images_per_second=9.7,
        compile_seconds=74.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 64",
    ),
    Measured(
        "cpu",
        "torchvision",
        (28, 28),
        "bf16",
        ((True, False, 0.93),),
        images_per_second=234.0,
        cpu_kind=NATIVE_BF16,
        source="byol pretrain, the 5-epoch main job, 2026-11-24, batch 128",
    ),
    Measured(
        "cpu",
        "cifar-stem",
        (32, 32),
        "fp32",
        ((True, False, 1.25), (False, True, 1.42), (True, True, 1.43)),
        images_per_second=15.8,
        compile_seconds=69.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "cifar-stem",
        (32, 32),
        "bf16",
        ((True, False, 1.15), (False, True, 1.17), (True, True, 1.18)),
        images_per_second=37.5,
        compile_seconds=77.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "timm-vit",
        (32, 32),
        "fp32",
        ((True, False, 1.02), (False, True, 1.15), (True, True, 1.14)),
        images_per_second=6.2,
        compile_seconds=93.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 128",
    ),
    Measured(
        "cpu",
        "timm-vit",
        (64, 64),
        "fp32",
        ((True, False, 1.02), (False, True, 1.09), (True, True, 1.11)),
        images_per_second=6.5,
        compile_seconds=50.0,
        cpu_kind=NATIVE_BF16,
        source="speed_matrix.py 2026-12-04, batch 128",
    ),
    # A 2-core Intel Xeon (Ice Lake, AVX-512 without bf16), benchmarks/speed_matrix.py; rows of
    # one kind in order of size.
    Measured(
        "cpu",
        "torchvision",
        (32, 32),
        "fp32",
        ((True, False, 1.22), (False, True, 1.17), (True, True, 1.23)),
        images_per_second=154.6,
        compile_seconds=83.0,
        cpu_kind=EMULATED_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (64, 64),
        "fp32",
        ((True, False, 1.15), (False, True, 1.15), (True, True, 1.2)),
        images_per_second=34.7,
        compile_seconds=137.0,
        cpu_kind=EMULATED_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (96, 96),
        "fp32",
        ((True, False, 1.22), (False, True, 1.29), (True, True, 1.29)),
        images_per_second=19.0,
        compile_seconds=99.0,
        cpu_kind=EMULATED_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (224, 224),
        "fp32",
        ((True, False, 1.53), (False, True, 1.49), (True, True, 1.34)),
        images_per_second=3.1,
        compile_seconds=174.0,
        cpu_kind=EMULATED_BF16,
        source="speed_matrix.py 2026-12-04, batch 64",
    ),
    Measured(
        "cpu",
        "cifar-stem",
        (32, 32),
        "fp32",
        ((True, False, 1.45), (False, True, 1.38), (True, True, 1.35)),
        images_per_second=12.9,
        compile_seconds=128.0,
        cpu_kind=EMULATED_BF16,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "timm-vit",
        (32, 32),
        "fp32",
        ((True, False, 1.05), (False, True, 1.07), (True, True, 1.06)),
        images_per_second=8.5,
        compile_seconds=155.0,
        cpu_kind=EMULATED_BF16,
        source="speed_matrix.py 2026-12-04, batch 128",
    ),
    Measured(
        "cpu",
        "timm-vit",
        (64, 64),
        "fp32",
        ((True, False, 1.03), (False, True, 1.05), (True, True, 1.10)),
        images_per_second=7.0,
        compile_seconds=81.0,
        cpu_kind=EMULATED_BF16,
        source="speed_matrix.py 2026-12-04, batch 128",
    ),
)
