"""BYOL training throughput on a CUDA GPU: our pipeline against lightly's BYOL recipe, in one
process, on the same backbone, batch, image size, head width and precision.

    python benchmarks/gpu.py --image-size 32 --backbone resnet18 --cifar-stem   # CIFAR shape
    python benchmarks/gpu.py --image-size 224 --backbone resnet50 --images 4000  # ImageNet shape

Ours makes the views a batch at a time on the GPU from uint8 images held there (what `byol
pretrain` does for in-memory datasets). lightly's recipe is its documented BYOL example: PIL
transforms in DataLoader workers (pinned memory, copied to the GPU per batch), SGD, momentum copies;
its backbone is ours (torchvision, the same stem) so the two step the same network. Each pipeline
runs in fp32 (TF32 convolutions, PyTorch's default) and under bf16 autocast, what each user
switches on. Sources: CIFAR-10 JPEG copy ($BYOL_SHARED_DIR) or Fashion-MNIST (--dataset; both
pipelines read the same uint8 pixels from memory, so the content hardly matters to the rate),
resized on the GPU to the benchmark size. Pipelines take turns over several rounds; each round
times ``--steps`` steps after warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))

from peers import PilViews  # noqa: E402
from throughput import OurRecipe, throughput_config  # noqa: E402

from byol.backbones import torchvision_model  # noqa: E402
from byol.data import load_datasets  # noqa: E402

DEVICE = torch.device("cuda")  # --device cpu: a dry run of this script without a GPU


def source_images(
    dataset: str, data_dir: str | None, size: int, count: int
) -> tuple[torch.Tensor, tuple, tuple]:
    """``count`` training images of ``dataset`` as uint8 on the device at ``size`` px."""
    train, _, info = load_datasets(dataset, data_dir)
    images = train.images[:count].to(DEVICE)
    if images.shape[-1] != size:
        resized = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous(), info.mean, info.std


def trunk(backbone: str, cifar_stem: bool) -> tuple[nn.Module, int]:
    net = torchvision_model(backbone, cifar_stem)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


class LightlyGpu:
    """lightly's BYOL example moved to the GPU, with our backbone and an optional bf16 autocast."""

    def __init__(self, images, size, batch, hidden, workers, backbone, cifar_stem, precision):
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        from lightly.transforms.byol_transform import (
            BYOLTransform,
            BYOLView1Transform,
            BYOLView2Transform,
        )

        self.name, self.precision = f"lightly ({precision})", precision
        blur = 1.0 if size >= 64 else 0.0  # its CIFAR example turns blur off at 32 px
        transform = BYOLTransform(
            view_1_transform=BYOLView1Transform(input_size=size, gaussian_blur=blur),
            view_2_transform=BYOLView2Transform(input_size=size, gaussian_blur=0.1 * blur),
        )
        self.loader = DataLoader(
            PilViews(images.cpu(), transform),
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=True,
            pin_memory=DEVICE.type == "cuda",
        )
        self.backbone, dim = trunk(backbone, cifar_stem)
        self.projection = BYOLProjectionHead(dim, hidden, 256)
        self.prediction = BYOLPredictionHead(256, hidden, 256)
        for module in (self.backbone, self.projection, self.prediction):
            module.to(DEVICE)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_momentum = copy.deepcopy(self.projection)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_momentum)
        self.criterion = NegativeCosineSimilarity()
        params = [*self.backbone.parameters(), *self.projection.parameters()]
        self.optimizer = torch.optim.SGD(params + [*self.prediction.parameters()], lr=0.06)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            for (x0, x1), _ in self.loader:
                yield x0.to(DEVICE, non_blocking=True), x1.to(DEVICE, non_blocking=True)

    def step(self, views) -> torch.Tensor:
        from lightly.models.utils import update_momentum

        x0, x1 = views
        update_momentum(self.backbone, self.backbone_momentum, m=0.99)
        update_momentum(self.projection, self.projection_momentum, m=0.99)
        cast = (
            torch.autocast(DEVICE.type, dtype=torch.bfloat16)
            if self.precision == "bf16"
            else contextlib.nullcontext()
        )
        with cast:
            p0 = self.prediction(self.projection(self.backbone(x0)))
            p1 = self.prediction(self.projection(self.backbone(x1)))
            with torch.no_grad():
                z0 = self.projection_momentum(self.backbone_momentum(x0))
                z1 = self.projection_momentum(self.backbone_momentum(x1))
            loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()


def ours(images, mean, std, args, precision: str) -> OurRecipe:
    layout = "true" if args.channels_last else "false"
    config = throughput_config(
        args.image_size,
        args.batch_size,
        args.hidden_dim,
        precision,
        layout,
        backbone=args.backbone,
        cifar_stem=args.cifar_stem,
        device=str(DEVICE),
    )
    recipe = OurRecipe(config, images, mean, std, f"byol (ours, {precision})", device=DEVICE)
    recipe.model.to(DEVICE)  # keeps the memory format chosen
    return recipe


def seconds_per_step(recipe, batches, steps: int) -> float:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = recipe.step(next(batches))
    float(loss)  # waits for the last step
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--cifar-stem", action="store_true")
    parser.add_argument("--channels-last", action="store_true", help="ours")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=4096, help="projector/predictor width")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lightly-workers", type=int, default=12)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--dataset", default="cifar10-jpeg")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.manual_seed(0)
    images, mean, std = source_images(args.dataset, args.data_dir, args.image_size, args.images)
    shape = (args.image_size, args.batch_size, args.hidden_dim, args.lightly_workers)
    recipes = [ours(images, mean, std, args, p) for p in args.precision]
    stem = args.cifar_stem
    recipes += [LightlyGpu(images, *shape, args.backbone, stem, p) for p in args.precision]
    streams = [r.batches() for r in recipes]
    for recipe, stream in zip(recipes, streams, strict=True):
        seconds_per_step(recipe, stream, 3)  # warm-up: workers, cuDNN autotuning, allocator
    seconds: dict[str, list[float]] = {r.name: [] for r in recipes}
    for _ in range(args.rounds):
        for recipe, stream in zip(recipes, streams, strict=True):
            seconds[recipe.name].append(seconds_per_step(recipe, stream, args.steps))
    print(
        f"{torch.cuda.get_device_name(0) if DEVICE.type == 'cuda' else 'CPU'}, {args.dataset} "
        f"at {args.image_size} px, batch "
        f"{args.batch_size}, {args.backbone}{' (CIFAR stem)' if args.cifar_stem else ''}, heads "
        f"{args.hidden_dim}, lightly workers {args.lightly_workers}, torch {torch.__version__}"
    )
    rates = {n: args.batch_size / statistics.median(s) for n, s in seconds.items()}
    spread = {n: (max(s) - min(s)) / statistics.median(s) for n, s in seconds.items()}
    print(f"{'pipeline':<24}{'img/s':>10}{'spread':>9}{'ours / this, same precision':>30}")
    for name, rate in rates.items():
        precision = name.split(", ")[-1].rstrip(")") if "ours" in name else name[9:-1]
        mine = rates[f"byol (ours, {precision})"]
        print(f"{name:<24}{rate:>10.0f}{spread[name]:>8.0%}{mine / rate:>29.2f}x")


if __name__ == "__main__":
    main()
