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

from byol.reporting.ablation_tables import PLOT_PNG, REPORT_MD, TABLE_MD
from byol.reporting.html_report import markdown_html, page

ABLATIONS_HTML = "ablations.html"


def _tables(folder: Path) -> list[Path]:
    """The table in ``folder``, then those one folder down (`byol ablate` NAME, then all)."""
    return [*folder.glob(TABLE_MD), *sorted(folder.glob(f"*/{TABLE_MD}"))]


def is_ablation_folder(folder: Path) -> bool:
    """Whether ``folder`` holds `byol ablate` output: one table, or several and their report."""
    return (Path(folder) / REPORT_MD).is_file() or bool(_tables(Path(folder)))


def _embed(match: re.Match, folder: Path) -> str:
    """A plot's relative path inside ``folder`` as its bytes; a missing plot stays a broken link,
    never a crash."""
    path = (folder / html.unescape(match.group(1))).resolve()
    if not path.is_file() or not path.is_relative_to(folder.resolve()):
        return match.group(0)
    return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'


def build_ablation_report(folder: Path) -> str:
    """The page's HTML text: report.md where `byol ablate all` or `byol reproduce` wrote one,
    else every table.md found, each with its plot."""
    folder = Path(folder)
    if (folder / REPORT_MD).is_file():
        source = (folder / REPORT_MD).read_text()
    else:
        plots = [(t, (t.parent / PLOT_PNG).relative_to(folder)) for t in _tables(folder)]
        source = "\n\n".join(f"{t.read_text()}\n\n![{p.parent.name}]({p})" for t, p in plots)
    body = markdown_html(source)
    body = re.sub(r'src="([^"]+\.png)"', lambda match: _embed(match, folder), body)
    return page(f"BYOL ablations: {folder.name}", body)
