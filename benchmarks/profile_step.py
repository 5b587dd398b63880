"""Where the time of our training step goes: operators by self time under ``torch.profiler``,
grouped into what bounds the share of the matmul peak (convolutions and matrix multiplies run
near it; batch norm, activations, pooling and the optimizer's element-wise work are memory-bound).

    python benchmarks/profile_step.py --image-size 96 --batch-size 256 --precision fp32

The step is ``benchmarks/throughput.py``'s ``OurRecipe`` (views made a batch at a time, LARS,
EMA) with the speed switches ``auto`` chooses unless ``--channels-last`` says otherwise; views are
made before each profiled step and not counted, so the table is the model step alone.

Printed: the step's time, FLOPs and share of the matrix-multiply peak (``matmul_peaks``, measured
on the same threads in ``--precision``); per group its time, share of the step, and, where
FlopCounterMode counts FLOPs (convolutions and matrix multiplies, one extra step outside the
profiler), its GFLOP, GFLOP/s and share of the peak; then the bound the near-peak groups set:
were every other operator free, the step's FLOPs at the peak over the time of the convolutions
and matrix multiplies alone; then the operators with the most self time.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))

from throughput import OurRecipe, matmul_peaks, source_images, throughput_config  # noqa: E402

# Operator name fragments -> group. The first match wins, so specific names come first.
GROUPS = (
    ("convolution backward", ("convolution_backward", "mkldnn_convolution_backward")),
    ("convolution forward", ("convolution", "conv2d", "mkldnn_convolution")),
    ("matrix multiply", ("addmm", "mm", "bmm", "matmul", "linear")),
    ("batch norm", ("batch_norm", "native_batch_norm")),
    ("activation / pooling", ("relu", "threshold", "max_pool", "avg_pool", "adaptive_avg")),
    ("optimizer / EMA", ("_foreach", "lerp", "addcmul", "norm", "sqrt", "where")),
    ("copies / layout", ("copy_", "contiguous", "clone", "to_copy", "empty_like")),
)
# The groups that run near the matmul peak: their time alone bounds the step's share of it.
NEAR_PEAK = ("convolution backward", "convolution forward", "matrix multiply")


def group_of(name: str) -> str:
    low = name.lower()
    for group, fragments in GROUPS:
        if any(fragment in low for fragment in fragments):
            return group
    return "other element-wise"


def flops_by_group(recipe: OurRecipe, views) -> dict[str, int]:  # noqa: ANN001
    """FLOPs of one step per group (FlopCounterMode counts matrix multiplies and convolutions,
    forward and backward; it runs outside the profiler, whose times it would inflate)."""
    counter = FlopCounterMode(display=False)
    with counter:
        float(recipe.step(views))
    grouped: dict[str, int] = defaultdict(int)
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        grouped[group_of(str(op))] += flops
    return grouped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=1024)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--channels-last", default="auto", help="on/off/auto, as throughput.py")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="profiled steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=15, help="operators listed by self time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layout = {"on": "true", "off": "false"}.get(args.channels_last, args.channels_last)
    images, name, mean, std = source_images(args.image_size, args.images)
    config = throughput_config(
        args.image_size, args.batch_size, args.hidden_dim, args.precision, layout, "false"
    )
    recipe = OurRecipe(config, images, mean, std)
    batches = recipe.batches()
    for _ in range(args.warmup):
        float(recipe.step(next(batches)))
    views = [next(batches) for _ in range(args.steps)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for pair in views:
            float(recipe.step(pair))
    flops = flops_by_group(recipe, next(batches))
    peak = matmul_peaks([args.precision])[args.precision]  # on the same threads
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    seconds: dict[str, float] = defaultdict(float)  # per step, per group
    for event in events:
        seconds[group_of(event.key)] += event.self_cpu_time_total / 1e6 / args.steps
    step_seconds, step_flops = total / 1e6 / args.steps, sum(flops.values())
    print(
        f"{recipe.name}; {name}, {args.image_size} px, batch {args.batch_size}, "
        f"{args.threads} threads, {args.steps} steps: {step_seconds:.2f} s per step, "
        f"{step_flops / 1e9:.1f} GFLOP, {step_flops / step_seconds / peak:.0%} of the "
        f"{args.precision} matmul peak ({peak / 1e9:.0f} GFLOP/s)"
    )
    print(f"\n{'group':<24}{'s/step':>8}{'share':>8}{'GFLOP':>9}{'GFLOP/s':>9}{'of peak':>9}")
    for group, group_seconds in sorted(seconds.items(), key=lambda item: -item[1]):
        rate = flops.get(group, 0) / group_seconds
        counted = f"{flops[group] / 1e9:>9.2f}{rate / 1e9:>9.1f}{rate / peak:>9.0%}"
        print(
            f"{group:<24}{group_seconds:>8.2f}{group_seconds / step_seconds:>8.0%}"
            f"{counted if flops.get(group) else '':}"
        )
    near_peak = sum(seconds[group] for group in NEAR_PEAK)
    print(
        f"\nwere every other operator free, the step would reach "
        f"{step_flops / peak / near_peak:.0%} of peak ({' + '.join(NEAR_PEAK)}: "
        f"{near_peak:.2f} s of {step_seconds:.2f})"
    )
    print(f"\n{'operator':<44}{'calls':>7}{'s/step':>8}{'share':>8}")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        share = event.self_cpu_time_total / total
        per_step = event.self_cpu_time_total / 1e6 / args.steps
        print(f"{event.key[:43]:<44}{event.count // args.steps:>7}{per_step:>8.2f}{share:>8.0%}")


if __name__ == "__main__":
    main()
