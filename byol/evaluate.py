"""Evaluation on frozen features: feature extraction, the weighted kNN classifier, a cache."""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


@functools.cache  # autocast() asks every step; the CPU's flags do not change
def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bf16 natively (x86 avx512_bf16 or amx_bf16). Read from the kernel's
    flags because torch's own check also says yes where bf16 is emulated, and slower than fp32."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    lines = [line for line in text.splitlines() if line.startswith("flags")]
    flags = {flag for line in lines for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(device: torch.device, precision: str) -> str:
    """``auto`` is bf16 on a CUDA device that has it and on a CPU with native bf16 (1.24x faster
    on the main job with the same kNN, BENCHMARKS.md); fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    device: torch.device,
    batch_size: int = 512,
    precision: str = "fp32",
    num_workers: int = 0,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features NxD float32 on CPU, labels N int64) of a dataset whose items are (image, label).

    Encoders that end in a pooled NxDx1x1 map (a ResNet trunk without its fc) are flattened.
    """
    was_training = encoder.training
    encoder.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    features, labels = [], []
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            features.append(encoder(images).flatten(1).float().cpu())  # NxDx1x1 too
        labels.append(torch.as_tensor(targets))
    encoder.train(was_training)
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def knn_predict(
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores (QxC) of a weighted kNN on cosine similarity (Wu et al. 2018; DINO's eval).

    Each of the k nearest bank features votes for its class with weight exp(similarity / T).
    """
    bank = F.normalize(bank_features.float(), dim=1)  # NxD
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, query_features.shape[0], chunk_size):
        query = F.normalize(query_features[start : start + chunk_size].float(), dim=1)  # QxD
        similarity, index = (query @ bank.T).topk(k, dim=1)  # Qxk
        weights = (similarity / temperature).exp()
        votes = torch.zeros(query.shape[0], num_classes)
        votes.scatter_add_(1, bank_labels[index], weights)
        scores.append(votes)
    return torch.cat(scores)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Percentage of rows whose true label is among the k highest scores."""
    k = min(k, scores.shape[1])
    hits = (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return 100.0 * hits.float().mean().item()


def knn_accuracy(
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy (%) of the weighted kNN classifier."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    scores = knn_predict(bank_features, bank_labels, query_features, num_classes, k, temperature)
    return topk_accuracy(scores, query_labels, 1)


def knn_evaluate(
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    ks: tuple[int, ...] = (20, 200),
    temperature: float = 0.1,
) -> dict[str, float]:
    """Top-1 and top-5 (%) of the weighted kNN for each k: keys ``knn{k}_top1``, ``knn{k}_top5``."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    results = {}
    for k in ks:
        scores = knn_predict(
            bank_features, bank_labels, query_features, num_classes, k, temperature
        )
        results[f"knn{k}_top1"] = topk_accuracy(scores, query_labels, 1)
        results[f"knn{k}_top5"] = topk_accuracy(scores, query_labels, 5)
    return results


def cached_features(
    path: Path,
    key: str,
    compute: Callable[[], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features from ``path`` when it was written for the same ``key``, else computed and saved.

    ``key`` names the encoder weights and the preprocessing, so a cache never outlives a change
    of either (a resumed run, another image size).
    """
    path = Path(path)
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(saved, dict) and saved.get("key") == key:
                return saved["features"], saved["labels"]
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):
            pass  # a corrupt cache is recomputed, never trusted
    features, labels = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"key": key, "features": features, "labels": labels}, tmp)
    os.replace(tmp, path)
    return features, labels
