"""``byol ablate NAME``: one of the paper's ablations (``ablations.toml``) rerun on a preset.

Each row is pretrained in its own run folder (``byol.training.side_by_side``), then scored by the
protocols of ``byol eval`` (``ablation_runs``). A finished run is reused, as is a finished run
elsewhere under the output folder of the same experiment (``byol.config.identity``); one with a
checkpoint is resumed. So an interrupted ablation continues where it stopped, and ablations share
their common runs.

    runs/ablations/fashion-mnist/target/{table.md, plot.png, results.json, byol-tau-0/, ...}
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from byol import settings
from byol.config import (
    METHODS,
    Config,
    apply_overrides,
    config_keys,
    departures,
    is_config_key,
)
from byol.errors import ConfigError
from byol.evaluation.eval_settings import EvalSettings, split_overrides
from byol.evaluation.protocols import PIXELS
from byol.experiments import tables
from byol.experiments.ablation_runs import frozen_scores, run_row
from byol.experiments.tables import FINETUNE, FROZEN, RANDOM_INIT, TRANSFER, Row
from byol.presets import preset
from byol.settings import setting
from byol.training.side_by_side import pretrain_side_by_side

Plan = list[tuple[Row, Config, Path]]


@dataclass(frozen=True)
class AblationSettings:
    """``byol ablate``'s own settings, beside the run's and the evaluation's."""

    eval_train_images: int = setting(
        -1, "kNN bank and linear-probe training images (0 = all; -1 = the preset's)", low=-1
    )
    seeds: int = setting(
        1, "train every row this many times, seeds seed, seed + 1, ...", low=1, high=100
    )
    # A table cut to the rows its claims compare costs a fraction of the whole.
    rows: str = setting("", "only these rows (variant names, comma-separated; '' = all)")
    methods: str = setting("", "only these methods (comma-separated; '' = all)")
    transfer_dataset: str = setting("", "`byol ablate transfer`: the dataset scored on")


def run_ablation(
    ablation: str,
    preset_name: str,
    overrides: list[str] | None = None,
    out: Path | None = None,
    quiet: bool = False,
    jobs: int = 1,
) -> Path:
    """Run (or reuse) every row of ``ablation`` with every seed, ``jobs`` runs at a time; write
    table.md, plot.png and results.json into ``out/ablation`` and return that folder."""
    from byol.reporting.ablation_tables import write_report

    started, overrides, table = time.perf_counter(), list(overrides or []), tables.table(ablation)
    # A key of both (seed) goes to both: `--set seed=1` repeats the whole experiment.
    config_overrides, eval_overrides, own = settings.split_by_owner(
        overrides,
        is_config_key,
        lambda key: settings.has_key(EvalSettings(), key),
        lambda key: settings.has_key(AblationSettings(), key),
    )
    mine = settings.apply_overrides(AblationSettings(), own, "ablation setting")
    settings.check_rules(mine)
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} is out of range: valid is >= 1.")
    budget = tables.budget(preset_name)
    transfer = mine.transfer_dataset or budget["transfer_dataset"]
    if not transfer and any(row.protocol == TRANSFER for row in table.rows):
        raise ConfigError(
            f"`byol ablate {ablation}` has no default dataset for the {preset_name!r} "
            "preset; name one with --set transfer_dataset=NAME (or a folder)."
        )
    images = budget["eval_train_images"] if mine.eval_train_images < 0 else mine.eval_train_images
    bases = {m: _base_config(ablation, preset_name, config_overrides, m) for m in METHODS}
    base = bases["byol"]
    root = Path(out or f"runs/ablations/{preset_name}")
    folder = root / ablation
    runtime = [f"{k}={getattr(base.runtime, k)}" for k in ("threads", "device")]
    eval_overrides = tables.data()["defaults"]["eval"] + eval_overrides + runtime
    rows = _select(table.rows, mine.rows, mine.methods)
    plan = _plan(rows, bases, mine.seeds, folder, transfer)
    folder.mkdir(parents=True, exist_ok=True)  # once every setting is known to be valid
    if jobs > 1:
        runs = [(config, run_dir) for _, config, run_dir in plan]
        pretrain_side_by_side(runs, root, jobs, lambda text: _say(text, quiet))
    results: list[dict[str, Any]] = []
    for number, (row, config, run_dir) in enumerate(plan, 1):
        step_started = time.perf_counter()
        _say(f"[{number}/{len(plan)}] {row.method} {row.label} seed {config.seed}", quiet)
        result = run_row(row, config, run_dir, root, eval_overrides, images, quiet)
        shared = Path(result["run_dir"])  # the run of an identical config, made for another row
        if shared != run_dir:
            result["shared_with"] = str(
                shared.relative_to(root) if shared.is_relative_to(root) else shared
            )
        results.append(result)
        _say(f"    {_brief(result)} ({time.perf_counter() - step_started:.0f} s)", quiet)
    record = dict(
        ablation=ablation,
        preset=preset_name,
        config=base.to_dict(),
        command=command(["ablate", ablation, "--preset", preset_name], overrides, jobs),
        departures=departures(base),
        eval_settings=vars(split_overrides(eval_overrides)[0]),
        eval_train_images=images,
        rows=results,
        references=_references(plan, results, eval_overrides, images, quiet),
        sources=list(dict.fromkeys(row.source for row, _, _ in plan if row.source)),
        wall_s=time.perf_counter() - started,
    )
    write_report(folder, record, table.claims, tables.data()["report"])
    return folder


def _base_config(
    ablation: str, preset_name: str, config_overrides: list[str], method: str
) -> Config:
    """The preset with ``method`` at the table's budget, with the runs' defaults and the user's
    overrides; an override of another method's own setting is left to that method's runs (a key
    of no method at all is kept, for ``apply_overrides`` to name as unknown)."""
    budget = tables.budget(preset_name)["set"] + tables.table(ablation).budgets.get(preset_name, [])
    base = apply_overrides(
        preset(preset_name, method), [*budget, *tables.data()["defaults"]["run"]]
    )
    keys, mine = set(config_keys(base)), []
    for item in config_overrides:
        key = settings.split_item(item)[0]
        mine += [item] if key in keys or not is_config_key(key) else []
    base = apply_overrides(base, mine)
    base.validate()
    return base


def _plan(
    rows: tuple[Row, ...], bases: dict[str, Config], seeds: int, folder: Path, transfer: str = ""
) -> Plan:
    """(row, its config, its run folder) for every seed, seed-major: a table cut short by a stop
    has every row at its first seeds. ``bases``: each method's config before a row changes it;
    a transfer row names ``transfer``, the dataset it is scored on."""
    plan = []
    for index in range(seeds):
        for row in rows:
            base = bases[row.trains]
            config = row.config(base.replace(seed=base.seed + index))
            config.validate()
            name = row.key if seeds == 1 else f"{row.key}-seed{config.seed}"
            if row.protocol == TRANSFER:
                row = replace(row, dataset=transfer)
            plan.append((row, config, folder / name))
    return plan


def _select(rows: tuple[Row, ...], names: str, methods: str) -> tuple[Row, ...]:
    """The named rows of the named methods (all, where a name list is empty)."""
    for wanted_text, field, what in ((names, "name", "rows"), (methods, "method", "methods")):
        wanted = [n.strip() for n in wanted_text.split(",") if n.strip()]
        known = list(dict.fromkeys(getattr(row, field) for row in rows))
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ConfigError(
                f"{what}={wanted_text!r} names {', '.join(unknown)}, which this ablation has not; "
                f"choose among {', '.join(known)}."
            )
        rows = tuple(row for row in rows if not wanted or getattr(row, field) in wanted)
    return rows


def _references(
    plan: Plan, rows: list[dict[str, Any]], overrides: list[str], images: int, quiet: bool
) -> dict[str, list[dict[str, float]]]:
    """Raw pixels (once) on the dataset the rows are scored on and, beside frozen features of
    the pretraining dataset, random init (one per seed: each seed starts from other weights).
    Fine-tuned rows have none: training from scratch is their own random-init row."""
    runs: dict[int, Path] = {}  # the first run of each seed
    for row in rows:
        if row["status"] != "diverged":
            runs.setdefault(row["seed"], Path(row["run_dir"]))
    protocols = {row.protocol for row, _, _ in plan}
    if not runs or protocols == {FINETUNE}:
        return {}
    _say("raw pixels and random init (references)", quiet)
    dataset = next((row.dataset for row, _, _ in plan if row.dataset), "")
    found = {PIXELS: [frozen_scores(runs[min(runs)], PIXELS, overrides, images, dataset)]}
    if FROZEN in protocols:
        found[RANDOM_INIT] = [
            frozen_scores(runs[seed], RANDOM_INIT, overrides, images) for seed in sorted(runs)
        ]
    return found


def _brief(row: dict[str, Any]) -> str:
    names = {"knn_top1": "kNN", "linear_top1": "linear", "finetune_top1": "fine-tuned"}
    scores = [f"{name} {row[key]:.1f}" for key, name in names.items() if key in row]
    if row.get("collapse") is not None:
        scores.append(f"collapse {row['collapse']:.3f}")
    return "  ".join([*scores, row["status"]])


def command(words: list[str], overrides: list[str], jobs: int = 1) -> str:
    """The `byol` command line of ``words`` (e.g. ablate NAME --preset P) with the options."""
    jobs_args = ["--jobs", str(jobs)] if jobs > 1 else []
    set_args = [part for item in overrides for part in ("--set", item)]
    return shlex.join(["byol", *words, *jobs_args, *set_args])


def _say(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)
