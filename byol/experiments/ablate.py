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

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from byol import run_folder, settings
from byol.config import Config, apply_overrides
from byol.data import subset, subset_indices
from byol.errors import ByolError, RunInterrupted, TrainingDiverged
from byol.evaluation import probes
from byol.evaluation.eval_settings import EvalSettings, split_overrides
from byol.evaluation.features import extract_features
from byol.evaluation.knn import knn_evaluate
from byol.evaluation.protocols import Evaluation
from byol.experiments.budgets import (
    ABLATION_BUDGETS,
    BUDGETS,
    EVAL_DEFAULTS,
    EVAL_TRAIN_IMAGES,
    RUN_DEFAULTS,
)
from byol.experiments.variants import Variant, ablation_variants
from byol.methods.losses import COLLAPSED_BELOW
from byol.presets import preset
from byol.run_folder import CHECKPOINT, RESUMABLE_CHANGES
from byol.training.pretrain import pretrain

EVAL_JSON = run_folder.ABLATION_EVAL
EVAL_METHOD = "byol"  # Evaluation.encoder's name for a run's trained encoder, whatever its method


# Fields that only one method reads: another method's run does not depend on them.
METHOD_FIELDS = {
    "simclr": ("simclr_temperature",),
    "barlow": ("barlow_lambda", "barlow_projector_dim"),
    "moco": ("moco_queue_size", "moco_temperature"),
}


def _comparable(config: Config) -> dict[str, Any]:
    """The fields that decide what a run computes (not how it runs, nor other methods' knobs)."""
    ignored = {f for m, fs in METHOD_FIELDS.items() if m != config.method for f in fs}
    ignored |= RESUMABLE_CHANGES
    return {k: v for k, v in config.to_dict().items() if k not in ignored}


def _same_config(run_dir: Path, config: Config) -> bool:
    saved = run_dir / run_folder.CONFIG
    return saved.is_file() and _comparable(Config.load(saved)) == _comparable(config)


def _finished(run_dir: Path) -> bool:
    """Trained to the end (a run stopped early by max_minutes is resumed instead), or diverged."""
    if (run_dir / run_folder.DIVERGED).is_file():
        return True
    summary = run_dir / run_folder.SUMMARY
    return summary.is_file() and not json.loads(summary.read_text())["stopped_early"]


def _config_mismatch(run_dir: Path, config: Config) -> ByolError:
    saved = Config.load(run_dir / run_folder.CONFIG).to_dict()
    wanted = config.to_dict()
    changed = [
        f"{k}: {saved[k]!r} -> {wanted[k]!r}" for k in _comparable(config) if saved[k] != wanted[k]
    ]
    return ByolError(
        f"{run_dir} holds a run with another config ({'; '.join(changed)}); choose another "
        "--out, or delete that folder to rerun it."
    )


def _shared_run(root: Path, config: Config) -> Path | None:
    """A finished run anywhere under ``root`` whose config equals ``config``."""
    for saved in sorted(root.glob("*/*/config.json")):
        if _finished(saved.parent) and _same_config(saved.parent, config):
            return saved.parent
    return None


def _train(config: Config, run_dir: Path, root: Path, quiet: bool) -> Path:
    """The folder holding a finished run of ``config``: reused, resumed or trained here."""
    if (run_dir / run_folder.CONFIG).is_file() and not _same_config(run_dir, config):
        raise _config_mismatch(run_dir, config)  # never overwrite another experiment's run
    if _finished(run_dir):
        return run_dir
    shared = _shared_run(root, config)
    if shared is not None:
        return shared
    resume = (run_dir / CHECKPOINT).is_file()
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # an attempt that stopped before its first checkpoint
    try:
        pretrain(config, run_dir, resume=resume, quiet=quiet)
    except TrainingDiverged as error:  # a result of the ablation, not a reason to stop it
        run_folder.write_json(run_dir / run_folder.DIVERGED, {"error": str(error)})
    return run_dir


def _evaluate(
    run_dir: Path, overrides: list[str], train_images: int, method: str
) -> dict[str, float]:
    """kNN and linear top-1 of ``run_dir``'s encoder (``method`` "byol") or of its random init
    ("random-init"), by the protocols of ``byol eval`` (weighted kNN, the fast linear probe),
    with a class-balanced subset of ``train_images`` labelled training images (0 = all) as kNN
    bank and probe training set. Kept in the run's ablation_eval.json (not results.json, whose
    numbers use every training image) and reused while the settings stay the same."""
    path = run_dir / EVAL_JSON
    stored = json.loads(path.read_text()) if path.is_file() else {}
    eval_settings, _ = split_overrides(overrides)
    key = json.dumps([method, train_images, dataclasses.asdict(eval_settings)], sort_keys=True)
    if key in stored:
        return stored[key]
    evaluation = Evaluation(run_dir, None, overrides)  # the run's config, data and encoder
    s, c, device = evaluation.settings, evaluation.config, evaluation.device
    train = evaluation.train
    if 0 < train_images < len(train):
        train = subset(train, train_images, s.seed)
    encoder = evaluation.encoder(method).to(device)

    def features(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        view = probes.Transformed(dataset, evaluation.eval_transform)
        return extract_features(encoder, view, device, c.eval_batch_size, evaluation.precision)

    (train_x, train_y), (test_x, test_y) = features(train), features(evaluation.test)
    k = s.knn_ks[-1]
    knn = knn_evaluate(train_x, train_y, test_x, test_y, (k,), s.knn_temperature)
    # The validation split that picks the probe's lr, as `byol eval linear` draws it.
    n_val = max(evaluation.num_classes, int(round(s.val_fraction * len(train_y))))
    val = subset_indices(train_y.numpy(), len(train_y), n_val, s.seed + 1)
    linear = probes.linear_fast(
        train_x, train_y, test_x, test_y, val, tuple(s.linear_lrs), s.linear_epochs,
        s.linear_batch_size, s.seed,
    )  # fmt: skip
    stored[key] = {"knn_top1": knn[f"knn{k}_top1"], "linear_top1": linear.top1}
    run_folder.write_json(path, stored)
    return stored[key]


@dataclass
class AblationSettings:
    """``byol ablate``'s own settings, beside the Config's and the evaluation's."""

    # kNN bank and linear-probe training set: this many labelled training images (0 = all;
    # -1 = the preset's EVAL_TRAIN_IMAGES).
    eval_train_images: int = -1


def run_ablation(
    ablation: str,
    preset_name: str,
    overrides: list[str] | None = None,
    out: Path | None = None,
    quiet: bool = False,
) -> Path:
    """Run (or reuse) every variant of ``ablation``; write table.md, plot.png and results.json
    into ``out/ablation`` and return that folder."""
    from byol.reporting.ablation_tables import write_report

    overrides = list(overrides or [])
    # A key of both (seed) goes to both: `--set seed=1` repeats the whole experiment.
    config_overrides, eval_overrides, own = settings.split_by_owner(
        overrides, Config, EvalSettings, AblationSettings
    )
    train_images = settings.apply_overrides(AblationSettings(), own).eval_train_images
    if train_images < 0:
        train_images = EVAL_TRAIN_IMAGES.get(preset_name, 0)
    budget = {**BUDGETS.get(preset_name, {}), **ABLATION_BUDGETS.get((preset_name, ablation), {})}
    base = dataclasses.replace(preset(preset_name), **budget, **RUN_DEFAULTS)
    base = apply_overrides(base, config_overrides)
    base.validate()
    root = Path(out or f"runs/ablations/{preset_name}")
    folder = root / ablation
    folder.mkdir(parents=True, exist_ok=True)
    runtime = [f"{k}={getattr(base, k)}" for k in ("threads", "device")]
    eval_overrides = EVAL_DEFAULTS + eval_overrides + runtime

    variants = ablation_variants(ablation, base)
    rows: list[dict[str, Any]] = []
    for number, variant in enumerate(variants, 1):
        started = time.perf_counter()
        _say(f"[{number}/{len(variants)}] {variant.method} {variant.label}", quiet)
        row = _run_variant(variant, base, folder, root, eval_overrides, train_images, quiet)
        row["shared_with"] = _shared_label(Path(row["run_dir"]), folder / variant.key, root, rows)
        rows.append(row)
        _say(f"    {_brief(row)} ({time.perf_counter() - started:.0f} s)", quiet)

    reference_run = next((Path(r["run_dir"]) for r in rows if r["status"] != "diverged"), None)
    random_init = None
    if reference_run is not None:
        _say("random-init encoder (reference)", quiet)
        random_init = _evaluate(reference_run, eval_overrides, train_images, "random-init")
    eval_settings, _ = split_overrides(eval_overrides)
    write_report(
        folder, ablation, preset_name, base, eval_settings, train_images, rows, random_init,
        overrides,
    )  # fmt: skip
    return folder


def _run_variant(
    variant: Variant,
    base: Config,
    folder: Path,
    root: Path,
    eval_overrides: list[str],
    train_images: int,
    quiet: bool,
) -> dict[str, Any]:
    """Train (or reuse) one variant's run and score it: a row of the table."""
    config = dataclasses.replace(base, method=variant.method, **variant.overrides)
    config.validate()
    try:
        run_dir = _train(config, folder / variant.key, root, quiet)
    except RunInterrupted as error:
        raise RunInterrupted(
            f"{error.args[0].split(';')[0]}; rerun the same `byol ablate` command to continue."
        ) from None
    row: dict[str, Any] = dict(
        name=variant.name, label=variant.label, method=variant.method,
        paper=variant.paper, reference=variant.reference, run_dir=str(run_dir),
    )  # fmt: skip
    if (run_dir / run_folder.DIVERGED).is_file():
        row["status"] = "diverged"
        return row
    summary = run_folder.read_summary(run_dir) or {}
    row.update(_evaluate(run_dir, eval_overrides, train_images, EVAL_METHOD))
    row["collapse"] = summary.get("collapse")
    row["train_s"] = summary.get("wall_time_s")
    collapsed = row["collapse"] is not None and row["collapse"] < COLLAPSED_BELOW
    row["status"] = "collapsed" if collapsed else "ok"
    return row


def _shared_label(
    run_dir: Path, own_dir: Path, root: Path, rows: list[dict[str, Any]]
) -> str | None:
    """The row (or run folder) whose run this row reuses because the configs are identical."""
    if run_dir == own_dir:
        return None
    for row in rows:
        if row["run_dir"] == str(run_dir):
            return row["label"]
    return str(run_dir.relative_to(root)) if run_dir.is_relative_to(root) else str(run_dir)


def _brief(row: dict[str, Any]) -> str:
    if row["status"] == "diverged":
        return "diverged"
    return (
        f"kNN {row['knn_top1']:.1f}  linear {row['linear_top1']:.1f}  "
        f"collapse {row['collapse']:.3f}  {row['status']}"
    )


def _say(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)
