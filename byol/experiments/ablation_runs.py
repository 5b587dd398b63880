"""One ablation run: trained, resumed or reused (a finished run of an identical config anywhere
under the ablation folder), then scored by the protocols of ``byol eval`` and kept beside it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from byol import run_folder
from byol.config import Config, identity
from byol.data import subset, subset_indices
from byol.errors import ByolError, ConfigError, RunInterrupted, TrainingDiverged
from byol.evaluation import probes
from byol.evaluation.eval_settings import split_overrides
from byol.evaluation.features import extract_features
from byol.evaluation.knn import knn_evaluate
from byol.evaluation.protocols import Evaluation
from byol.evaluation.results import fraction_tag
from byol.experiments.budgets import TRANSFER_DATASETS
from byol.experiments.variants import FINETUNE, RANDOM_INIT, TRANSFER, Variant
from byol.methods.losses import COLLAPSED_BELOW
from byol.run_folder import CHECKPOINT
from byol.training.loop import pretrain

EVAL_JSON = run_folder.ABLATION_EVAL
EVAL_METHOD = "byol"  # Evaluation.encoder's name for a run's trained encoder, whatever its method


def comparable(config: Config) -> dict[str, Any]:
    """What decides what a run computes: the config's identity (``byol.config.identity``)."""
    return identity(config)


def same_config(run_dir: Path, config: Config) -> bool:
    saved = run_dir / run_folder.CONFIG
    return saved.is_file() and comparable(Config.load(saved)) == comparable(config)


def finished(run_dir: Path) -> bool:
    """Trained to the end (a run stopped early by max_minutes is resumed instead), or diverged."""
    if (run_dir / run_folder.DIVERGED).is_file():
        return True
    summary = run_folder.read_summary(run_dir)
    return summary is not None and summary.get("stopped_early") is False


def _config_mismatch(run_dir: Path, config: Config) -> ByolError:
    saved = comparable(Config.load(run_dir / run_folder.CONFIG))
    wanted = comparable(config)
    changed = [
        f"{k}: {saved[k]!r} -> {wanted[k]!r}" for k in comparable(config) if saved[k] != wanted[k]
    ]
    return ByolError(
        f"{run_dir} holds a run with another config ({'; '.join(changed)}); choose another "
        "--out, or delete that folder to rerun it."
    )


def shared_run(root: Path, config: Config) -> Path | None:
    """A finished run anywhere under ``root`` whose config equals ``config``. A folder whose
    config cannot be read (another version's field, a damaged file) is not a match: it must not
    stop every other run of the ablation from finding its own."""
    for saved in sorted(root.glob("*/*/config.json")):
        try:
            if finished(saved.parent) and same_config(saved.parent, config):
                return saved.parent
        except ByolError:
            continue
    return None


def train_run(config: Config, run_dir: Path, root: Path, quiet: bool) -> Path:
    """The folder holding a finished run of ``config``: reused, resumed or trained here."""
    if (run_dir / run_folder.CONFIG).is_file() and not same_config(run_dir, config):
        raise _config_mismatch(run_dir, config)  # never overwrite another experiment's run
    if finished(run_dir):
        return run_dir
    shared = shared_run(root, config)
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


def _stored(run_dir: Path, key: list[Any], overrides: list[str]) -> tuple[dict, str]:
    """The run's stored scores, and the key of one score under these evaluation settings."""
    path = run_dir / EVAL_JSON
    stored = json.loads(path.read_text()) if path.is_file() else {}
    eval_settings, _ = split_overrides(overrides)
    return stored, json.dumps([*key, dataclasses.asdict(eval_settings)], sort_keys=True)


def evaluate_run(
    run_dir: Path,
    overrides: list[str],
    train_images: int,
    method: str,
    dataset: str | None = None,
) -> dict[str, float]:
    """kNN and linear top-1 of ``run_dir``'s encoder (``method`` "byol"), of its random init
    ("random-init") or of raw pixels ("pixels"), by the protocols of ``byol eval`` (weighted
    kNN, the fast linear probe), with a class-balanced subset of ``train_images`` labelled
    training images (0 = all) as kNN bank and probe training set, on the run's own dataset or
    on ``dataset`` (transfer). Kept in the run's ablation_eval.json (not results.json, whose
    numbers use every training image) and reused while the settings stay the same."""
    key = [method, train_images] + ([dataset] if dataset else [])
    stored, key_text = _stored(run_dir, key, overrides)
    if key_text in stored:
        return stored[key_text]
    evaluation = Evaluation(run_dir, dataset, overrides)  # the run's config, encoder
    s, c, device = evaluation.settings, evaluation.config, evaluation.device
    train = evaluation.train
    if 0 < train_images < len(train):
        train = subset(train, train_images, s.seed)
    # "pixels": the raw eval-view pixels as the representation, the reference every encoder
    # must beat to have learned anything a lookup table would not give.
    encoder = torch.nn.Flatten() if method == "pixels" else evaluation.encoder(method).to(device)

    def features(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        view = probes.Transformed(dataset, evaluation.eval_transform)
        return extract_features(
            encoder, view, device, c.monitor.eval_batch_size, evaluation.precision
        )

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
    stored[key_text] = {"knn_top1": knn[f"knn{k}_top1"], "linear_top1": linear.top1}
    run_folder.write_json(run_dir / EVAL_JSON, stored)
    return stored[key_text]


def finetune_run(
    run_dir: Path, overrides: list[str], fraction: float, method: str
) -> dict[str, float]:
    """Test top-1 of ``run_dir``'s encoder (``method`` "byol") or of its random init ("random-init":
    training from scratch) fine-tuned with a linear head on the labels of a class-balanced
    ``fraction`` of the images the run was pretrained on (its train_subset, drawn with the
    evaluation's seed), as the paper labels a fraction of the images it pretrains on, by
    ``byol eval finetune``'s protocol and its epochs for that fraction. Kept in
    ablation_eval.json like evaluate_run's scores."""
    eval_settings, _ = split_overrides(overrides)
    epochs = dict(zip(eval_settings.label_fractions, eval_settings.finetune_epochs, strict=True))
    if fraction not in epochs:
        raise ByolError(
            f"fine-tuning on {fraction:.0%} of the labels needs its epoch count: set "
            f"label_fractions to include {fraction} with one finetune_epochs entry each."
        )
    key = ["finetune", method, fraction, "of the pretraining images"]
    stored, key_text = _stored(run_dir, key, overrides)
    if key_text in stored:
        return stored[key_text]
    evaluation = Evaluation(run_dir, None, overrides)
    evaluation.use_pretraining_images()
    # Not recorded in results.json: these labels are of the pretraining images, not of the
    # whole training set that `byol eval finetune` draws from.
    values = evaluation.finetune(
        "byol" if method == "byol" else "supervised", (fraction,), (epochs[fraction],), False
    )
    stored[key_text] = {"finetune_top1": values[f"finetune_{fraction_tag(fraction)}_top1"]}
    run_folder.write_json(run_dir / EVAL_JSON, stored)
    return stored[key_text]


@dataclass(frozen=True)
class Scoring:
    """How every row of a table is scored: the evaluation settings, the labelled training
    images of the frozen-feature protocols, and the dataset a transfer row is scored on."""

    eval_overrides: list[str]
    train_images: int
    transfer_dataset: str | None


def transfer_dataset(ablation: str, preset_name: str, chosen: str) -> str | None:
    if ablation != "transfer":
        return None
    target = chosen or TRANSFER_DATASETS.get(preset_name)
    if not target:
        raise ConfigError(
            f"`byol ablate transfer` has no default dataset for the {preset_name!r} preset; "
            "name one with --set transfer_dataset=NAME (or a folder)."
        )
    return target


def run_variant(
    variant: Variant, config: Config, run_dir: Path, root: Path, scoring: Scoring, quiet: bool
) -> dict[str, Any]:
    """Train (or reuse) one run and score it: a row of the table."""
    try:
        run_dir = train_run(config, run_dir, root, quiet)
    except RunInterrupted as error:
        raise RunInterrupted(
            f"{error.args[0].split(';')[0]}; rerun the same `byol ablate` command to continue."
        ) from None
    row: dict[str, Any] = dict(
        name=variant.name, label=variant.label, method=variant.method, seed=config.seed,
        paper=variant.paper, reference=variant.reference, run_dir=str(run_dir),
    )  # fmt: skip
    if (run_dir / run_folder.DIVERGED).is_file():
        row["status"] = "diverged"
        return row
    encoder = RANDOM_INIT if variant.method == RANDOM_INIT else EVAL_METHOD
    overrides, images = scoring.eval_overrides, scoring.train_images
    if variant.protocol == FINETUNE:
        # Each seed fine-tunes on its own draw of the labels: seed N draws subset N.
        row.update(finetune_run(run_dir, [*overrides, f"seed={config.seed}"], variant.fraction,
                                encoder))  # fmt: skip
    elif variant.protocol == TRANSFER:
        row.update(evaluate_run(run_dir, overrides, images, encoder, scoring.transfer_dataset))
        row["dataset"] = scoring.transfer_dataset
    else:
        row.update(evaluate_run(run_dir, overrides, images, encoder))
    row["train_s"] = None
    row["status"] = "ok"
    if encoder == RANDOM_INIT:  # nothing was trained: no collapse to report
        return row
    summary = run_folder.read_summary(run_dir) or {}
    row["collapse"] = summary.get("collapse")
    row["collapse_curve"] = [
        r["collapse"] for r in run_folder.read_metrics(run_dir) if "loss" in r and "collapse" in r
    ]
    row["train_s"] = summary.get("wall_time_s")
    collapsed = row["collapse"] is not None and row["collapse"] < COLLAPSED_BELOW
    row["status"] = "collapsed" if collapsed else "ok"
    return row
