"""End-to-end BYOL training throughput (data, views, step) of our pipeline and the peers' recipes,
in one process, same backbone (torchvision ResNet-18), batch, image size and head width.

    python benchmarks/throughput.py --image-size 32 --batch-size 256
    python benchmarks/throughput.py --image-size 96 --batch-size 256 --images 4000

Sources are the CIFAR-10 JPEG copy ($BYOL_SHARED_DIR/datasets) decoded once into memory, resized
to the
benchmark size (Fashion-MNIST if the copy is absent). Pipelines take turns over several rounds so
that machine noise hits all of them alike; each round times ``--steps`` steps after a warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from peers import ByolPytorchRecipe, LightlyRecipe  # noqa: E402

from byol.data import load_datasets  # noqa: E402
from byol.presets import preset  # noqa: E402
from byol.training.epochs import BatchedEpochs  # noqa: E402
from byol.training.optim import build_optimizer  # noqa: E402
from byol.training.run_state import build_model  # noqa: E402
from byol.training.schedules import scaled_learning_rate  # noqa: E402
from byol.training.step import train_step  # noqa: E402
from byol.views.batched import batch_paper_views  # noqa: E402


def source_images(size: int, count: int) -> tuple[torch.Tensor, str, tuple, tuple]:
    """``count`` real uint8 images at ``size`` px, the dataset's name, and its mean/std."""
    try:
        train, _, info = load_datasets("cifar10-jpeg")
    except Exception:  # noqa: BLE001 - any reason the copy is unusable: fall back
        train, _, info = load_datasets("fashion-mnist")
    images = train.images[:count]
    if images.shape[-1] != size:
        resized = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous(), info.name, info.mean, info.std


def throughput_config(size, batch, hidden, precision, channels_last):
    """Ours at the benchmark's shape: torchvision ResNet-18, the paper's views (blur at 96 px,
    none at 32 px, as lightly's CIFAR example)."""
    return dataclasses.replace(
        preset("stl10" if size >= 64 else "cifar10"),
        cifar_stem=False,
        image_size=size,
        batch_size=batch,
        projector_hidden_dim=hidden,
        predictor_hidden_dim=hidden,
        precision=precision,
        channels_last=channels_last,
    )


class OurRecipe:
    """Our pipeline as `byol pretrain` runs it: views made a batch at a time from in-memory
    uint8 images (batch_views), LARS at the config's peak learning rate, fused EMA."""

    def __init__(self, config, images, mean, std, name=None):
        c = self.config = config
        self.name = name or (
            f"byol (ours, {c.precision}{', channels_last' if c.channels_last else ''})"
        )
        self.model = build_model(c)
        if c.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.lr = scaled_learning_rate(c.base_lr, c.batch_size)
        self.optimizer = build_optimizer(
            self.model, c.optimizer, self.lr, c.weight_decay, c.momentum, c.lars_trust_coefficient
        )
        self.tau, self.steps_done = c.tau_base, 0
        self.epochs = BatchedEpochs(images, batch_paper_views(c, mean, std), c)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = 0
        while True:
            for micro_batches in self.epochs.epoch(epoch, 0):  # accumulation_steps=1: one pair
                ((v1, v2),) = micro_batches
                if self.config.channels_last:
                    v1 = v1.contiguous(memory_format=torch.channels_last)
                    v2 = v2.contiguous(memory_format=torch.channels_last)
                yield v1, v2
            epoch += 1

    def step(self, views) -> torch.Tensor:
        self.model.before_step(self.steps_done)  # as `byol pretrain` does
        self.steps_done += 1
        out = train_step(
            self.model, self.optimizer, *views, self.lr, self.tau, self.config.precision
        )
        return out.loss.detach()

    def encoder(self) -> torch.nn.Module:
        return self.model.online_encoder


def time_steps(recipe, batches, steps: int) -> float:
    """Seconds per step over ``steps`` steps, data included (the loss is read at the end only)."""
    start = time.perf_counter()
    for _ in range(steps):
        loss = recipe.step(next(batches))
    float(loss)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=1024, help="projector/predictor width")
    parser.add_argument("--images", type=int, default=10000, help="source images held in memory")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lightly-workers", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], help="ours")
    parser.add_argument("--channels-last", action="store_true", help="ours")
    parser.add_argument("--peers", nargs="*", default=["lightly", "byol-pytorch"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    images, name, mean, std = source_images(args.image_size, args.images)
    size, batch, hidden = args.image_size, args.batch_size, args.hidden_dim
    recipes = [
        OurRecipe(throughput_config(size, batch, hidden, p, args.channels_last), images, mean, std)
        for p in args.precision
    ]
    if "lightly" in args.peers:
        recipes.append(LightlyRecipe(images, size, batch, hidden, args.lightly_workers))
    if "byol-pytorch" in args.peers:
        recipes.append(ByolPytorchRecipe(images, size, batch, hidden, 0))
    streams = [r.batches() for r in recipes]
    for recipe, stream in zip(recipes, streams, strict=True):
        time_steps(recipe, stream, 2)  # warm-up: workers, allocator, oneDNN kernels

    seconds: dict[str, list[float]] = {r.name: [] for r in recipes}
    for _ in range(args.rounds):
        for recipe, stream in zip(recipes, streams, strict=True):
            seconds[recipe.name].append(time_steps(recipe, stream, args.steps))

    print(
        f"{name}, {size} px, batch {batch}, ResNet-18 (torchvision), heads {hidden}, "
        f"{torch.get_num_threads()} threads, lightly workers {args.lightly_workers}, "
        f"torch {torch.__version__}"
    )
    rates = {n: batch / statistics.median(s) for n, s in seconds.items()}
    ours = max((n for n in rates if n.startswith("byol (ours")), key=rates.get)
    print(f"{'pipeline':<36}{'img/s':>9}{'ours (best) / this':>20}")
    for recipe_name, rate in rates.items():
        print(f"{recipe_name:<36}{rate:>9.1f}{rates[ours] / rate:>19.2f}x")


if __name__ == "__main__":
    main()
