"""``byol report RUN_DIR``: one self-contained HTML page about a run, readable by a person.

It shows the run's numbers (summary.json), its curves against steps (metrics.jsonl: loss,
learning rate, tau, kNN accuracy, collapse metric), the evaluation tables (results.json, written
by ``byol eval``), the nearest-neighbour picture (written by ``byol export``), a 2-D PCA map of
the encoder's features of test images coloured by class, and the config. Pictures are PNGs made
with matplotlib and embedded as base64, so the page is one file that opens anywhere, offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import torch

from byol.errors import ByolError

REPORT_NAME = "report.html"
# The collapse metric is sqrt(d) x the mean per-dimension std of the l2-normalised projections.
# Embeddings spread evenly over only r of the d dimensions score about sqrt(r / d), so 0.1 means
# about 1% of the dimensions in use (2-3 of 256): collapsed for any practical purpose. Healthy
# runs measured here stay near 0.9, so the warning does not fire on ordinary noise.
COLLAPSE_WARNING = 0.1
MAX_LOGGED_UNREADABLE = 5

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
img.neighbours { max-width: 720px; }
.banner { background: #fde2e1; border: 2px solid #c0392b; padding: 0.8em 1em; font-weight: 600; }
.note { background: #fff6d6; border: 1px solid #d4ac0d; padding: 0.6em 1em; }
.muted { color: #666; }
"""


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as a list of dicts; a line cut short by a killed process is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
    return records


def collapse_warning(records: list[dict[str, Any]], threshold: float = COLLAPSE_WARNING) -> str:
    """The banner's text when a logged collapse metric fell below ``threshold``, else ''."""
    low = [r for r in records if isinstance(r.get("collapse"), (int, float))]
    low = [r for r in low if r["collapse"] < threshold]
    if not low:
        return ""
    worst = min(low, key=lambda r: r["collapse"])
    return (
        f"Possible collapse: the collapse metric fell to {worst['collapse']:.3f} at step "
        f"{worst['step']} (below {threshold}; 1 = well spread, 0 = every image maps to one point)."
        " Embeddings from this run are likely useless; check the learning rate, tau_base and "
        "the predictor, then start again."
    )


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot() -> Any:
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
    plt = _pyplot()
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
            ax.axhline(COLLAPSE_WARNING, color="tab:red", linestyle="--", linewidth=1)
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
    plt = _pyplot()
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


def _embedding_section(run_dir: Path, points: int, overrides: list[str]) -> str:
    if points <= 0:
        return '<p class="muted">Embedding map not requested (--points 0).</p>'
    from byol.data import subset
    from byol.evaluate import extract_features
    from byol.probes import Transformed
    from byol.protocols import Evaluation

    try:
        ev = Evaluation(run_dir, None, overrides)
    except ByolError as error:
        return f'<p class="muted">No embedding map: {html.escape(str(error))}</p>'
    images = subset(ev.test, points, ev.settings.seed)  # class-balanced, the same every time
    encoder = ev.encoder("byol").to(ev.device)
    c = ev.config
    features, labels = extract_features(
        encoder, Transformed(images, ev.eval_transform), ev.device, c.eval_batch_size, c.precision
    )
    encoded, _ = embedding_figure(features, labels, ev.info.classes)
    return (
        f'<img alt="PCA map of test-image embeddings" src="data:image/png;base64,{encoded}">'
        f'<p class="muted">{len(labels)} class-balanced images of the {html.escape(ev.dataset)} '
        "test split through the exported encoder (eval view, no augmentation), projected on "
        "their first two principal components. Separated colours mean the classes are "
        "linearly apparent in the representation.</p>"
    )


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = []
    for key, value in rows:
        if isinstance(value, float):
            text, css = f"{value:.4g}", ' class="num"'
        else:
            text, css = str(value), ' class="num"' if isinstance(value, int) else ""
        cells.append(f"<tr><th>{html.escape(key)}</th><td{css}>{html.escape(text)}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def markdown_table_html(markdown: str) -> str:
    """A pipe table (``| a | b |`` rows, a ``|---|`` rule under the header) as an HTML table."""
    lines = [line.strip() for line in markdown.strip().splitlines() if line.strip()]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    rows = [row for row in rows if not all(set(cell) <= set("-: ") for cell in row)]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in rows[0])
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{html.escape(c)}</td>' if i else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows[1:]
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _results_section(run_dir: Path) -> str:
    from byol.results import RESULTS_JSON, heading, load_results, table

    if not (run_dir / RESULTS_JSON).is_file():
        return '<p class="muted">No evaluation yet: run <code>byol eval all RUN_DIR</code>.</p>'
    try:
        results = load_results(run_dir)
        parts = [
            f"<h3>{html.escape(heading(results, dataset))}</h3>"
            + markdown_table_html(table(results, dataset))
            for dataset in results["datasets"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return f'<p class="muted">{RESULTS_JSON} could not be read ({html.escape(str(error))}).</p>'
    return "".join(parts)


def _neighbours_section(run_dir: Path) -> str:
    pictures = sorted((run_dir / "export").glob("*-neighbours.png"))
    if not pictures:
        return '<p class="muted">No picture yet: run <code>byol export RUN_DIR</code>.</p>'
    parts = []
    for picture in pictures:
        encoded = base64.b64encode(picture.read_bytes()).decode("ascii")
        parts.append(
            f"<p>{html.escape(picture.name)}: each row is a query (first column) and its nearest "
            "training images; green titles share the query's class, red ones do not.</p>"
            '<img class="neighbours" alt="nearest neighbours" '
            f'src="data:image/png;base64,{encoded}">'
        )
    return "".join(parts)


def _summary_rows(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    names = [
        ("steps", "steps"),
        ("knn_top1", "kNN top-1, BYOL encoder (%)"),
        ("knn_top1_random_init", "kNN top-1, random-init encoder (%)"),
        ("knn_top1_pixels", "kNN top-1, raw pixels (%)"),
        ("collapse", "collapse metric, last logged step"),
        ("wall_time_s", "wall time (s)"),
        ("images_per_second", "training images per second"),
        ("peak_memory_mb", "peak memory (MB)"),
        ("stopped_early", "stopped early (max_minutes)"),
    ]
    return [(label, summary[key]) for key, label in names if summary.get(key) is not None]


def build_report(run_dir: Path, points: int = 2000, overrides: list[str] | None = None) -> str:
    """The report's HTML text."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ByolError(f"{run_dir} is not a folder; pass the run folder that byol pretrain wrote.")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise ByolError(f"{run_dir} has no config.json; is it a byol run folder?")
    from byol.config import Config

    config = Config.load(config_path)
    records = read_records(run_dir)
    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    except ValueError:  # written by an older version, not atomically, and cut short
        summary = {}

    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>BYOL run {html.escape(run_dir.name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>BYOL run <code>{html.escape(str(run_dir))}</code></h1>",
        f"<p>{html.escape(config.backbone)} on {html.escape(config.dataset)} at "
        f"{config.image_size} px, batch {config.batch_size}, {config.epochs} "
        f"epoch{'s' if config.epochs != 1 else ''}, "
        f"optimizer {html.escape(config.optimizer)}, base lr {config.base_lr}, "
        f"tau_base {config.tau_base}.</p>",
    ]
    warning = collapse_warning(records)
    if warning:
        out.append(f'<div class="banner" id="collapse-warning">{html.escape(warning)}</div>')
    if not summary:
        out.append(
            '<p class="note">This run has not finished (no summary.json): the curves show '
            "what it logged so far; continue it with <code>byol pretrain --resume "
            f"{html.escape(str(run_dir))}</code>.</p>"
        )
    unreadable = summary.get("unreadable_images") or []
    if unreadable:
        shown = ", ".join(unreadable[:MAX_LOGGED_UNREADABLE])
        out.append(
            f'<p class="note">{len(unreadable)} unreadable image files were skipped '
            f"(first: {html.escape(shown)}).</p>"
        )
    if summary:
        out += ["<h2>Summary</h2>", _table(_summary_rows(summary))]
    out.append("<h2>Training curves</h2>")
    curves = curves_figure(records)
    if curves is None:
        out.append('<p class="muted">metrics.jsonl holds no training steps yet.</p>')
    else:
        out.append(f'<img alt="training curves" src="data:image/png;base64,{curves}">')
        out.append(
            f'<p class="muted">The dashed red line is the collapse warning level '
            f"({COLLAPSE_WARNING}). kNN: weighted k={config.knn_k}, T={config.knn_temperature}, "
            "on the test split after each epoch and at the end.</p>"
        )
    out += ["<h2>Embedding map</h2>", _embedding_section(run_dir, points, overrides or [])]
    out += ["<h2>Evaluation</h2>", _results_section(run_dir)]
    out += ["<h2>Nearest neighbours</h2>", _neighbours_section(run_dir)]
    out += ["<h2>Configuration</h2>", _table(list(config.to_dict().items()))]
    out.append("</body></html>\n")
    return "\n".join(out)


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    points: int = 2000,
    overrides: list[str] | None = None,
) -> Path:
    """Write the report (default RUN_DIR/report.html) and return its path."""
    run_dir = Path(run_dir)
    text = build_report(run_dir, points, overrides)
    path = Path(out) if out else run_dir / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
