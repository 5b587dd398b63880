"""results.json and results.md in the run folder: method rows, protocol columns (the paper's
layout), one table per evaluation dataset; every command merges its numbers into them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from byol.config import METHODS as PRETRAINED_WITH  # the pretrained encoder's row is its method
from byol.files import read_json
from byol.run_folder import RESULTS_JSON, RESULTS_MD, write_text

METHODS = {
    "byol": "BYOL",
    "random-init": "random-init encoder",
    "supervised": "supervised (from scratch)",
}
FIXED_COLUMNS = [
    ("knn200_top1", "kNN k=200"),
    ("knn200_top5", "kNN k=200 top-5"),
    ("knn20_top1", "kNN k=20"),
    ("linear_top1", "linear top-1"),
    ("linear_top5", "linear top-5"),
    ("linear_paper_top1", "linear (crop+flip) top-1"),
    ("linear_paper_top5", "linear (crop+flip) top-5"),
]
_FINETUNE_KEY = re.compile(r"finetune_([0-9.]+)pct_top([15])$")


def fraction_tag(fraction: float) -> str:
    """0.01 -> '1pct', 0.1 -> '10pct': the name used in result keys and subset files."""
    return f"{round(fraction * 100, 6):g}pct"


def _is_results(value: Any) -> bool:
    """{"datasets": {dataset: {method: {column: value}}}, ...}: the shape update_results writes."""
    if not isinstance(value, dict) or not isinstance(value.get("datasets"), dict):
        return False
    if not all(isinstance(value.get(k, ""), str) for k in ("pretrained_on", "pretrained_with")):
        return False
    tables = value["datasets"].values()
    return all(
        isinstance(rows, dict) and all(isinstance(v, dict) for v in rows.values())
        for rows in tables
    )


def load_results(out_dir: Path) -> dict[str, Any]:
    """results.json of ``out_dir``; none yet, or one unreadable or of another shape (set aside
    as results.json.unreadable, saying so in one line), is an empty table."""
    shape = "byol results ({'datasets': {dataset: {method: {column: value}}}})"
    results = read_json(Path(out_dir) / RESULTS_JSON, _is_results, shape)
    return results if results is not None else {"datasets": {}}


def update_results(
    out_dir: Path,
    pretrained_on: str,
    dataset: str,
    method: str,
    values: dict[str, Any],
    pretrained_with: str | None = None,
) -> dict[str, Any]:
    """Merge ``values`` into results.json under dataset/method, rewrite results.md; return all.

    ``pretrained_with`` (byol, simclr, barlow, moco) names the row of the pretrained encoder,
    which results.json keeps under "byol" whatever the method.
    """
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    results["pretrained_on"] = pretrained_on
    if pretrained_with is not None:
        results["pretrained_with"] = pretrained_with
    results["datasets"].setdefault(dataset, {}).setdefault(method, {}).update(values)
    write_text(out_dir / RESULTS_JSON, json.dumps(results, indent=2) + "\n")
    write_text(out_dir / RESULTS_MD, markdown(results))
    return results


def _columns(rows: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    present = {key for values in rows.values() for key in values}
    columns = [(k, h) for k, h in FIXED_COLUMNS if k in present]
    finetune = sorted(
        (float(m.group(1)), int(m.group(2)), key)
        for key in present
        if (m := _FINETUNE_KEY.match(key))
    )
    columns += [(key, f"{pct:g}% labels top-{k}") for pct, k, key in finetune]
    return columns


def table(results: dict[str, Any], dataset: str) -> str:
    """One markdown table: a row per method, a column per protocol, top-1/top-5 in %."""
    rows = results["datasets"].get(dataset, {})
    columns = _columns(rows)
    lines = [
        "| method | " + " | ".join(h for _, h in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for method, name in METHODS.items():
        if method not in rows:
            continue
        if method == "byol":
            name = PRETRAINED_WITH.get(results.get("pretrained_with", "byol"), name)
        cells = [
            f"{rows[method][k]:.2f}" if isinstance(rows[method].get(k), float) else "–"
            for k, _ in columns
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def heading(results: dict[str, Any], dataset: str) -> str:
    source = results.get("pretrained_on", "?")
    if dataset == source:
        return f"{dataset} (pretrained on {source}), test set, %"
    return f"transfer to {dataset} (pretrained on {source}), test set, %"


def markdown(results: dict[str, Any]) -> str:
    parts = ["# Evaluation results\n"]
    for dataset in results["datasets"]:
        parts.append(f"## {heading(results, dataset)}\n\n{table(results, dataset)}")
    parts.append(
        "Frozen-encoder protocols (kNN, linear) are reported for BYOL and the random-init "
        "encoder; label-subset columns are fine-tuning of encoder + linear head, where the "
        "supervised row trains the same architecture from random initialisation on the same "
        "images (the subsets' index files are in `subsets/`).\n"
    )
    return "\n".join(parts)
