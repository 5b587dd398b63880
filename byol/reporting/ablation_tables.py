"""An ablation's outputs: table.md (ours next to the paper's numbers), plot.png, results.json."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path
from typing import Any

from byol.config import METHODS, Config
from byol.evaluation.eval_settings import EvalSettings
from byol.run_folder import write_bytes, write_text

TABLE_MD, PLOT_PNG, RESULTS_JSON = "table.md", "plot.png", "results.json"


def _number(value: Any, sign: bool = False) -> str:
    if isinstance(value, (int, float)):
        return f"{value:+.1f}" if sign else f"{value:.1f}"
    return value or "–"


def _delta(rows: list[dict[str, Any]], row: dict[str, Any], key: str) -> float | None:
    """``row[key]`` minus the same method's value on the reference variant."""
    reference = next(
        (r for r in rows if r["name"] == row["reference"] and r["method"] == row["method"]), None
    )
    if reference is None or reference is row:
        return None
    mine, theirs = row.get(key), reference.get(key)
    if isinstance(mine, (int, float)) and isinstance(theirs, (int, float)):
        return mine - theirs
    return None


def _setup(config: Config, settings: EvalSettings, train_images: int) -> str:
    images = f"{config.train_subset}" if config.train_subset else "all"
    bank = f"{train_images} labelled training images" if train_images else "every labelled image"
    return (
        f"**Ours:** {config.dataset}, {config.backbone} at {config.image_size} px, {images} "
        f"training images x {config.epochs} epoch(s), batch {config.batch_size}, "
        f"{config.optimizer} base lr {config.base_lr} x B/256, tau_base {config.tau_base} "
        f"({config.tau_schedule}), unless the row changes it. Test-set top-1 (%): weighted kNN "
        f"(k={settings.knn_ks[-1]}, T={settings.knn_temperature}) and a linear classifier on "
        f"frozen, standardised features ({settings.linear_epochs} epochs, lr chosen on a "
        f"{settings.val_fraction:.0%} validation split), both trained on {bank} (class-balanced)."
        "\n"
        "**Paper:** ImageNet, ResNet-50, 300 epochs, linear top-1 (arXiv:2006.07733, Section 5).\n"
    )


def markdown(
    ablation: str,
    preset_name: str,
    config: Config,
    settings: EvalSettings,
    train_images: int,
    rows: list[dict[str, Any]],
    random_init: dict[str, float] | None,
    command: str,
) -> str:
    lines = [
        f"# Ablation `{ablation}` on the `{preset_name}` preset\n",
        _setup(config, settings, train_images),
        f"Command: `{command}`\n",
        "| variant | method | kNN | linear | Δ linear | collapse | status | paper | paper Δ |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        status = row["status"]
        if row.get("shared_with"):
            status += f" (shared: {row['shared_with']})"
        cells = [
            row["label"],
            METHODS[row["method"]],
            _number(row.get("knn_top1")),
            _number(row.get("linear_top1")),
            _number(_delta(rows, row, "linear_top1"), sign=True),
            f"{row['collapse']:.3f}" if isinstance(row.get("collapse"), float) else "–",
            status,
            _number(row["paper"]),
            _number(_delta(rows, row, "paper"), sign=True),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if random_init is not None:
        knn, linear = _number(random_init["knn_top1"]), _number(random_init["linear_top1"])
        lines.append(f"| random-init encoder (no pretraining) | – | {knn} | {linear} | | | | | |")
    lines += [
        "",
        "Δ: difference to the same method's row "
        f"`{rows[0]['reference'] if rows else ''}` (percentage points). shared: the run of an "
        "identical config, made for another row or ablation, is reused. collapse: standard "
        "deviation of the l2-normalised projections over the last logged batch, times "
        "sqrt(dim); about 1 when spread over every dimension, sqrt(k/d) when spread evenly over "
        "only k of d dimensions, 0 for a constant. Below 0.1 (under 1% of the dimensions in use) "
        "a run is reported as collapsed; its kNN and linear numbers are still given.",
        "",
    ]
    return "\n".join(lines)


def plot(path: Path, ablation: str, rows: list[dict[str, Any]], random_init: dict | None) -> None:
    """Left: our linear top-1 (bars, hatched when collapsed) and kNN (dots); right: the paper."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["name"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / len(methods)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(names) * 2), 4.5), sharey=True)
    for m, method in enumerate(methods):
        colour = f"C{m}"
        for r in rows:
            if r["method"] != method:
                continue
            x = names.index(r["name"]) - 0.4 + width * (m + 0.5)
            if isinstance(r.get("linear_top1"), float):
                hatch = "//" if r["status"] == "collapsed" else None
                label = METHODS[method] if r is _first(rows, method) else None
                axes[0].bar(x, r["linear_top1"], width, color=colour, hatch=hatch, label=label)
                axes[0].plot(x, r["knn_top1"], "o", color="black", markersize=4)
            if isinstance(r["paper"], (int, float)):
                axes[1].bar(x, r["paper"], width, color=colour)
            if r["paper"] is not None:
                text = _number(r["paper"])
                axes[1].text(x, 2 + (r["paper"] if text != "collapse" else 0), text,
                             rotation=90, ha="center", va="bottom", fontsize=8)  # fmt: skip
    if random_init is not None:
        axes[0].axhline(random_init["linear_top1"], color="grey", ls="--", label="random init")
    axes[0].plot([], [], "o", color="black", markersize=4, label="kNN")
    axes[0].set_title("ours: linear (bars), kNN (dots), hatched = collapsed", fontsize=10)
    axes[1].set_title("paper: ImageNet linear top-1, 300 epochs", fontsize=10)
    axes[0].set_ylabel("test top-1 (%)")
    for ax in axes:
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylim(0, 100)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"byol ablate {ablation}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())


def _first(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    return next(
        r for r in rows if r["method"] == method and isinstance(r.get("linear_top1"), float)
    )


def write_report(
    folder: Path,
    ablation: str,
    preset_name: str,
    config: Config,
    settings: EvalSettings,
    train_images: int,
    rows: list[dict[str, Any]],
    random_init: dict[str, float] | None,
    overrides: list[str],
) -> None:
    command = shlex.join(
        ["byol", "ablate", ablation, "--preset", preset_name]
        + [part for item in overrides for part in ("--set", item)]
    )
    text = markdown(
        ablation, preset_name, config, settings, train_images, rows, random_init, command
    )
    write_text(folder / TABLE_MD, text)
    plot(folder / PLOT_PNG, ablation, rows, random_init)
    record = dict(
        ablation=ablation, preset=preset_name, command=command, config=config.to_dict(),
        eval_settings=vars(settings), eval_train_images=train_images, rows=rows,
        random_init=random_init,
    )  # fmt: skip
    write_text(folder / RESULTS_JSON, json.dumps(record, indent=2, default=list) + "\n")
