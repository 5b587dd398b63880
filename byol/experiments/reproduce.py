"""``byol ablate all``: every table of ``byol ablate`` in turn, then one report that gathers their
verdicts, plots and wall times, with the command, the machine and the date."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

from byol.experiments.ablate import run_ablation
from byol.experiments.variants import ABLATIONS
from byol.reporting.ablation_html import ABLATIONS_HTML, build_ablation_report
from byol.reporting.ablation_tables import PLOT_PNG, REPORT_MD, TABLE_MD, ablate_command
from byol.run_folder import write_text


def machine() -> str:
    """CPU model and core count (and the GPU when torch sees one), as a reader would name it."""
    import torch

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        model = names[0] if names else model
    cores = len(__import__("os").sched_getaffinity(0))
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{model}, {cores} cores{gpu}, torch {torch.__version__}"


def run_all(
    preset_name: str,
    overrides: list[str] | None = None,
    out: Path | None = None,
    quiet: bool = False,
    jobs: int = 1,
) -> Path:
    """Run every ablation, then write ``out/report.md``; return its path."""
    root = Path(out or f"runs/ablations/{preset_name}")
    overrides = list(overrides or [])
    command = ablate_command("all", preset_name, overrides, jobs)
    sections = []
    for ablation in ABLATIONS:
        folder = run_ablation(ablation, preset_name, overrides, root, quiet, jobs)
        sections.append((ablation, folder))
    today = datetime.date.today().isoformat()
    lines = [
        f"# The paper's claims at the `{preset_name}` preset's scale\n",
        f"Command: `{command}`. Machine: {machine()}. Date: {today}.\n",
    ]
    for ablation, folder in sections:
        table = (folder / TABLE_MD).read_text()
        lines.append(f"## `byol ablate {ablation}`\n")
        lines.append(table.split("\n", 1)[1].strip() + "\n")  # its own heading dropped
        lines.append(f"![{ablation}]({folder.name}/{PLOT_PNG})\n")
    path = root / REPORT_MD
    write_text(path, "\n".join(lines))
    write_text(root / ABLATIONS_HTML, build_ablation_report(root))  # the same, as one page
    return path
