"""Supervised heads on an encoder (arXiv:2006.07733, Section 4 and Appendix C): linear
evaluation and fine-tuning.

Linear evaluation trains a linear classifier on the frozen representation y, either on cached
centre-view features (fast) or on random crop + flip views pushed through the frozen encoder
(the paper's mode). Its learning rate is chosen on a validation split carved from the training
set; the test set is touched once, by the final head. Fine-tuning trains encoder and head
together on a label subset; with a random-init encoder it is supervised training from scratch.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from byol.evaluation.features import extract_features
from byol.evaluation.knn import topk_accuracy
from byol.runtime import autocast
from byol.views.per_image import ViewTransform
from byol.views.spec import ViewSpec


def crop_flip_transform(
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    crop_scale: tuple[float, float] = (0.08, 1.0),
) -> ViewTransform:
    """The paper's training augmentation for supervised heads: random resized crop + flip only."""
    spec = dataclasses.replace(
        ViewSpec(),
        crop_scale=crop_scale,
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=0.0,
        solarize_prob=0.0,
    )
    return ViewTransform(spec, image_size, mean, std)


class Transformed(Dataset):
    """The items of ``dataset`` at ``indices`` (all when None), images passed through ``transform``.

    The underlying dataset yields uint8 images (transform None), so one copy serves every view.
    """

    def __init__(
        self, dataset: Dataset, transform: Callable, indices: np.ndarray | None = None
    ) -> None:
        self.dataset, self.transform = dataset, transform
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[int(self.indices[i])]
        return self.transform(image), label


@dataclass
class HeadResult:
    head: nn.Linear
    lr: float
    val_top1: dict[float, float]  # validation top-1 (%) of each candidate learning rate
    top1: float
    top5: float


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale every feature to zero mean, unit variance using training statistics only.

    A random-init and a trained encoder give features of very different scales; standardising
    (a BatchNorm without affine, frozen) lets one learning-rate grid suit both.
    """
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def _cosine(lr: float, step: int, total: int) -> float:
    return 0.5 * lr * (1 + math.cos(math.pi * step / max(total, 1)))


def _batches(n: int, batch_size: int, epochs: int, seed: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        yield from order.split(batch_size)


def train_linear_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    lr: float,
    epochs: int = 50,
    batch_size: int = 256,
    seed: int = 0,
) -> nn.Linear:
    """SGD (momentum 0.9, Nesterov, cosine decay) on fixed features; zero init, so deterministic."""
    head = nn.Linear(features.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, nesterov=True)
    total = epochs * math.ceil(len(features) / batch_size)
    for step, batch in enumerate(_batches(len(features), batch_size, epochs, seed)):
        optimizer.param_groups[0]["lr"] = _cosine(lr, step, total)
        loss = F.cross_entropy(head(features[batch]), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return head


@torch.no_grad()
def head_accuracy(head: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> tuple:
    scores = head(features)
    return topk_accuracy(scores, labels, 1), topk_accuracy(scores, labels, 5)


def linear_fast(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    val_indices: np.ndarray,
    lrs: tuple[float, ...],
    epochs: int = 50,
    batch_size: int = 256,
    seed: int = 0,
) -> HeadResult:
    """Linear evaluation on cached centre-view features, lr chosen on ``val_indices`` of train."""
    num_classes = int(train_labels.max()) + 1
    is_val = torch.zeros(len(train_labels), dtype=torch.bool)
    is_val[torch.as_tensor(val_indices)] = True
    fit_x, val_x = standardize(train_features[~is_val], train_features[is_val])
    fit_y, val_y = train_labels[~is_val], train_labels[is_val]
    val_top1 = {}
    for lr in lrs:
        head = train_linear_head(fit_x, fit_y, num_classes, lr, epochs, batch_size, seed)
        val_top1[lr] = head_accuracy(head, val_x, val_y)[0]
    best = max(lrs, key=lambda lr: (val_top1[lr], -lr))  # ties: the smaller step
    # Refit on the whole training set with the chosen lr; only now is the test set looked at.
    train_x, test_x = standardize(train_features, test_features)
    head = train_linear_head(train_x, train_labels, num_classes, best, epochs, batch_size, seed)
    top1, top5 = head_accuracy(head, test_x, test_labels)
    return HeadResult(head, best, val_top1, top1, top5)


class FrozenEncoderHead(nn.Module):
    """Frozen encoder (eval mode: BN statistics fixed) -> standardisation -> linear head."""

    def __init__(self, encoder: nn.Module, mean: torch.Tensor, std: torch.Tensor, head: nn.Linear):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = self.encoder(images)
        return self.head((y.float() - self.mean) / self.std)


def linear_paper(
    encoder: nn.Module,
    train_crops: Callable[[np.ndarray], Dataset],
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    val_indices: np.ndarray,
    lrs: tuple[float, ...],
    device: torch.device,
    epochs: int = 10,
    batch_size: int = 256,
    seed: int = 0,
    precision: str = "fp32",
) -> HeadResult:
    """The paper's linear evaluation: the head trains on random crop + flip views of the frozen
    encoder; validation and test use the cached resize + centre-crop features.

    ``train_crops(indices)`` yields augmented views of the training items at ``indices``
    (positions in ``train_labels``): a map-style dataset, or an iterable one that shuffles itself.
    """
    encoder = encoder.to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    num_classes = int(train_labels.max()) + 1
    is_val = np.zeros(len(train_labels), dtype=bool)
    is_val[val_indices] = True

    def fit(indices: np.ndarray, lr: float) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
        feats = train_features[torch.as_tensor(indices)]
        mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
        head = nn.Linear(train_features.shape[1], num_classes)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        model = FrozenEncoderHead(encoder, mean, std, head).to(device)
        optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, nesterov=True)
        torch.manual_seed(seed)  # the crops and the shuffling: the same for every lr
        loader = shuffled_loader(train_crops(indices), batch_size, drop_last=False)
        _fit_classifier(model, optimizer, loader, epochs, lr, device, precision)
        return head.cpu(), mean, std

    val_top1 = {}
    fit_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    for lr in lrs:
        head, mean, std = fit(fit_idx, lr)
        val_x = (train_features[torch.as_tensor(val_idx)] - mean) / std
        val_top1[lr] = head_accuracy(head, val_x, train_labels[torch.as_tensor(val_idx)])[0]
    best = max(lrs, key=lambda lr: (val_top1[lr], -lr))
    head, mean, std = fit(np.arange(len(train_labels)), best)
    top1, top5 = head_accuracy(head, (test_features - mean) / std, test_labels)
    return HeadResult(head, best, val_top1, top1, top5)


@dataclass
class FinetuneResult:
    model: nn.Sequential  # encoder, then the linear head
    top1: float
    top5: float


def finetune(
    encoder: nn.Module,
    train: Dataset,
    test: Dataset,
    num_classes: int,
    device: torch.device,
    epochs: int,
    lr: float = 0.05,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    seed: int = 0,
    precision: str = "fp32",
) -> FinetuneResult:
    """Train encoder and a zero-initialised linear head together (SGD, Nesterov, cosine decay).

    ``train`` yields augmented views of the labelled subset, ``test`` centre views. The encoder
    is copied, so the caller's module keeps its weights.
    """
    encoder = copy.deepcopy(encoder)
    for p in encoder.parameters():
        p.requires_grad_(True)
    with torch.no_grad():  # eval: BN accepts a batch of one; a test stream reads one item
        dim = encoder.eval()(next(iter(test))[0][None]).shape[1]
    encoder.train()
    head = nn.Linear(dim, num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    model = nn.Sequential(encoder, head).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
    )
    torch.manual_seed(seed)
    # Drop a ragged last batch, unless the subset is smaller than one batch (1% of few images).
    loader = shuffled_loader(train, batch_size, drop_last=len(train) > batch_size)
    _fit_classifier(model, optimizer, loader, epochs, lr, device, precision)
    scores, labels = extract_features(model, test, device, precision=precision)
    model = model.cpu().eval()
    return FinetuneResult(model, topk_accuracy(scores, labels, 1), topk_accuracy(scores, labels, 5))


def shuffled_loader(dataset: Dataset, batch_size: int, drop_last: bool) -> DataLoader:
    """Batches in a new order each epoch: shuffled by the loader, or by an iterable itself."""
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    return DataLoader(dataset, batch_size=batch_size, shuffle=not iterable, drop_last=drop_last)


def _fit_classifier(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    epochs: int,
    lr: float,
    device: torch.device,
    precision: str,
) -> None:
    """Cross-entropy training with a cosine learning rate, shared by linear and fine-tuning."""
    total, step = epochs * len(loader), 0
    for _ in range(epochs):
        for images, targets in loader:
            optimizer.param_groups[0]["lr"] = _cosine(lr, step, total)
            with autocast(device, precision):
                logits = model(images.to(device))
            loss = F.cross_entropy(logits.float(), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
