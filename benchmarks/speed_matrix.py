"""What each speed switch gives per shape, and what ``auto`` chose there: image sizes x backbones
(torchvision ResNet-18, the CIFAR-stem ResNet-18, a timm ViT) x precisions, our whole step (views
made a batch at a time, LARS or AdamW, EMA) timed with every combination of channels_last and
compile, taking turns in one process. Writes a markdown table and the rows of
``byol/speed/measured.py`` that the measurements support.

    python benchmarks/speed_matrix.py --sizes 32 64 96 224 --precision fp32 bf16 \\
        --out benchmarks/results/speed_matrix.md

Per shape, "before auto" is contiguous and eager (what runs did before ``auto``); "auto" is the
combination ``byol/speed`` chooses for a run of ``--run-steps`` steps from the table as it stands,
so a shape the table lacks shows "before auto" until its row is added. The compile cost is the
first compiled step's time less a compiled step's median, with a fresh inductor cache (a user's
first run). The CIFAR stem runs only up to ``--cifar-stem-max-size``: at 96 px its stride-1 stem
costs 9x the FLOPs of 32 px. Sources as benchmarks/throughput.py (CIFAR-10 JPEG copy, resized).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from throughput import (  # noqa: E402
    OurRecipe,
    count_step_flops,
    matmul_peaks,
    measure,
    source_images,
    throughput_config,
)

from byol import distributed, speed  # noqa: E402
from byol.runtime import describe_machine  # noqa: E402
from byol.training.run_context import speed_choices  # noqa: E402

COMBINATIONS = ((False, False), (True, False), (False, True), (True, True))
NAMES = {(False, False): "before auto", (True, False): "channels_last", (False, True): "compile"}
NAMES[(True, True)] = "both"


def shape_config(kind: str, size: int, args: argparse.Namespace, precision: str, **switches):  # noqa: ANN201
    """Ours at one shape: ResNet-18 with either stem, or the ViT (AdamW, as its presets train it;
    patches giving 8x8 tokens up to 64 px, 12x12 at 96 px and 14x14 at 224 px)."""
    model: dict = {"cifar_stem": kind == "cifar-stem"}
    if kind == "timm-vit":
        patch = 4 if size <= 32 else 8 if size <= 96 else 16
        model = dict(backbone=args.vit, backbone_kwargs=f"patch_size={patch}", optimizer="adamw")
        model.update(base_lr=5e-4, weight_decay=0.05)
    return throughput_config(size, args.batch_size, args.hidden_dim, precision, **model, **switches)


def first_step_seconds(recipe) -> float:  # noqa: ANN001
    """One step's time, the first after ``prepare``: it includes compilation."""
    stream = recipe.batches()
    views = next(stream)
    start = time.perf_counter()
    float(recipe.step(views))
    elapsed = time.perf_counter() - start
    stream.close()
    return elapsed


def measure_shape(kind: str, size: int, precision: str, images, mean, std, args) -> dict:  # noqa: ANN001
    """img/s of every combination, the compile cost, FLOPs, and what auto chose."""
    torch._dynamo.reset()  # each shape compiles afresh, within dynamo's recompile limit
    recipes = {}
    for layout, compiled in COMBINATIONS:
        words = {"channels_last": str(layout).lower(), "compile": str(compiled).lower()}
        config = shape_config(kind, size, args, precision, **words)
        torch.manual_seed(0)
        recipes[layout, compiled] = OurRecipe(
            config, images, mean, std, name=NAMES[layout, compiled]
        )
    flops = count_step_flops(recipes[False, False])
    first = {}
    for combo, recipe in recipes.items():
        recipe.prepare()
        first[combo] = first_step_seconds(recipe)
    seconds = measure(list(recipes.values()), args.rounds, args.warmup, args.steps)
    step = {c: statistics.median(r["total"] for r in seconds[NAMES[c]]) for c in recipes}
    compile_seconds = max(first[c] - step[c] for c in recipes if c[1])
    auto_config = shape_config(kind, size, args, precision, channels_last="auto", compile="auto")
    chosen = speed_choices(
        auto_config, distributed.Ranks(), torch.device("cpu"), precision, args.run_steps
    )
    return dict(
        kind=kind,
        size=size,
        precision=precision,
        rate={c: args.batch_size / step[c] for c in recipes},
        compile_seconds=compile_seconds,
        flops=flops,
        auto=(chosen.channels_last, chosen.compile),
        batch=args.batch_size,
    )


def markdown(results: list[dict], peaks: dict[str, float], header: str) -> str:
    lines = [
        header,
        "",
        "| backbone | px | precision | before auto img/s | channels_last | compile | both "
        "| compile s | auto chose | auto / before | auto's share of peak |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        base = r["rate"][False, False]
        ratios = [f"{r['rate'][c] / base:.2f}x" for c in COMBINATIONS[1:]]
        auto_rate = r["rate"][r["auto"]]
        share = r["flops"] * auto_rate / r["batch"] / peaks[r["precision"]]  # FLOP/s / peak
        lines.append(
            f"| {r['kind']} | {r['size']} | {r['precision']} | {base:.1f} | {' | '.join(ratios)} "
            f"| {r['compile_seconds']:.0f} | {NAMES[r['auto']]} | {auto_rate / base:.2f}x "
            f"| {100 * share:.0f}% |"
        )
    return "\n".join(lines)


def measured_rows(results: list[dict], capability: str, source: str) -> str:
    """``Measured`` rows for byol/speed/measured.py, one per shape (a losing lever is a finding
    too: auto then keeps it off), each for CPUs of this machine's kind."""
    kind = "NATIVE_BF16" if capability == speed.NATIVE_BF16 else "EMULATED_BF16"
    rows = []
    for r in results:
        base = r["rate"][False, False]
        speedups = ", ".join(
            f"({a}, {b}, {r['rate'][a, b] / base:.2f})" for a, b in COMBINATIONS[1:]
        )
        rows.append(
            f'    Measured("cpu", "{r["kind"]}", ({r["size"]}, {r["size"]}), "{r["precision"]}", '
            f"({speedups}), images_per_second={base:.1f}, "
            f'compile_seconds={r["compile_seconds"]:.0f}, cpu_kind={kind}, source="{source}"),'
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 96, 224])
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["torchvision", "cifar-stem", "timm-vit"],
        choices=("torchvision", "cifar-stem", "timm-vit"),
    )
    parser.add_argument("--vit", default="timm:vit_small_patch16_224")
    parser.add_argument("--cifar-stem-max-size", type=int, default=64)
    parser.add_argument("--precision", nargs="+", default=["fp32"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=1024, help="projector/predictor width")
    parser.add_argument("--images", type=int, default=2000, help="source images held in memory")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run-steps", type=int, default=10_000, help="the run auto chooses for")
    parser.add_argument("--out", type=Path, default=None, help="markdown file (else printed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="byol-inductor-")
    if "timm-vit" in args.kinds:
        try:
            import timm  # noqa: F401
        except ImportError:
            print("timm is not installed (pip install 'byol[timm]'): the ViT is skipped")
            args.kinds.remove("timm-vit")

    results = []
    for size in args.sizes:
        images, name, mean, std = source_images(size, args.images)
        for kind in args.kinds:
            if kind == "cifar-stem" and size > args.cifar_stem_max_size:
                continue
            for precision in args.precision:
                print(f"measuring {kind} {size} px {precision}", file=sys.stderr, flush=True)
                result = measure_shape(kind, size, precision, images, mean, std, args)
                results.append(result)
    peaks = matmul_peaks(sorted(set(args.precision)))
    capability = speed.device_capability(torch.device("cpu"))
    date = time.strftime("%Y-%m-%d")
    header = (
        f"{describe_machine()} ({capability or 'no native bf16'}), "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {date}; {name}, batch "
        f"{args.batch_size}, heads {args.hidden_dim}, {args.rounds} rounds of {args.steps} steps; "
        f"auto for a run of {args.run_steps} steps; matmul peak "
        + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items())
    )
    text = markdown(results, peaks, header)
    text += "\n\nRows for byol/speed/measured.py:\n\n```text\n"
    text += measured_rows(results, capability, f"speed_matrix.py {date}, batch {args.batch_size}")
    text += "\n```\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
