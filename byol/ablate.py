"""``byol ablate NAME``: the paper's ablations (PAPER.md section 7) rerun on a preset, one table.

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
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from byol import probes
from byol.config import Config, apply_overrides, preset
from byol.data import subset, subset_indices
from byol.errors import ByolError, ConfigError, RunInterrupted, TrainingDiverged
from byol.evaluate import extract_features, knn_evaluate
from byol.protocols import EvalSettings, Evaluation, split_overrides
from byol.train import CHECKPOINT_NAME, RESUMABLE_CHANGES, pretrain
from byol.variants import ablation_variants

# A short schedule per preset, so one ablation (4-20 runs) is affordable; --set changes any of it.
BUDGETS: dict[str, dict[str, Any]] = {
    # ~15-25 minutes per ablation on 1 CPU thread (measured, docs/ablations.md): 20k images once
    # at 16 px (2.3x faster than 28 px to train, 4x to evaluate, for ~0.3 points of kNN, README).
    "fashion-mnist": dict(
        image_size=16,
        train_subset=20000,
        epochs=1,
        num_workers=0,
        # The recipe docs/ablations.md measured, pinned so that tuning the main job's preset (its
        # crops, heads, tau_base and the options outside the paper) does not move these tables.
        crop_scale=(0.5, 1.0),
        projector_hidden_dim=1024,
        predictor_hidden_dim=1024,
        tau_base=0.99,
        predictor_warmup_steps=0,
        predictor_lr_scale=1.0,
        schedule_epochs=0,
    ),
    "cifar10": dict(epochs=100),
    "stl10": dict(epochs=50),
    "imagenet-paper": dict(epochs=300, tau_base=0.99),  # the paper's ablation schedule
}
# Ablations with many runs get a shorter schedule: (preset, ablation) -> overrides on the budget.
ABLATION_BUDGETS: dict[tuple[str, str], dict[str, Any]] = {
    ("fashion-mnist", "augmentations"): dict(train_subset=8000),  # 17 distinct runs
}
# Ablation runs skip the kNN scores of a single run: the evaluation below scores every encoder.
RUN_DEFAULTS = dict(knn_every_epochs=0, knn_final=False, knn_references=False)
# kNN k=200 only; 10 epochs of the linear probe (SGD on standardised features).
EVAL_DEFAULTS = ["knn_ks=200", "linear_epochs=10"]
# kNN bank and linear-probe training set: this many labelled training images (0 = all), so that
# scoring an encoder costs seconds, not minutes; --set eval_train_images=N changes it.
EVAL_TRAIN_IMAGES = {"fashion-mnist": 10000}
EVAL_JSON = "ablation_eval.json"
# Collapse metric = std of l2-normalised embeddings x sqrt(dim): ~1 when spread over all dims,
# sqrt(k/d) when spread evenly over only k of d dims, 0 for a constant. Below 0.1 the embeddings
# use the equivalent of under 1% of the dimensions (2.6 of 256): called collapsed.
COLLAPSED_BELOW = 0.1
EVAL_METHOD = "byol"  # Evaluation.encoder's name for a run's trained encoder, whatever its method


def _int(item: str) -> int:
    key, _, text = item.partition("=")
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not a whole number.") from None


def _key(item: str) -> str:
    return item.partition("=")[0].strip().replace("-", "_")


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
    saved = run_dir / "config.json"
    return saved.is_file() and _comparable(Config.load(saved)) == _comparable(config)


def _finished(run_dir: Path) -> bool:
    """Trained to the end (a run stopped early by max_minutes is resumed instead), or diverged."""
    if (run_dir / "diverged.json").is_file():
        return True
    summary = run_dir / "summary.json"
    return summary.is_file() and not json.loads(summary.read_text())["stopped_early"]


def _config_mismatch(run_dir: Path, config: Config) -> ByolError:
    saved = Config.load(run_dir / "config.json").to_dict()
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
    if (run_dir / "config.json").is_file() and not _same_config(run_dir, config):
        raise _config_mismatch(run_dir, config)  # never overwrite another experiment's run
    if _finished(run_dir):
        return run_dir
    shared = _shared_run(root, config)
    if shared is not None:
        return shared
    resume = (run_dir / CHECKPOINT_NAME).is_file()
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # an attempt that stopped before its first checkpoint
    try:
        pretrain(config, run_dir, resume=resume, quiet=quiet)
    except TrainingDiverged as error:  # a result of the ablation, not a reason to stop it
        (run_dir / "diverged.json").write_text(json.dumps({"error": str(error)}) + "\n")
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
    settings, _ = split_overrides(overrides)
    key = json.dumps([method, train_images, dataclasses.asdict(settings)], sort_keys=True)
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
        return extract_features(encoder, view, device, c.eval_batch_size, c.precision)

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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(stored, indent=2) + "\n")
    os.replace(tmp, path)
    return stored[key]


def run_ablation(
    ablation: str,
    preset_name: str,
    overrides: list[str] | None = None,
    out: Path | None = None,
    quiet: bool = False,
) -> Path:
    """Run (or reuse) every variant of ``ablation``; write table.md, plot.png and results.json
    into ``out/ablation`` and return that folder."""
    from byol.ablation_report import write_report

    overrides = list(overrides or [])
    train_images = EVAL_TRAIN_IMAGES.get(preset_name, 0)
    for item in overrides:
        if _key(item) == "eval_train_images":
            train_images = _int(item)
    eval_keys = {f.name for f in dataclasses.fields(EvalSettings)}
    config_keys = {f.name for f in dataclasses.fields(Config)}
    # A key of both (seed) goes to both: `--set seed=1` repeats the whole experiment.
    eval_overrides = [o for o in overrides if _key(o) in eval_keys]
    config_overrides = [o for o in overrides if _key(o) in config_keys or _key(o) not in eval_keys]
    config_overrides = [o for o in config_overrides if _key(o) != "eval_train_images"]
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
        config = dataclasses.replace(base, method=variant.method, **variant.overrides)
        config.validate()
        started = time.perf_counter()
        _say(f"[{number}/{len(variants)}] {variant.method} {variant.label}", quiet)
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
        if (run_dir / "diverged.json").is_file():
            row["status"] = "diverged"
        else:
            summary = json.loads((run_dir / "summary.json").read_text())
            row.update(_evaluate(run_dir, eval_overrides, train_images, EVAL_METHOD))
            row["collapse"] = summary["collapse"]
            row["train_s"] = summary["wall_time_s"]
            collapsed = row["collapse"] is not None and row["collapse"] < COLLAPSED_BELOW
            row["status"] = "collapsed" if collapsed else "ok"
        row["shared_with"] = _shared_label(run_dir, folder / variant.key, root, rows)
        rows.append(row)
        _say(f"    {_brief(row)} ({time.perf_counter() - started:.0f} s)", quiet)

    reference_run = next((Path(r["run_dir"]) for r in rows if r["status"] != "diverged"), None)
    random_init = None
    if reference_run is not None:
        _say("random-init encoder (reference)", quiet)
        random_init = _evaluate(reference_run, eval_overrides, train_images, "random-init")
    settings, _ = split_overrides(eval_overrides)
    write_report(
        folder, ablation, preset_name, base, settings, train_images, rows, random_init, overrides
    )
    return folder


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
