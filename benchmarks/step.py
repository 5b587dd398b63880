"""The BYOL model step alone (two views, online forward+backward, target forward, LARS, EMA) on
pre-made views, with achieved FLOP/s against this machine's measured matrix-multiply peak.

    python benchmarks/step.py --image-size 32 --batch-size 256 --precision fp32 bf16

Each setting is timed in turn, interleaved over several rounds so that machine noise hits all of
them alike; FLOPs are counted once per setting with torch's FlopCounterMode.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from byol.presets import preset
from byol.runtime import describe_machine
from byol.training.optim import build_optimizer
from byol.training.step import train_step
from byol.training.train_state import build_model


def matmul_peak(dtype: torch.dtype, seconds: float = 2.0, n: int = 2048) -> float:
    """Achieved FLOP/s of a square matrix multiply: the ceiling a convolution-bound step meets."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


@dataclasses.dataclass
class Setting:
    precision: str
    channels_last: bool
    compile: bool

    def __str__(self) -> str:
        flags = [self.precision] + ["channels_last"] * self.channels_last
        return "+".join(flags + ["compile"] * self.compile)


class StepRunner:
    def __init__(self, args: argparse.Namespace, setting: Setting) -> None:
        config = preset("cifar10").replace(  # ResNet-18; heads and sizes set below
            backbone=args.backbone,
            cifar_stem=args.cifar_stem,
            image_size=args.image_size,
            batch_size=args.batch_size,
            projector_hidden_dim=args.hidden_dim,
            predictor_hidden_dim=args.hidden_dim,
            precision=setting.precision,
        )
        torch.manual_seed(0)
        self.setting, self.config = setting, config
        self.model = build_model(config)
        memory = torch.channels_last if setting.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=memory)
        if setting.compile:
            self.model.compile()
        self.optimizer = build_optimizer(self.model, "lars", 0.1, 1e-6, 0.9, 1e-3)
        shape = (args.batch_size, 3, args.image_size, args.image_size)
        self.views = [torch.randn(shape).contiguous(memory_format=memory) for _ in range(2)]

    def step(self) -> None:
        train_step(
            self.model, self.optimizer, *self.views, 0.1, 0.99, self.config.runtime.precision
        )

    def flops(self) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            self.step()
        return counter.get_total_flops()


def _on_off(text: str) -> bool:
    # A compare with "on" once read both "false" and "true" as off; accept and check each spelling
    lowered = text.lower()
    if lowered in ("on", "true", "1", "yes"):
        return True
    if lowered in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not on/off (or true/false)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--cifar-stem", action="store_true")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=4096, help="projector/predictor width")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument(
        "--channels-last", nargs="+", type=_on_off, default=[False, True], help="on/off, true/false"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    peaks = {
        p: matmul_peak(torch.float32 if p == "fp32" else torch.bfloat16) for p in ("fp32", "bf16")
    }
    print(
        f"{describe_machine()}, {torch.get_num_threads()} threads; "
        f"matmul peak fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s"
    )
    print(
        f"{args.backbone}{' (CIFAR stem)' if args.cifar_stem else ''}, {args.image_size} px, "
        f"batch {args.batch_size}, heads {args.hidden_dim}"
    )
    compile_options = (False, True) if args.compile else (False,)
    settings = [
        Setting(p, c, k)
        for p, c, k in itertools.product(args.precision, args.channels_last, compile_options)
    ]
    runners = [StepRunner(args, s) for s in settings]
    flops = {}
    for runner in runners:
        for _ in range(2):  # warm-up (and compilation)
            runner.step()
        flops[str(runner.setting)] = runner.flops()
    times: dict[str, list[float]] = {str(r.setting): [] for r in runners}
    for _ in range(args.rounds):
        for runner in runners:
            start = time.perf_counter()
            for _ in range(args.steps):
                runner.step()
            times[str(runner.setting)].append((time.perf_counter() - start) / args.steps)
    baseline = None
    print(f"{'setting':<28}{'img/s':>8}{'GFLOP/s':>9}{'% of peak':>11}{'vs first':>10}")
    for runner in runners:
        name = str(runner.setting)
        seconds = statistics.median(times[name])
        rate = args.batch_size / seconds
        achieved = flops[name] / seconds
        baseline = baseline or rate
        peak = peaks[runner.setting.precision]
        print(
            f"{name:<28}{rate:>8.1f}{achieved / 1e9:>9.1f}{100 * achieved / peak:>10.0f}%"
            f"{rate / baseline:>9.2f}x"
        )
    print(
        f"FLOPs per source image per step: {flops[str(settings[0])] / args.batch_size / 1e9:.3f} G"
    )


if __name__ == "__main__":
    main()
