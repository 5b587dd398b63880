"""An ablation's outputs: table.md (ours next to the paper's numbers, its prose the templates of
ablations.toml's [report]), plot.png and results.json."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from byol.config import METHODS
from byol.methods.losses import COLLAPSED_BELOW
from byol.reporting.figures import pyplot
from byol.reporting.stats import Stat
from byol.reporting.verdicts import FINETUNED, Claim, aggregate, judge_rows
from byol.run_folder import write_bytes, write_text

TABLE_MD, PLOT_PNG, RESULTS_JSON = "table.md", "plot.png", "results.json"
REPORT_MD = "report.md"  # `byol ablate all` and `byol reproduce`: every table's verdicts and plots
# A row's method as a reader names it: a random-init row scores the weights BYOL started from.
METHOD_NAMES = {**METHODS, "random-init": "random init"}
REFERENCES = {"random-init": "random-init encoder", "pixels": "raw pixels"}


def _judged_on(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """The score a table's bars and verdicts use, and its name."""
    if any(FINETUNED in r for r in rows):
        return FINETUNED, "fine-tuned top-1"
    return "knn_top1", "kNN top-1"


def _stat(stat: Stat | None, digits: int = 1) -> str:
    return "–" if stat is None else stat.text(digits)


def markdown(record: dict[str, Any], claims: tuple[Claim, ...], prose: dict[str, str]) -> str:
    """table.md from a table's results.json ``record``, its claims and ablations.toml's [report]."""
    rows, references, s = record["rows"], record["references"], record["eval_settings"]
    (metric, judged), n_images = _judged_on(rows), record["eval_train_images"]
    runs = {r["run_dir"]: r["train_s"] for r in rows if r.get("train_s")}  # each run once
    seeds = sorted({r["seed"] for r in rows if "seed" in r})
    values = dict(
        c=record["config"],
        s=s,
        k=s["knn_ks"][-1],
        images=record["config"]["data"]["train_subset"] or "all",
        bank=f"{n_images} labelled training images" if n_images else "every labelled image",
        where=", ".join(record["sources"]) or "Section 5",
        departures=", ".join(record["departures"]) or "none",
        targets=", ".join(sorted({r["dataset"] for r in rows if r.get("dataset")})),
        epochs=", ".join(
            f"{f:.0%}: {e} epochs"
            for f, e in zip(s["label_fractions"], s["finetune_epochs"], strict=True)
        ),
        command=record["command"],
        n_seeds=len(seeds),
        seeds=", ".join(map(str, seeds)),
        minutes=sum(runs.values()) / 60,
        judged=judged,
    )
    setup = prose["setup"] + (prose["transfer"] if values["targets"] else "")
    setup += prose["finetuned"] if metric == FINETUNED else ""
    scores = [FINETUNED] if metric == FINETUNED else ["knn_top1", "linear_top1"]
    lines = [
        f"# Ablation `{record['ablation']}` on the `{record['preset']}` preset\n",
        setup.format(**values),
        prose["command"].format(**values),
        f"| variant | method | {'fine-tuned top-1' if metric == FINETUNED else 'kNN | linear'} "
        "| collapse | runs | paper |",
        "|---|---|" + "---:|" * len(scores) + "---:|---|---:|",
    ]
    for (name, method), group in aggregate(rows).items():
        runs_of = [r for r in rows if (r["name"], r["method"]) == (name, method)]
        counts = Counter(r["status"] for r in runs_of).most_common()
        statuses = ", ".join(f"{n} {status}" for status, n in counts)
        shared = sorted({r["shared_with"] for r in runs_of if r.get("shared_with")})
        statuses += f" (shared: {', '.join(shared)})" if shared else ""
        paper = runs_of[0]["paper"]
        cells = [runs_of[0]["label"], METHOD_NAMES[method], *(_stat(group.get(m)) for m in scores)]
        cells += [_stat(group.get("collapse"), 3), statuses]
        cells.append(f"{paper:.1f}" if isinstance(paper, (int, float)) else paper or "–")
        lines.append("| " + " | ".join(cells) + " |")
    for name, label in REFERENCES.items():
        found = references.get(name) or []
        if found:
            knn, linear = (_stat(Stat.of([v[m] for v in found])) for m in scores[:2])
            lines.append(f"| {label} (reference) | – | {knn} | {linear} | | {len(found)} | |")
    lines += ["", prose["verdicts"].format(**values), ""]
    lines += ["| claim | paper | ours | verdict |", "|---|---|---|---|"]
    for verdict in judge_rows(claims, rows, references):
        claim = verdict.claim
        lines.append(f"| {claim.text} | {claim.paper} | {verdict.effect} | {verdict.verdict} |")
    return "\n".join([*lines, "", prose["notes"]])


def plot(
    path: Path, ablation: str, rows: list[dict[str, Any]], references: dict[str, list[dict]]
) -> None:
    """Left: our score, mean over seeds with the standard deviation as error bar, hatched when
    collapsed, and the references as lines; middle: the collapse metric over training; right:
    the paper's numbers."""
    plt = pyplot()
    stats, (metric, score) = aggregate(rows), _judged_on(rows)
    names = list(dict.fromkeys(r["name"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / len(methods)
    fig, (ours, curves, paper) = plt.subplots(1, 3, figsize=(max(12, 3.3 * len(names)), 4.5))
    for i, name in enumerate(names):
        for m, method in enumerate(methods):
            runs = [r for r in rows if (r["name"], r["method"]) == (name, method)]
            group, x = stats.get((name, method), {}), i - 0.4 + width * (m + 0.5)
            if metric in group:
                collapsed = "collapse" in group and group["collapse"].mean < COLLAPSED_BELOW
                style = dict(color=f"C{m}", capsize=3, hatch="//" if collapsed else None)
                label = METHOD_NAMES[method] if i == 0 else None
                ours.bar(x, group[metric].mean, width, yerr=group[metric].std, label=label, **style)
            if runs and isinstance(runs[0]["paper"], (int, float)):
                paper.bar(x, runs[0]["paper"], width, color=f"C{m}")
            lines = [r["collapse_curve"] for r in runs if r.get("collapse_curve")]
            if lines:  # the mean curve over seeds, as long as the shortest
                mean = [sum(values) / len(values) for values in zip(*lines, strict=False)]
                curves.plot(mean, label=f"{name} ({method})")
    for (name, label), style in zip(REFERENCES.items(), ("--", ":"), strict=True):
        values = [v["knn_top1"] for v in references.get(name) or []]
        if values:
            ours.axhline(sum(values) / len(values), color="grey", ls=style, label=label)
    curves.axhline(COLLAPSED_BELOW, color="tab:red", ls="--", lw=1)
    ours.set_title(f"ours: {score}, mean ± std over seeds", fontsize=10)
    curves.set_title("collapse metric over training (logged steps)", fontsize=10)
    paper.set_title("paper: ImageNet top-1 (ResNet-50)", fontsize=10)
    for ax in (ours, paper):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylim(0, 100)
    ours.legend(fontsize=8, loc="lower left")
    curves.legend(fontsize=7)
    fig.suptitle(f"byol ablate {ablation}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())


def write_report(
    folder: Path, record: dict[str, Any], claims: tuple[Claim, ...], prose: dict[str, str]
) -> str:
    """results.json, table.md and plot.png in ``folder``; returns the table's text."""
    write_text(folder / RESULTS_JSON, json.dumps(record, indent=2, default=list) + "\n")
    text = markdown(json.loads((folder / RESULTS_JSON).read_text()), claims, prose)
    write_text(folder / TABLE_MD, text)
    plot(folder / PLOT_PNG, record["ablation"], record["rows"], record["references"])
    return text
