"""The report's pictures, drawn with matplotlib and returned as base64 PNG text for embedding."""

from __future__ import annotations

import base64
import io
from typing import Any

import torch

from byol.methods.losses import COLLAPSED_BELOW


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt


def curves_figure(records: list[dict[str, Any]]) -> str | None:
    """Base64 PNG of loss, lr, tau, kNN top-1, collapse and throughput against steps (None: no
    step records)."""
    steps = [r for r in records if "loss" in r]
    if not steps:
        return None
    knn = [r for r in records if isinstance(r.get("knn_top1"), (int, float))]
    plt = pyplot()
    panels = [
        ("loss", "BYOL loss", steps),
        ("lr", "learning rate", steps),
        ("tau", "target EMA tau", steps),
        ("knn_top1", "kNN top-1 (%)", knn),
        ("collapse", "collapse metric", steps),
        ("images_per_second", "training images / s", steps),
    ]
    last_step = max(r["step"] for r in records)
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.8))
    for ax, (key, title, rows) in zip(axes.flat, panels, strict=True):
        xs = [r["step"] for r in rows if isinstance(r.get(key), (int, float))]
        ys = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, color="tab:blue")
        if key == "collapse":
            ax.axhline(COLLAPSED_BELOW, color="tab:red", linestyle="--", linewidth=1)
            ax.set_ylim(bottom=0)
        if not xs:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlim(0, max(last_step, 1) * 1.03)  # one step axis for all panels
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    encoded = _png(fig)
    plt.close(fig)
    return encoded


def pca_2d(features: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
    """Coordinates (N x 2) on the first two principal components, and the fraction of the
    variance each explains. An exact SVD: a few thousand rows of a few hundred dims is cheap."""
    centred = features.double() - features.double().mean(0)
    _, singular, right = torch.linalg.svd(centred, full_matrices=False)
    coords = centred @ right[:2].T
    variance = singular**2
    share = (variance[:2] / variance.sum().clamp_min(1e-12)).tolist()
    return coords.float(), (share[0], share[1] if len(share) > 1 else 0.0)


def embedding_figure(
    features: torch.Tensor, labels: torch.Tensor, classes: list[str]
) -> tuple[str, tuple[float, float]]:
    """Base64 PNG of the PCA map coloured by class, and the explained-variance shares."""
    coords, share = pca_2d(features)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 6.5))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c in labels.unique().tolist():
        points = coords[labels == c]
        name = classes[c] if 0 <= c < len(classes) else str(c)
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7, color=cmap(c % cmap.N), label=name)
    ax.set_xlabel(f"PC1 ({100 * share[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * share[1]:.1f}% of variance)")
    ax.set_title(f"frozen-encoder features of {len(labels)} test images, PCA", fontsize=10)
    ax.legend(fontsize=8, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    encoded = _png(fig)
    plt.close(fig)
    return encoded, share
