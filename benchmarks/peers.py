"""The peers' documented BYOL recipes, set up the same way as ours for side-by-side timing.

lightly: its BYOL example (torchvision ResNet-18 without fc, BYOLProjectionHead/PredictionHead,
momentum copies, BYOLTransform on PIL images in DataLoader workers, NegativeCosineSimilarity, SGD
0.06, cosine momentum schedule). byol-pytorch: its README (BYOL wrapper around a torchvision
ResNet with hidden_layer="avgpool", its own batched augmentation, Adam 3e-4). Peers are an
optional install: pip install -e '.[bench]'.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

Batch = tuple[torch.Tensor, torch.Tensor]


def resnet18_trunk() -> tuple[nn.Module, int]:
    resnet = torchvision.models.resnet18()
    return nn.Sequential(*list(resnet.children())[:-1]), 512


class PilViews(Dataset):
    """uint8 N x 3 x H x W images served as PIL images through a transform (a torchvision
    dataset's behaviour, e.g. CIFAR10's)."""

    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images, self.transform = images.permute(0, 2, 3, 1).numpy(), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), 0


def autocast(precision: str):  # noqa: ANN201
    """What a peer's user switches on for bf16 on a CPU: autocast around the step."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


class Switches:
    """Ours' layout and compile choices (a SpeedChoices, or None: the peer as documented) applied
    to a peer's modules and inputs, so a row shows what the same engineering gives the peer."""

    def __init__(self, choices) -> None:  # noqa: ANN001
        self.channels_last = bool(choices and choices.channels_last)
        self.mode = choices.compile_mode if choices and choices.compile else ""

    def label(self) -> str:
        chosen = ["channels_last"] * self.channels_last + [f"compile:{self.mode}"] * bool(self.mode)
        return f", with our {' '.join(chosen)}" if chosen else ""

    def lay_out(self, module: nn.Module) -> None:
        if self.channels_last:
            module.to(memory_format=torch.channels_last)

    def lay_out_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def compile(self, module: nn.Module) -> None:
        if self.mode:
            module.compile(mode=self.mode)


class LightlyRecipe:
    family = "lightly"

    def __init__(
        self,
        images: torch.Tensor | None,
        size: int,
        batch: int,
        hidden: int,
        workers: int,
        precision: str = "fp32",
        folder: Path | None = None,
        switches=None,  # noqa: ANN001
    ):
        """From uint8 ``images`` in memory, or from the image files of ``folder`` (class
        sub-folders) through torchvision's ImageFolder, as lightly's examples read a folder.
        ``switches``: ours' SpeedChoices, whose layout and compile it then takes (else none, as
        its documentation gives it)."""
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        from lightly.transforms.byol_transform import (
            BYOLTransform,
            BYOLView1Transform,
            BYOLView2Transform,
        )

        blur = 1.0 if size >= 64 else 0.0  # the CIFAR example turns blur off at 32 px
        transform = BYOLTransform(
            view_1_transform=BYOLView1Transform(input_size=size, gaussian_blur=blur),
            view_2_transform=BYOLView2Transform(input_size=size, gaussian_blur=0.1 * blur),
        )
        if folder is None:
            dataset = PilViews(images, transform)
        else:
            dataset = torchvision.datasets.ImageFolder(str(folder), transform=transform)
        # As lightly's example: no persistent workers, so a closed stream stops its workers and
        # they take no CPU while another pipeline is timed.
        self.loader = DataLoader(
            dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers
        )
        self.precision, self.switches = precision, Switches(switches)
        self.name = f"lightly ({'bf16 autocast' if precision == 'bf16' else precision}"
        self.name += f"{self.switches.label()})"
        backbone, dim = resnet18_trunk()
        self.backbone, self.projection = backbone, BYOLProjectionHead(dim, hidden, 256)
        self.prediction = BYOLPredictionHead(256, hidden, 256)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_momentum = copy.deepcopy(self.projection)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_momentum)
        self.criterion = NegativeCosineSimilarity()
        params = [*backbone.parameters(), *self.projection.parameters()]
        self.optimizer = torch.optim.SGD(params + [*self.prediction.parameters()], lr=0.06)
        self.modules = [self.backbone, self.projection, self.prediction]
        for module in (*self.modules, self.backbone_momentum, self.projection_momentum):
            self.switches.lay_out(module)

    def prepare(self) -> None:
        for module in (self.backbone, self.backbone_momentum):
            self.switches.compile(module)

    def online(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction(self.projection(self.backbone(x).flatten(1)))

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_momentum(self.backbone_momentum(x).flatten(1)).detach()

    def batches(self) -> Iterator[Batch]:
        while True:
            for (x0, x1), _ in self.loader:
                yield x0, x1

    def step(self, views: Batch, momentum: float = 0.99) -> float:
        from lightly.models.utils import update_momentum

        x0, x1 = map(self.switches.lay_out_input, views)
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection, self.projection_momentum, m=momentum)
        with autocast(self.precision):
            p0, p1 = self.online(x0), self.online(x1)
            loss = 0.5 * (self.criterion(p0, self.target(x1)) + self.criterion(p1, self.target(x0)))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()

    def encoder(self) -> nn.Module:
        return self.backbone


class ByolPytorchRecipe:
    family = "byol-pytorch"

    def __init__(
        self,
        images: torch.Tensor,
        size: int,
        batch: int,
        hidden: int,
        workers: int,
        precision: str = "fp32",
        switches=None,  # noqa: ANN001
    ):
        self.precision, self.switches = precision, Switches(switches)
        self.name = f"byol-pytorch ({'bf16 autocast' if precision == 'bf16' else precision}"
        self.name += f"{self.switches.label()})"
        from byol_pytorch import BYOL

        resnet = torchvision.models.resnet18()
        self.resnet = resnet
        self.learner = BYOL(
            resnet, image_size=size, hidden_layer="avgpool", projection_hidden_size=hidden
        )
        self.optimizer = torch.optim.Adam(self.learner.parameters(), lr=3e-4)
        self.images, self.batch = images, batch
        self.switches.lay_out(self.learner)

    def prepare(self) -> None:
        self.switches.compile(self.resnet)  # the network; its wrapper's augmentation stays eager

    def batches(self) -> Iterator[Batch]:
        while True:
            order = torch.randperm(len(self.images))
            for b in range(len(self.images) // self.batch):
                x = self.images[order[b * self.batch : (b + 1) * self.batch]].float() / 255
                x = self.switches.lay_out_input(x)
                yield x, x  # the wrapper makes both views itself

    def step(self, views: Batch) -> torch.Tensor:
        with autocast(self.precision):
            loss = self.learner(views[0])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.learner.update_moving_average()
        return loss.detach()

    def encoder(self) -> nn.Module:
        trunk = copy.copy(self.resnet)
        trunk.fc = nn.Identity()
        return trunk
