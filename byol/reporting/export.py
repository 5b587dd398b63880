"""``byol export``: embeddings of a dataset as .npy (with labels and where each image came from),
and a picture of nearest-neighbour retrievals a person can judge at a glance."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from byol import run_folder
from byol.data import ImageFolderDataset, Source
from byol.evaluation.protocols import Evaluation, safe_name
from byol.files import expand_home


def _sources(dataset: Source, name: str, split: str, classes: list[str], count: int) -> list[str]:
    """A file path per item where the images came from files, else '[index]'.

    Folders are held in memory in the order of their file listing, so listing them again
    (cheap: no decoding) recovers each item's path.
    """
    files = dataset.files()
    root = expand_home(name)
    if files is None and root.is_dir():
        if split == "train":
            folder = root / "train" if (root / "train").is_dir() else root
        else:
            folder = next((root / s for s in ("test", "val") if (root / s).is_dir()), root)
        samples = ImageFolderDataset(folder, classes=classes or None).samples
        files = [path for path, label in samples if label >= 0]
    paths = [str(path) for path in files or []]
    return paths if len(paths) == count else [f"[{i}]" for i in range(count)]


def pick_queries(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """``per_class`` random items of every class, in class order; the same ones for a seed."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    chosen = [order[labels[order] == c][:per_class] for c in labels.unique().tolist()]
    return torch.cat(chosen)


def neighbours(
    bank: torch.Tensor, queries: torch.Tensor, k: int = 8, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Indices (Q x k) of the k most cosine-similar bank rows; ``exclude[i]`` is never returned
    for query i (the query itself when bank and queries are one set)."""
    similarity = F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).T
    if exclude is not None:
        similarity[torch.arange(len(queries)), exclude] = -float("inf")
    return similarity.topk(min(k, bank.shape[0]), dim=1).indices


def retrieval_figure(
    path: Path,
    query_images: list[torch.Tensor],
    query_labels: list[int],
    neighbour_images: list[list[torch.Tensor]],
    neighbour_labels: list[list[int]],
    classes: list[str],
) -> None:
    """A grid: one row per query (first column), its neighbours to the right; a neighbour's
    title is green when its class matches the query's, red when not."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    rows, cols = len(query_images), 1 + max(len(n) for n in neighbour_images)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.25 * rows), squeeze=False)
    for r in range(rows):
        cells = [(query_images[r], query_labels[r], "black")]
        cells += [
            (img, lab, "green" if lab == query_labels[r] else "red")
            for img, lab in zip(neighbour_images[r], neighbour_labels[r], strict=True)
        ]
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(cells):
                image, label, colour = cells[c]
                ax.imshow(image.permute(1, 2, 0).numpy())
                name = classes[label] if 0 <= label < len(classes) else str(label)
                ax.set_title(("query: " if c == 0 else "") + name[:12], fontsize=6, color=colour)
    fig.suptitle("nearest neighbours in the training set (cosine, frozen encoder)", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    run_folder.write_bytes(path, buffer.getvalue())
    plt.close(fig)


def export(
    source: str | Path,
    dataset: str | None = None,
    split: str = "test",
    queries_per_class: int = 2,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    k: int = 8,
) -> list[Path]:
    """Write ``<dataset>-<split>-embeddings.npy``, ``-labels.npy``, ``-sources.json`` and
    ``-neighbours.png`` into ``out`` (default RUN_DIR/export); return their paths."""
    ev = Evaluation(source, dataset, overrides or [])
    out_dir = Path(out) if out else ev.out_dir / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    images = ev.train if split == "train" else ev.test
    features, labels = ev.features("byol", split)
    stem = f"{safe_name(ev.dataset)}-{split}"
    written = [
        out_dir / f"{stem}-embeddings.npy",
        out_dir / f"{stem}-labels.npy",
        out_dir / f"{stem}-sources.json",
    ]
    for path, array in zip(
        written[:2],
        (features.numpy().astype(np.float32), labels.numpy().astype(np.int64)),
        strict=True,
    ):
        buffer = io.BytesIO()
        np.save(buffer, array)
        run_folder.write_bytes(path, buffer.getvalue())
    sources = dict(
        dataset=ev.dataset,
        split=split,
        encoder=str(ev.encoder_path),
        classes=ev.info.classes,
        index=list(range(len(labels))),
        source=_sources(images, ev.dataset, split, ev.info.classes, len(labels)),
    )
    run_folder.write_text(written[2], json.dumps(sources) + "\n")

    bank_features, bank_labels = ev.features("byol", "train")
    query = pick_queries(labels, queries_per_class, ev.settings.seed)
    found = neighbours(
        bank_features, features[query], k, exclude=query if split == "train" else None
    )
    figure = out_dir / f"{stem}-neighbours.png"
    retrieval_figure(
        figure,
        [images[int(i)][0] for i in query],
        [int(labels[i]) for i in query],
        [[ev.train[int(j)][0] for j in row] for row in found],
        [[int(bank_labels[j]) for j in row] for row in found],
        ev.info.classes,
    )
    return [*written, figure]
