"""The weighted k-nearest-neighbour classifier on frozen features (Wu et al., CVPR 2018; the usual
small-scale protocol of BYOL reproductions, docs/method.md), and top-k accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
