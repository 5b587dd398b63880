"""``byol ablate all`` (every table on one preset) and ``byol reproduce`` (the evidence that
docs/ablations.md reports: each table at its own preset, rows and seeds, as ``ablations.toml``
lists them), then one report that gathers their verdicts, plots and commands, with the machine
and the date."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

from byol.data.cifar10_jpeg import cifar10_jpeg_available
from byol.experiments import tables
from byol.experiments.ablate import command, run_ablation
from byol.experiments.tables import ABLATIONS
from byol.reporting.ablation_html import ABLATIONS_HTML, build_ablation_report
from byol.reporting.ablation_tables import PLOT_PNG, REPORT_MD, RESULTS_JSON, TABLE_MD
from byol.reporting.verdicts import judge_rows
from byol.run_folder import write_text

EVIDENCE = tables.reproduce_plan()


def machine() -> str:
    """CPU model and core count (and the GPU when torch sees one), as a reader would name it."""
    import torch

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = lines[0].split(":", 1)[1].strip() if lines else model
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{model}, {len(os.sched_getaffinity(0))} cores{gpu}, torch {torch.__version__}"


def evidence_plan(overrides: list[str]) -> list[tuple[str, str, list[str]]]:
    """EVIDENCE with 3 seeds and ``overrides`` added; CIFAR-10 read from the JPEG copy where it
    is at hand (a machine without internet), else fetched by torchvision."""
    jpeg = cifar10_jpeg_available()
    plan = []
    for entry in EVIDENCE:
        own = [*entry.get("set", []), *(entry.get("jpeg", []) if jpeg else [])]
        plan.append((entry["table"], entry["preset"], ["seeds=3", *own, *overrides]))
    return plan


def run_all(
    preset_name: str,
    overrides: list[str] | None = None,
    out: Path | None = None,
    quiet: bool = False,
    jobs: int = 1,
) -> Path:
    """Run every ablation on one preset, then write ``out/report.md``; return its path."""
    overrides = list(overrides or [])
    plan = [(ablation, preset_name, overrides) for ablation in ABLATIONS]
    title = f"The paper's claims at the `{preset_name}` preset's scale"
    text = command(["ablate", "all", "--preset", preset_name], overrides, jobs)
    root = Path(out or f"runs/ablations/{preset_name}")
    return _run_plan(plan, root, quiet, jobs, title, text, nested=False)


def reproduce(
    overrides: list[str] | None = None, out: Path | None = None, quiet: bool = False, jobs: int = 1
) -> Path:
    """Run the EVIDENCE tables, then write ``out/report.md``; return its path."""
    plan, text = evidence_plan(list(overrides or [])), command(["reproduce"], overrides or [], jobs)
    title = "The paper's claims, rerun at a scale a CPU affords"
    return _run_plan(plan, Path(out or "runs/reproduce"), quiet, jobs, title, text, nested=True)


def _run_plan(
    plan: list[tuple[str, str, list[str]]],
    root: Path,
    quiet: bool,
    jobs: int,
    title: str,
    text: str,
    nested: bool,
) -> Path:
    """Each (table, preset, overrides) into ``root`` (``root/preset`` when ``nested``), then the
    report: one verdict table over all of them, and each table with its plot and command."""
    done = []
    for ablation, preset_name, overrides in plan:
        folder = run_ablation(
            ablation, preset_name, overrides, root / preset_name if nested else root, quiet, jobs
        )
        done.append(
            (
                ablation,
                folder,
                command(["ablate", ablation, "--preset", preset_name], overrides, jobs),
            )
        )
    today = datetime.date.today().isoformat()
    lines = [f"# {title}\n", f"Command: `{text}`. Machine: {machine()}. Date: {today}.\n"]
    lines += ["## Verdicts\n", *verdict_table([folder for _, folder, _ in done]), ""]
    for ablation, folder, table_command in done:
        lines.append(f"## `byol ablate {ablation}`\n")
        lines.append(f"Reproduce this table alone: `{table_command}`.\n")
        lines.append((folder / TABLE_MD).read_text().split("\n", 1)[1].strip() + "\n")  # no title
        lines.append(f"![{ablation}]({(folder / PLOT_PNG).relative_to(root)})\n")
    write_text(root / REPORT_MD, "\n".join(lines))
    write_text(root / ABLATIONS_HTML, build_ablation_report(root))  # the same, as one page
    return root / REPORT_MD


def verdict_table(folders: list[Path]) -> list[str]:
    """One line per claim over every table's results.json: the claim, the paper's numbers, ours
    with its spread and the raw-pixel gate, and the verdict."""
    lines = ["| table | claim | paper | ours | verdict |", "|---|---|---|---|---|"]
    for folder in folders:
        record = json.loads((folder / RESULTS_JSON).read_text())
        name = record["ablation"]
        claims = tables.tables()[name].claims if name in tables.tables() else ()
        for verdict in judge_rows(claims, record["rows"], record.get("references") or {}):
            cells = [name, verdict.claim.text, verdict.claim.paper, verdict.effect]
            lines.append(f"| {' | '.join(cells)} | **{verdict.verdict}** |")
    return lines
