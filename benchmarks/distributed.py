"""Two processes against one at the same global batch: the time of an optimizer step, and how far
apart the two runs end (losses, online and target weights) after the same steps.

    OMP_NUM_THREADS=1 python benchmarks/distributed.py                     # the CPU preset's step
    OMP_NUM_THREADS=1 python benchmarks/distributed.py --float64 --steps 4 # differences only

Each setting trains from the same initial weights on the same views (batched, on the CPU, from
Fashion-MNIST in memory, or noise images when it is absent), processes started as torchrun starts
them (gloo). The step time is the median over the steps after two warm-up steps, measured on rank
0 around ``accumulated_step`` (which ends with DDP's gradient all-reduce and the target EMA); on
a shared machine read the ratios, not the absolute times, and repeat.
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from byol import distributed
from byol.presets import preset
from byol.sync_batchnorm import convert_sync_batchnorm
from byol.training.epochs import BatchedEpochs
from byol.training.optim import build_optimizer
from byol.training.schedules import target_tau
from byol.training.step import accumulated_step
from byol.training.train_state import build_model
from byol.views.batched import batch_paper_views

WARMUP = 2


def images(n: int) -> torch.Tensor:
    try:
        from byol.data import load_datasets

        return load_datasets("fashion-mnist")[0].images[:n, :1]  # gray: one channel, as training
    except Exception:  # noqa: BLE001 - any missing dataset: fall back to noise
        return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)


def train(args: argparse.Namespace, sync: bool, out: Path) -> None:
    config = preset("fashion-mnist").replace(
        batch_size=args.batch_size,
        image_size=args.image_size,
        sync_batchnorm=sync,
    )
    dtype = torch.float64 if args.float64 else torch.float32
    ranks = distributed.current()
    data = images(args.batch_size * (args.steps + WARMUP))
    epochs = BatchedEpochs(
        data,
        batch_paper_views(config.views, config.data.image_size, (0.29,) * 3, (0.35,) * 3),
        config,
        ranks,
    )
    torch.manual_seed(0)
    model = build_model(config)
    if ranks.world_size > 1 and sync:
        model = convert_sync_batchnorm(model, torch.device("cpu"))
    model = model.to(dtype)
    trained = distributed.wrap(model, torch.device("cpu"))
    optimizer = build_optimizer(model, "lars", 0.5, 1e-6)
    total = args.steps + WARMUP
    times, losses = [], []
    for step, micro_batches in zip(range(total), epochs.epoch(0, 0), strict=False):
        micro_batches = [(a.to(dtype), b.to(dtype)) for a, b in micro_batches]
        distributed.barrier()
        started = time.perf_counter()
        output = accumulated_step(
            trained, optimizer, micro_batches, 0.5, target_tau(step, total, 0.99), "fp32"
        )
        times.append(time.perf_counter() - started)
        losses.append(distributed.mean_over_ranks(output.loss).item())
    if ranks.is_main:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.save(dict(times=times[WARMUP:], losses=losses, state=state), out)


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, sync: bool, out: Path):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(args.threads_per_process)
    with distributed.process_group(torch.device("cpu")):
        train(args, sync, out)


def run(args: argparse.Namespace, world: int, threads: int, sync: bool, out: Path) -> dict:
    args = argparse.Namespace(**{**vars(args), "threads_per_process": threads})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if world == 1:
        torch.set_num_threads(threads)
        train(args, sync, out)
    else:
        mp.spawn(_rank, args=(world, port, args, sync, out), nprocs=world, join=True)
    return torch.load(out, weights_only=True)


def difference(a: dict, b: dict) -> tuple[float, float]:
    """Largest |difference| of the per-step losses, and of all weights (online and target)."""
    loss = max(abs(x - y) for x, y in zip(a["losses"], b["losses"], strict=True))
    weights = max(
        (a["state"][k].double() - b["state"][k].double()).abs().max().item()
        for k in a["state"]
        if "num_batches_tracked" not in k
    )
    return loss, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (after 2 warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="repeat the settings in turn")
    parser.add_argument("--float64", action="store_true")
    args = parser.parse_args()
    settings = [  # (processes, threads per process, global BN)
        (1, 1, True),
        (1, 2, True),
        (2, 1, True),
        (2, 1, False),
    ]
    results: dict[tuple, list[dict]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for round_, setting in itertools.product(range(args.rounds), settings):
            results[setting].append(run(args, *setting, Path(tmp) / f"{round_}-{setting}.pt"))
    base = statistics.median(t for r in results[settings[0]] for t in r["times"])
    dtype = "float64" if args.float64 else "float32"
    print(f"global batch {args.batch_size}, {args.image_size} px, ResNet-18, {dtype}")
    print(f"{'setting':<40}{'s/step':>8}{'vs 1x1':>8}{'loss diff':>11}{'weight diff':>13}")
    for (world, threads, sync), runs in results.items():
        step = statistics.median(t for r in runs for t in r["times"])
        loss, weights = difference(results[settings[0]][0], runs[0])
        bn = "global BN" if sync else "per-device BN"
        name = f"{world} process(es) x {threads} thread(s), {bn}"
        print(f"{name:<40}{step:8.3f}{step / base:8.2f}{loss:11.2e}{weights:13.2e}")


if __name__ == "__main__":
    main()
