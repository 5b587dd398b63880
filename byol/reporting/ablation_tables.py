"""An ablation's outputs: table.md (ours next to the paper's numbers), plot.png, results.json."""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byol.config import METHODS, Config, departures
from byol.evaluation.eval_settings import EvalSettings
from byol.methods.losses import COLLAPSED_BELOW
from byol.reporting.verdicts import Claim, Stat, aggregate, judge_rows
from byol.run_folder import write_bytes, write_text

TABLE_MD, PLOT_PNG, RESULTS_JSON = "table.md", "plot.png", "results.json"
# A row's method as a reader names it: a random-init row scores the weights BYOL started from.
METHOD_NAMES = {**METHODS, "random-init": "random init"}
FINETUNED = "finetune_top1"  # the score of a label-fraction table; kNN and linear otherwise
REPORT_MD = "report.md"  # `byol ablate all`: every table's verdicts and plots


@dataclass(frozen=True)
class Report:
    """What a table's report says beside its rows: the setup every row shares and the claims."""

    ablation: str
    preset: str
    config: Config  # BYOL's, before any row changes it
    eval_settings: EvalSettings
    eval_train_images: int  # the frozen-feature protocols' labelled training images (0 = all)
    command: str
    claims: tuple[Claim, ...]
    sources: tuple[str, ...]  # where in arXiv:2006.07733 the paper's numbers are


def _number(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else value or "–"


def _setup(report: Report) -> str:
    config, settings, train_images = report.config, report.eval_settings, report.eval_train_images
    images = f"{config.data.train_subset}" if config.data.train_subset else "all"
    bank = f"{train_images} labelled training images" if train_images else "every labelled image"
    where = ", ".join(report.sources) or "Section 5"
    return (
        f"**Ours:** {config.data.dataset}, {config.model.backbone} at {config.data.image_size} "
        f"px, {images} training images x {config.schedule.epochs} epoch(s), batch "
        f"{config.optim.batch_size}, {config.optim.optimizer} base lr {config.optim.base_lr} x "
        f"B/256, tau_base {config.schedule.tau_base} ({config.schedule.tau_schedule}), unless "
        "the row changes it. Test-set top-1 (%): weighted kNN "
        f"(k={settings.knn_ks[-1]}, T={settings.knn_temperature}) and a linear classifier on "
        f"frozen, standardised features ({settings.linear_epochs} epochs, lr chosen on a "
        f"{settings.val_fraction:.0%} validation split), both trained on {bank} (class-balanced)."
        "\n"
        f"**Paper:** ImageNet, ResNet-50, 300 epochs, linear top-1 (arXiv:2006.07733, {where}).\n"
        "**Outside the paper's settings** (every row, unless it changes them): "
        f"{', '.join(departures(config)) or 'none'}.\n"
    )


def markdown(
    report: Report, rows: list[dict[str, Any]], references: dict[str, list[dict[str, float]]]
) -> str:
    stats = aggregate(rows)
    seeds = sorted({r["seed"] for r in rows if "seed" in r})
    metric, judged = _judged_on(rows)
    scores = [FINETUNED] if metric == FINETUNED else ["knn_top1", "linear_top1"]
    header = "fine-tuned top-1" if metric == FINETUNED else "kNN | linear"
    lines = [
        f"# Ablation `{report.ablation}` on the `{report.preset}` preset\n",
        _setup(report) + _scored_on(rows, report.eval_settings),
        f"Command: `{report.command}`; {len(seeds)} seed(s) per row "
        f"({', '.join(map(str, seeds))}); training time {_train_minutes(rows):.0f} min, summed "
        "over the runs (runs side by side with --jobs share it).\n",
        f"| variant | method | {header} | collapse | runs | paper |",
        "|---|---|" + "---:|" * len(scores) + "---:|---|---:|",
    ]
    lines += _table_rows(stats, rows, scores)
    for name, label in (("random-init", "random-init encoder"), ("pixels", "raw pixels")):
        values = references.get(name) or []
        if values:
            knn = _stat(Stat.of([v["knn_top1"] for v in values]))
            linear = _stat(Stat.of([v["linear_top1"] for v in values]))
            lines.append(f"| {label} (reference) | – | {knn} | {linear} | | {len(values)} | |")
    lines += ["", f"## Verdicts (judged on {judged}: a difference counts beyond its spread)", ""]
    lines += ["| claim | paper | ours | verdict |", "|---|---|---|---|"]
    for verdict in judge_rows(report.claims, rows, references):
        claim = verdict.claim
        lines.append(f"| {claim.text} | {claim.paper} | {verdict.effect} | {verdict.verdict} |")
    lines += [
        "",
        "Cells are mean ± standard deviation over seeds. Spread of a difference: the sum of the "
        "standard deviations of what it is made of. collapse: standard deviation of the "
        "l2-normalised projections over the last logged batch, times sqrt(dim); about 1 when "
        "spread over every dimension, 0 for a constant. Below 0.1 a run is reported as "
        "collapsed; its kNN and linear numbers are still given. shared: the run of an identical "
        "config, made for another row or ablation, is reused.",
        "",
    ]
    return "\n".join(lines)


def _table_rows(
    stats: dict[tuple[str, str], dict[str, Stat]], rows: list[dict[str, Any]], scores: list[str]
) -> list[str]:
    """One line per (variant, method): the scores over seeds, the runs' statuses, the paper."""
    lines = []
    for (name, method), group in stats.items():
        runs = [r for r in rows if (r["name"], r["method"]) == (name, method)]
        counts = Counter(r["status"] for r in runs).most_common()
        statuses = ", ".join(f"{n} {s}" for s, n in counts)
        shared = {r["shared_with"] for r in runs if r.get("shared_with")}
        if shared:
            statuses += f" (shared: {', '.join(sorted(shared))})"
        cells = [runs[0]["label"], METHOD_NAMES[method], *(_stat(group.get(m)) for m in scores)]
        cells += [_stat(group.get("collapse"), 3), statuses, _number(runs[0]["paper"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _scored_on(rows: list[dict[str, Any]], settings: EvalSettings) -> str:
    """What a transfer or label-fraction table scores, beyond the frozen-feature protocols."""
    text = ""
    targets = sorted({r["dataset"] for r in rows if r.get("dataset")})
    if targets:
        text += (
            f"**Transfer:** every row is scored on {', '.join(targets)} (kNN and linear on "
            "frozen features, the protocols above); random init: the weights BYOL's run of the "
            "same seed started from.\n"
        )
    if _judged_on(rows)[0] == FINETUNED:
        epochs = ", ".join(
            f"{f:.0%}: {e} epochs"
            for f, e in zip(settings.label_fractions, settings.finetune_epochs, strict=True)
        )
        text += (
            "**Fine-tuned:** encoder and a linear head trained together on the labels of a "
            "class-balanced fraction of the images the encoder was pretrained on (its "
            f"train_subset) (SGD, Nesterov, lr {settings.finetune_lr}, batch "
            f"{settings.finetune_batch_size}, {epochs}; crop and flip views), test-set top-1; "
            "seed N draws label subset N. Random init: the same, from the weights BYOL's run "
            "started from (supervised training from scratch). Paper: ImageNet, ResNet-50 "
            "(arXiv:2006.07733, Table 2).\n"
        )
    return text


def _judged_on(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """The score a table's bars and verdicts use, and its name: fine-tuned top-1 in a
    label-fraction table, kNN top-1 otherwise."""
    if any(FINETUNED in r for r in rows):
        return FINETUNED, "fine-tuned top-1"
    return "knn_top1", "kNN top-1"


def _train_minutes(rows: list[dict[str, Any]]) -> float:
    """The runs' own wall times (summary.json), each run once: the same on every reuse."""
    seconds: dict[str, float] = {}
    for row in rows:  # a random-init row shares BYOL's run but trained nothing itself
        seconds[row["run_dir"]] = max(seconds.get(row["run_dir"], 0.0), row.get("train_s") or 0.0)
    return sum(seconds.values()) / 60


def _stat(stat: Stat | None, digits: int = 1) -> str:
    if stat is None:
        return "–"
    if stat.n == 1:
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def plot(
    path: Path, ablation: str, rows: list[dict[str, Any]], references: dict[str, list[dict]]
) -> None:
    """Left: our score, mean over seeds with the standard deviation as error bar, hatched when
    collapsed, and the references as lines; middle: the collapse metric over training; right:
    the paper's numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    for name, label, style in (("random-init", "random init", "--"), ("pixels", "pixels", ":")):
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
    folder: Path,
    report: Report,
    rows: list[dict[str, Any]],
    references: dict[str, list[dict[str, float]]],
    wall_s: float,
) -> str:
    """table.md, plot.png and results.json in ``folder``; returns the table's text."""
    text = markdown(report, rows, references)
    write_text(folder / TABLE_MD, text)
    plot(folder / PLOT_PNG, report.ablation, rows, references)
    record = dict(ablation=report.ablation, preset=report.preset, command=report.command)
    record.update(config=report.config.to_dict(), eval_settings=vars(report.eval_settings))
    record.update(eval_train_images=report.eval_train_images, rows=rows, references=references)
    record["wall_s"] = wall_s
    write_text(folder / RESULTS_JSON, json.dumps(record, indent=2, default=list) + "\n")
    return text
