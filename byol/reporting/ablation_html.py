"""`byol report` on the output of `byol ablate`: its tables, verdicts and plots as one
self-contained HTML page (``ablations.html``), the HTML face of ``report.md``.

The tables are written once, in markdown, by ``ablation_tables``; this page converts them with the
``markdown`` package (already installed with TensorBoard, which depends on it) rather than
rendering the rows a second time, and embeds the plots so the page travels as one file.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from byol.errors import ByolError
from byol.reporting.ablation_tables import PLOT_PNG, REPORT_MD, TABLE_MD

ABLATIONS_HTML = "ablations.html"

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
img { max-width: 100%; }
"""


def is_ablation_folder(folder: Path) -> bool:
    """Whether ``folder`` holds `byol ablate` output: one table, or several and their report."""
    folder = Path(folder)
    return (
        (folder / REPORT_MD).is_file()
        or (folder / TABLE_MD).is_file()
        or any(folder.glob(f"*/{TABLE_MD}"))
    )


def _markdown_source(folder: Path) -> str:
    """report.md when `byol ablate all` wrote one, else every table.md found, with its plot."""
    if (folder / REPORT_MD).is_file():
        return (folder / REPORT_MD).read_text()
    tables = [folder / TABLE_MD] if (folder / TABLE_MD).is_file() else []
    tables += sorted(folder.glob(f"*/{TABLE_MD}"))
    parts = []
    for table in tables:
        plot = table.parent / PLOT_PNG
        image = f"\n\n![{table.parent.name}]({plot.relative_to(folder)})" if plot.is_file() else ""
        parts.append(table.read_text() + image)
    return "\n\n".join(parts)


def _embed_images(body: str, folder: Path) -> str:
    """Every <img src="relative.png"> inside ``folder`` replaced by its bytes, base64-encoded."""

    def embed(match: re.Match) -> str:
        path = (folder / html.unescape(match.group(1))).resolve()
        if not path.is_file() or not path.is_relative_to(folder.resolve()):
            return match.group(0)  # a missing plot stays a broken link, never a crash
        data = base64.b64encode(path.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    return re.sub(r'src="([^"]+\.png)"', embed, body)


def build_ablation_report(folder: Path) -> str:
    """The page's HTML text."""
    import markdown

    folder = Path(folder)
    if not is_ablation_folder(folder):
        raise ByolError(
            f"{folder} holds neither a run (config.json) nor `byol ablate` tables (table.md); "
            "pass a run folder or an ablation output folder."
        )
    body = markdown.markdown(_markdown_source(folder), extensions=["tables"])
    title = f"BYOL ablations: {html.escape(folder.name)}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>{_embed_images(body, folder)}</body></html>\n"
    )
