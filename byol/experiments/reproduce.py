"""``byol ablate all`` (every table on one preset) and ``byol reproduce`` (the evidence that
docs/ablations.md reports: each table at its own preset, rows and seeds, as ``ablations.toml``
lists them), then one report that gathers their verdicts, plots and commands, with the machine
and the date."""

from __future__ import annotations

import datetime
from pathlib import Path

from byol.data.cifar10_jpeg import cifar10_jpeg_available
from byol.errors import ByolError
from byol.experiments import tables
from byol.experiments.ablate import command, run_ablation
from byol.experiments.tables import ABLATIONS
from byol.files import read_json
from byol.reporting.ablation_html import ABLATIONS_HTML, build_ablation_report
from byol.reporting.ablation_tables import PLOT_PNG, REPORT_MD, RESULTS_JSON, TABLE_MD
from byol.reporting.verdicts import judge_rows
from byol.run_folder import write_text
from byol.runtime import describe_machine

EVIDENCE = tables.data()["reproduce"]  # the tables of docs/ablations.md, in its order


def reproduce(
    overrides: list[str] | None = None,
    out: Path | None = None,
    quiet: bool = False,
    jobs: int = 1,
    preset_name: str = "",
) -> Path:
    """Run the EVIDENCE tables with 3 seeds, each under ``out/<its preset>`` (or, given a preset,
    every table on it, under ``out``), then write the report, ``out/report.md``: one verdict table
    over them all, and each table with its plot and the command that reruns it alone; returns its
    path. CIFAR-10 is read from the JPEG copy where it is at hand (a machine without internet),
    else fetched by torchvision."""
    overrides, plan = list(overrides or []), []
    if preset_name:
        root = Path(out or f"runs/ablations/{preset_name}")
        plan = [(ablation, preset_name, overrides, root) for ablation in ABLATIONS]
        words = ["ablate", "all", "--preset", preset_name]
        title = f"The paper's claims at the `{preset_name}` preset's scale"
    else:
        root, jpeg = Path(out or "runs/reproduce"), cifar10_jpeg_available()
        for entry in EVIDENCE:
            own = ["seeds=3", *entry.get("set", []), *(entry.get("jpeg", []) if jpeg else [])]
            plan.append((entry["table"], entry["preset"], own + overrides, root / entry["preset"]))
        words, title = ["reproduce"], "The paper's claims, rerun at a scale a CPU affords"
    folders, sections = [], []
    for ablation, table_preset, settings, folder in plan:
        folders.append(run_ablation(ablation, table_preset, settings, folder, quiet, jobs))
        alone = command(["ablate", ablation, "--preset", table_preset], settings, jobs)
        table = (folders[-1] / TABLE_MD).read_text().split("\n", 1)[1].strip()  # its title dropped
        plot = (folders[-1] / PLOT_PNG).relative_to(root)
        sections.append(f"## `byol ablate {ablation}`\n\nReproduce this table alone: `{alone}`.\n")
        sections.append(f"{table}\n\n![{ablation}]({plot})\n")
    heading = f"# {title}\n\nCommand: `{command(words, overrides, jobs)}`."
    date = datetime.date.today().isoformat()
    lines = [f"{heading} Machine: {describe_machine()}. Date: {date}.\n", "## Verdicts\n"]
    lines += [*verdict_table(folders), "", *sections]
    write_text(root / REPORT_MD, "\n".join(lines))
    write_text(root / ABLATIONS_HTML, build_ablation_report(root))  # the same, as one page
    return root / REPORT_MD


def verdict_table(folders: list[Path]) -> list[str]:
    """One line per claim over every table's results.json: the claim, the paper's numbers, ours
    with its spread and the raw-pixel gate, and the verdict."""
    lines = ["| table | claim | paper | ours | verdict |", "|---|---|---|---|---|"]
    for folder in folders:
        path = folder / RESULTS_JSON
        record = read_json(path, lambda value: isinstance(value, dict) and "rows" in value, "rows")
        if record is None:
            raise ByolError(
                f"{path} is missing or damaged; rerun the same command to write it again."
            )
        name = record["ablation"]
        claims = tables.tables()[name].claims if name in tables.tables() else ()
        for verdict in judge_rows(claims, record["rows"], record.get("references") or {}):
            cells = [name, verdict.claim.text, verdict.claim.paper, verdict.effect]
            lines.append(f"| {' | '.join(cells)} | **{verdict.verdict}** |")
    return lines
