"""``byol report RUN_DIR``: one self-contained HTML page about a run, readable by a person.

It shows the run's numbers (summary.json), its curves against steps (metrics.jsonl: loss,
learning rate, tau, kNN accuracy, collapse metric), the evaluation tables (results.json, written
by ``byol eval``), the example views T and T' of the first step, the nearest-neighbour picture
(written by ``byol export``), a 2-D PCA map of the encoder's features of test images coloured by
class, and the config. Pictures are PNGs made
with matplotlib and embedded as base64, so the page is one file that opens anywhere, offline.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from byol import run_folder, settings
from byol.errors import ByolError
from byol.methods.losses import COLLAPSED_BELOW
from byol.reporting.figures import curves_figure, embedding_figure
from byol.run_folder import REPORT, read_metrics

MAX_LOGGED_UNREADABLE = 5

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
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


def collapse_warning(records: list[dict[str, Any]], threshold: float = COLLAPSED_BELOW) -> str:
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


def _embedding_section(run_dir: Path, points: int, overrides: list[str]) -> str:
    if points <= 0:
        return '<p class="muted">Embedding map not requested (--points 0).</p>'
    from byol.data import subset
    from byol.evaluation.features import extract_features
    from byol.evaluation.probes import Transformed
    from byol.evaluation.protocols import Evaluation

    try:
        ev = Evaluation(run_dir, None, overrides)
    except ByolError as error:
        return f'<p class="muted">No embedding map: {html.escape(str(error))}</p>'
    images = subset(ev.test, points, ev.settings.seed)  # class-balanced, the same every time
    encoder = ev.encoder("byol").to(ev.device)
    c = ev.config
    features, labels = extract_features(
        encoder,
        Transformed(images, ev.eval_transform),
        ev.device,
        c.monitor.eval_batch_size,
        ev.precision,
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


def page(title: str, body: str) -> str:
    """One self-contained HTML page: ``body`` (HTML) under ``title``, in the reports' style."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n{body}\n"
        "</body></html>\n"
    )


def markdown_html(text: str) -> str:
    """Markdown with pipe tables as HTML, by the ``markdown`` package (TensorBoard depends on it,
    so it is always installed)."""
    import markdown

    return markdown.markdown(text, extensions=["tables"])


def _results_section(run_dir: Path) -> str:
    from byol.evaluation.results import heading, load_results, table
    from byol.run_folder import RESULTS_JSON

    if not (run_dir / RESULTS_JSON).is_file():
        return '<p class="muted">No evaluation yet: run <code>byol eval all RUN_DIR</code>.</p>'
    try:
        results = load_results(run_dir)
        parts = [
            f"<h3>{html.escape(heading(results, dataset))}</h3>"
            + markdown_html(table(results, dataset))
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


def _views_section(run_dir: Path) -> str:
    path = run_dir / run_folder.VIEWS
    if not path.is_file():
        return '<p class="muted">No example views (the run started before they were saved).</p>'
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        "<p>The first step's views of the same images: T on the top row, T' below.</p>"
        f'<img alt="example views" src="data:image/png;base64,{encoded}">'
    )


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
    config_path = run_dir / run_folder.CONFIG
    if not config_path.is_file():
        raise ByolError(f"{run_dir} has no config.json; is it a byol run folder?")
    from byol.config import Config

    config = Config.load(config_path)
    records = read_metrics(run_dir)
    summary = run_folder.read_summary(run_dir) or {}
    out = [
        f"<h1>BYOL run <code>{html.escape(str(run_dir))}</code></h1>",
        f"<p>{html.escape(config.model.backbone)} on {html.escape(config.data.dataset)} at "
        f"{config.data.image_size} px, batch {config.optim.batch_size}, {config.schedule.epochs} "
        f"epoch{'s' if config.schedule.epochs != 1 else ''}, "
        f"optimizer {html.escape(config.optim.optimizer)}, base lr {config.optim.base_lr}, "
        f"tau_base {config.schedule.tau_base}.</p>",
    ]
    out += _status_notes(run_dir, records, summary)
    if summary:
        out += ["<h2>Summary</h2>", _table(_summary_rows(summary))]
    out += ["<h2>Example views</h2>", _views_section(run_dir)]
    out += ["<h2>Training curves</h2>", *_curves_section(records, config)]
    out += ["<h2>Embedding map</h2>", _embedding_section(run_dir, points, overrides or [])]
    out += ["<h2>Evaluation</h2>", _results_section(run_dir)]
    out += ["<h2>Nearest neighbours</h2>", _neighbours_section(run_dir)]
    out += ["<h2>Configuration</h2>", _table(list(settings.flatten(config).items()))]
    return page(f"BYOL run {run_dir.name}", "\n".join(out))


def _status_notes(run_dir: Path, records: list[dict[str, Any]], summary: dict[str, Any]) -> list:
    """The collapse banner, an unfinished run's note, the unreadable files skipped."""
    out = []
    warning = collapse_warning(records)
    if warning:
        out.append(f'<div class="banner" id="collapse-warning">{html.escape(warning)}</div>')
    writer = None if summary else run_folder.writer_of(run_dir)
    if writer:
        last = records[-1]["step"] if records else 0
        out.append(
            f'<p class="note">This run is training now (process {html.escape(writer)}): the '
            f"curves are a snapshot up to step {last}; write the report again for more.</p>"
        )
    elif not summary:
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
    return out


def _curves_section(records: list[dict[str, Any]], config: Any) -> list[str]:
    out = []
    curves = curves_figure(records)
    if curves is None:
        out.append('<p class="muted">metrics.jsonl holds no training steps yet.</p>')
    else:
        out.append(f'<img alt="training curves" src="data:image/png;base64,{curves}">')
        out.append(
            f'<p class="muted">The dashed red line is the collapse warning level '
            f"({COLLAPSED_BELOW}). kNN: weighted k={config.monitor.knn_k}, "
            f"T={config.monitor.knn_temperature}, "
            "on the test split after each epoch and at the end.</p>"
        )
    return out


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    points: int = 2000,
    overrides: list[str] | None = None,
) -> Path:
    """Write the report (default RUN_DIR/report.html; for `byol ablate` output,
    FOLDER/ablations.html) and return its path."""
    from byol.reporting.ablation_html import (
        ABLATIONS_HTML,
        build_ablation_report,
        is_ablation_folder,
    )

    run_dir = Path(run_dir)
    if not (run_dir / run_folder.CONFIG).is_file() and is_ablation_folder(run_dir):
        text, default = build_ablation_report(run_dir), run_dir / ABLATIONS_HTML
    else:
        text, default = build_report(run_dir, points, overrides), run_dir / REPORT
    path = Path(out) if out else default
    path.parent.mkdir(parents=True, exist_ok=True)
    run_folder.write_text(path, text)
    return path
