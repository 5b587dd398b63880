"""The measurements ``auto`` chooses from (``byol/speed/__init__.py``): one row per measured
shape, each with its source; docs/speed.md gives the commands, machines and dates."""

from __future__ import annotations

from dataclasses import dataclass


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
    needs: str = ""  # a capability the row's machine had (native-bf16: avx512_bf16 or AMX)
    source: str = ""


# Two CPUs, 2 threads, one process, torchvision ResNet-18 (the kind's rows stand for every
# torchvision ResNet but the 1/8-width one: deeper nets take longer steps, which only makes the
# compile estimate more conservative). The first rows come from a 2-core AMD EPYC (Zen 4) with
# native bf16 and apply to CPUs that have it; the rows after them from a 2-core Intel Xeon (Ice
# Lake, AVX-512 without bf16) and apply to the rest: the two differ most in what channels_last
# gives at 32 px (0.92x and 1.22x). Sources in docs/speed.md, "Where auto's figures come from".
MEASURED: tuple[Measured, ...] = (
    Measured(
        "cpu",
        "torchvision",
        (32, 32),
        "fp32",
        ((True, False, 0.92), (False, True, 1.09), (True, True, 1.17)),
        images_per_second=215.0,
        compile_seconds=55.0,
        needs="native-bf16",
        source="MEASUREMENTS.md 2026-11-23, the plain step, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (96, 96),
        "fp32",
        ((True, False, 1.28), (False, True, 1.19)),
        images_per_second=20.2,
        compile_seconds=55.0,
        needs="native-bf16",
        source="throughput.py 2026-12-03 (channels_last), the plain step 2026-11-23 (compile)",
    ),
    Measured(
        "cpu",
        "torchvision",
        (96, 96),
        "bf16",
        ((True, False, 1.25),),
        images_per_second=40.6,
        needs="native-bf16",
        source="throughput.py 2026-12-03, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (28, 28),
        "bf16",
        ((True, False, 0.93),),
        images_per_second=234.0,
        needs="native-bf16",
        source="byol pretrain, the 5-epoch main job, 2026-11-24, batch 128",
    ),
    Measured(
        "cpu",
        "cifar-stem",
        (32, 32),
        "fp32",
        ((True, False, 1.15),),
        images_per_second=18.5,
        needs="native-bf16",
        source="MEASUREMENTS.md 2026-11-23, the plain step, batch 128",
    ),
    Measured(
        "cpu",
        "torchvision",
        (96, 96),
        "fp32",
        ((True, False, 1.22), (False, True, 1.29), (True, True, 1.29)),
        images_per_second=19.0,
        compile_seconds=99.0,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
    Measured(
        "cpu",
        "torchvision",
        (32, 32),
        "fp32",
        ((True, False, 1.22), (False, True, 1.17), (True, True, 1.23)),
        images_per_second=154.6,
        compile_seconds=83.0,
        source="speed_matrix.py 2026-12-04, batch 256",
    ),
)
