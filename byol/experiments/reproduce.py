"""``byol ablate all`` (every table on one preset) and ``byol reproduce`` (the evidence that
docs/ablations.md reports: each table at its own preset, rows and seeds, as ``ablations.toml``
lists them), then one report that gathers their verdicts, plots and commands, with the machine
and the date."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
from pathlib import Path

from byol.data.cifar10_jpeg import cifar10_jpeg_available
from byol.experiments import tables
from byol.experiments.ablate import command as ablate_command
from byol.experiments.ablate import run_ablation
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
    cores = len(os.sched_getaffinity(0))
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{model}, {cores} cores{gpu}, torch {torch.__version__}"


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
    root = Path(out or f"runs/ablations/{preset_name}")
    overrides = list(overrides or [])
    plan = [(ablation, preset_name, overrides) for ablation in ABLATIONS]
    title = f"The paper's claims at the `{preset_name}` preset's scale"
    command = ablate_command("all", preset_name, overrides, jobs)
    return _run_plan(plan, root, quiet, jobs, title, command, nested=False)


def reproduce(
    overrides: list[str] | None = None, out: Path | None = None, quiet: bool = False, jobs: int = 1
) -> Path:
    """Run the EVIDENCE tables, then write ``out/report.md``; return its path."""
    root = Path(out or "runs/reproduce")
    plan = evidence_plan(list(overrides or []))
    jobs_args = ["--jobs", str(jobs)] if jobs > 1 else []
    set_args = [part for item in overrides or [] for part in ("--set", item)]
    command = shlex.join(["byol", "reproduce", *jobs_args, *set_args])
    title = "The paper's claims, rerun at a scale a CPU affords"
    return _run_plan(plan, root, quiet, jobs, title, command, nested=True)


def _run_plan(
    plan: list[tuple[str, str, list[str]]],
    root: Path,
    quiet: bool,
    jobs: int,
    title: str,
    command: str,
    nested: bool,
) -> Path:
    """Each (table, preset, overrides) into ``root`` (``root/preset`` when ``nested``), then the
    report: one verdict table over all of them, and each table with its plot and command."""
    folders = []
    for ablation, preset_name, overrides in plan:
        base = root / preset_name if nested else root
        folder = run_ablation(ablation, preset_name, overrides, base, quiet, jobs)
        folders.append((ablation, folder, ablate_command(ablation, preset_name, overrides, jobs)))
    today = datetime.date.today().isoformat()
    lines = [f"# {title}\n", f"Command: `{command}`. Machine: {machine()}. Date: {today}.\n"]
    lines += ["## Verdicts\n", *verdict_table([f for _, f, _ in folders]), ""]
    for ablation, folder, table_command in folders:
        table = (folder / TABLE_MD).read_text()
        lines.append(f"## `byol ablate {ablation}`\n")
        lines.append(f"Reproduce this table alone: `{table_command}`.\n")
        lines.append(table.split("\n", 1)[1].strip() + "\n")  # its own heading dropped
        lines.append(f"![{ablation}]({(folder / PLOT_PNG).relative_to(root)})\n")
    path = root / REPORT_MD
    write_text(path, "\n".join(lines))
    write_text(root / ABLATIONS_HTML, build_ablation_report(root))  # the same, as one page
    return path


def verdict_table(folders: list[Path]) -> list[str]:
    """One line per claim over every table's results.json: the claim, the paper's numbers, ours
    with its spread, and the verdict."""
    lines = ["| table | claim | paper | ours | verdict |", "|---|---|---|---|---|"]
    for folder in folders:
        record = json.loads((folder / RESULTS_JSON).read_text())
        name = record["ablation"]
        claims = tables.tables()[name].claims if name in tables.tables() else ()
        for verdict in judge_rows(claims, record["rows"], record.get("references") or {}):
            cells = [name, verdict.claim.text, verdict.claim.paper, verdict.effect]
            lines.append(f"| {' | '.join(cells)} | **{verdict.verdict}** |")
    return lines
