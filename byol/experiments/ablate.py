"""``byol ablate NAME``: the paper's ablations (arXiv:2006.07733, Section 5) rerun on a preset,
one table.

Each variant of ``byol.variants`` is pretrained in its own run folder, then scored with the same
protocols as ``byol eval`` (weighted kNN and the fast linear probe on frozen features). A folder
with ``summary.json`` is a finished run and is reused, as is a finished run elsewhere under the
output folder with an identical config; a folder with only a checkpoint is resumed. So an
interrupted ablation continues where it stopped, and ablations share their common runs.

    runs/ablations/fashion-mnist/target/{table.md, plot.png, results.json, byol-tau-0/, ...}
"""

from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byol import settings
from byol.config import METHODS, Config, apply_overrides, config_keys, is_config_key
from byol.errors import ConfigError
from byol.evaluation.eval_settings import EvalSettings, split_overrides
from byol.experiments.ablation_runs import (
    Scoring,
    comparable,
    evaluate_run,
    finished,
    run_variant,
    shared_run,
    transfer_dataset,
)
from byol.experiments.budgets import (
    ABLATION_BUDGETS,
    BUDGETS,
    EVAL_DEFAULTS,
    EVAL_TRAIN_IMAGES,
    RUN_DEFAULTS,
)
from byol.experiments.parallel import train_side_by_side
from byol.experiments.variants import CLAIMS, FROZEN, Variant, ablation_variants
from byol.presets import preset
from byol.settings import setting


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
    """Run (or reuse) every variant of ``ablation`` with every seed, ``jobs`` runs at a time;
    write table.md, plot.png and results.json into ``out/ablation`` and return that folder."""
    from byol.reporting.ablation_tables import write_report

    started = time.perf_counter()
    overrides = list(overrides or [])
    # A key of both (seed) goes to both: `--set seed=1` repeats the whole experiment.
    config_overrides, eval_overrides, own = _split(overrides)
    own_settings = settings.apply_overrides(AblationSettings(), own, "ablation setting")
    settings.check_rules(own_settings)
    train_images = own_settings.eval_train_images
    if train_images < 0:
        train_images = EVAL_TRAIN_IMAGES.get(preset_name, 0)
    base = _base_config(ablation, preset_name, config_overrides)
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} is out of range: valid is >= 1.")
    root = Path(out or f"runs/ablations/{preset_name}")
    folder = root / ablation
    runtime = [f"{k}={getattr(base.runtime, k)}" for k in ("threads", "device")]
    eval_overrides = EVAL_DEFAULTS + eval_overrides + runtime
    plan = _plan(ablation, preset_name, config_overrides, own_settings.seeds, folder)
    plan = _select(plan, own_settings.rows, own_settings.methods)
    scoring = Scoring(eval_overrides, train_images, transfer_dataset(ablation, preset_name,
                      own_settings.transfer_dataset))  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)  # once every setting is known to be valid
    if jobs > 1:
        say = functools.partial(_say, quiet=quiet)
        pending = _unfinished(plan, root)
        say(f"training {len(pending)} of {len(plan)} runs ({jobs} at a time); the rest are done")
        train_side_by_side([(c, d, root) for _, c, d in pending], jobs, say)
    rows: list[dict[str, Any]] = []
    for number, (variant, config, run_dir) in enumerate(plan, 1):
        step_started = time.perf_counter()
        _say(f"[{number}/{len(plan)}] {variant.method} {variant.label} seed {config.seed}", quiet)
        row = run_variant(variant, config, run_dir, root, scoring, quiet)
        row["shared_with"] = _shared_label(Path(row["run_dir"]), run_dir, root, rows, variant.label)
        rows.append(row)
        _say(f"    {_brief(row)} ({time.perf_counter() - step_started:.0f} s)", quiet)

    frozen = any(v.protocol == FROZEN for v, _, _ in plan)  # the references score frozen rows
    references = _references(rows, eval_overrides, train_images, quiet) if frozen else {}
    eval_settings, _ = split_overrides(eval_overrides)
    write_report(
        folder, ablation, preset_name, base, eval_settings, train_images, rows, references,
        overrides, time.perf_counter() - started, CLAIMS.get(ablation, []), jobs,
    )  # fmt: skip
    return folder


def _base_config(
    ablation: str, preset_name: str, config_overrides: list[str], method: str = "byol"
) -> Config:
    """The preset with ``method`` at its ablation budget, with the runs' defaults and the user's
    overrides; an override of another method's own setting is left to that method's runs."""
    budget = {**BUDGETS.get(preset_name, {}), **ABLATION_BUDGETS.get((preset_name, ablation), {})}
    base = preset(preset_name, method).replace(**budget, **RUN_DEFAULTS)
    mine = [item for item in config_overrides if _applies(base, item)]
    base = apply_overrides(base, mine)
    base.validate()
    return base


def _applies(config: Config, item: str) -> bool:
    """Whether ``key=value`` is for ``config``: a key of its own, or one of no method at all
    (which ``apply_overrides`` then names as unknown); not another method's own setting."""
    key, _ = settings.split_item(item)
    return key in config_keys(config) or not is_config_key(key)


def _split(overrides: list[str]) -> list[list[str]]:
    """``--set`` items -> (the runs', the evaluation's, the ablation's own); ``seed`` goes to the
    runs and the evaluation both, so `--set seed=1` repeats the whole experiment."""
    return settings.split_by_owner(
        overrides,
        is_config_key,
        lambda key: settings.has_key(EvalSettings(), key),
        lambda key: settings.has_key(AblationSettings(), key),
    )


def _plan(
    ablation: str, preset_name: str, config_overrides: list[str], seeds: int, folder: Path
) -> list[tuple[Variant, Config, Path]]:
    """(variant, its config, its run folder) for every seed, seed-major: a table cut short by a
    stop has every row at its first seeds."""
    plan = []
    bases = {m: _base_config(ablation, preset_name, config_overrides, m) for m in METHODS}
    for index in range(seeds):
        for variant in ablation_variants(ablation, bases["byol"]):
            base = bases[variant.trains]
            config = base.replace(seed=base.seed + index, **variant.overrides)
            config.validate()
            name = variant.key if seeds == 1 else f"{variant.key}-seed{config.seed}"
            plan.append((variant, config, folder / name))
    return plan


def _select(
    plan: list[tuple[Variant, Config, Path]], rows: str, methods: str
) -> list[tuple[Variant, Config, Path]]:
    """The planned runs of the named rows and methods (all, where a name list is empty)."""
    for names, field, what in ((rows, "name", "rows"), (methods, "method", "methods")):
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        if not wanted:
            continue
        known = list(dict.fromkeys(getattr(v, field) for v, _, _ in plan))
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ConfigError(
                f"{what}={names!r} names {', '.join(unknown)}, which this ablation has not; "
                f"choose among {', '.join(known)}."
            )
        plan = [p for p in plan if getattr(p[0], field) in wanted]
    return plan


def _unfinished(plan: list[tuple[Variant, Config, Path]], root: Path) -> list:
    """The planned runs still to train, each config once (rows may share a run)."""
    pending, seen = [], set()
    for variant, config, run_dir in plan:
        key = json.dumps(comparable(config), sort_keys=True, default=list)
        if key in seen or finished(run_dir) or shared_run(root, config) is not None:
            continue
        seen.add(key)
        pending.append((variant, config, run_dir))
    return pending


def _references(
    rows: list[dict[str, Any]], eval_overrides: list[str], train_images: int, quiet: bool
) -> dict[str, list[dict[str, float]]]:
    """Random init (one per seed: each seed starts from other weights) and raw pixels (once)."""
    first_per_seed: dict[int, Path] = {}
    for row in rows:
        if row["status"] != "diverged":
            first_per_seed.setdefault(row["seed"], Path(row["run_dir"]))
    references: dict[str, list[dict[str, float]]] = {"random-init": [], "pixels": []}
    for seed, run_dir in sorted(first_per_seed.items()):
        _say(f"random-init encoder, seed {seed} (reference)", quiet)
        references["random-init"].append(
            evaluate_run(run_dir, eval_overrides, train_images, "random-init")
        )
    if first_per_seed:
        _say("raw pixels (reference)", quiet)
        run_dir = next(iter(first_per_seed.values()))
        references["pixels"].append(evaluate_run(run_dir, eval_overrides, train_images, "pixels"))
    return references


def _shared_label(
    run_dir: Path, own_dir: Path, root: Path, rows: list[dict[str, Any]], label: str
) -> str | None:
    """The row (or run folder) whose run this row reuses because the configs are identical."""
    if run_dir == own_dir:
        return None
    for row in rows:
        if row["run_dir"] == str(run_dir):  # a random-init row names BYOL's row, not its own
            return f"{row['method']}, {row['label']}" if row["label"] == label else row["label"]
    return str(run_dir.relative_to(root)) if run_dir.is_relative_to(root) else str(run_dir)


def _brief(row: dict[str, Any]) -> str:
    if row["status"] == "diverged":
        return "diverged"
    names = {"knn_top1": "kNN", "linear_top1": "linear", "finetune_top1": "fine-tuned"}
    scores = [f"{name} {row[key]:.1f}" for key, name in names.items() if key in row]
    if row.get("collapse") is not None:
        scores.append(f"collapse {row['collapse']:.3f}")
    return "  ".join([*scores, row["status"]])


def _say(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)
