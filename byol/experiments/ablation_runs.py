"""One ablation run: trained, resumed or reused (a finished run of an identical config anywhere
under the ablation folder), then scored by the protocols of ``byol eval`` and kept beside it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from byol import run_folder
from byol.config import Config
from byol.data import subset, subset_indices
from byol.errors import ByolError, TrainingDiverged
from byol.evaluation import probes
from byol.evaluation.eval_settings import split_overrides
from byol.evaluation.features import extract_features
from byol.evaluation.knn import knn_evaluate
from byol.evaluation.protocols import Evaluation
from byol.run_folder import CHECKPOINT, RESUMABLE_CHANGES
from byol.training.loop import pretrain

EVAL_JSON = run_folder.ABLATION_EVAL


# Fields that only one method reads: another method's run does not depend on them.
METHOD_FIELDS = {
    "simclr": ("simclr_temperature",),
    "barlow": ("barlow_lambda", "barlow_projector_dim"),
    "moco": ("moco_queue_size", "moco_temperature"),
}


def comparable(config: Config) -> dict[str, Any]:
    """The fields that decide what a run computes (not how it runs, nor other methods' knobs)."""
    ignored = {f for m, fs in METHOD_FIELDS.items() if m != config.method for f in fs}
    ignored |= RESUMABLE_CHANGES
    return {k: v for k, v in config.to_dict().items() if k not in ignored}


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
    saved = Config.load(run_dir / run_folder.CONFIG).to_dict()
    wanted = config.to_dict()
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


def evaluate_run(
    run_dir: Path, overrides: list[str], train_images: int, method: str
) -> dict[str, float]:
    """kNN and linear top-1 of ``run_dir``'s encoder (``method`` "byol"), of its random init
    ("random-init") or of raw pixels ("pixels"), by the protocols of ``byol eval`` (weighted
    kNN, the fast linear probe), with a class-balanced subset of ``train_images`` labelled
    training images (0 = all) as kNN bank and probe training set. Kept in the run's
    ablation_eval.json (not results.json, whose numbers use every training image) and reused
    while the settings stay the same."""
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
    # "pixels": the raw eval-view pixels as the representation, the reference every encoder
    # must beat to have learned anything a lookup table would not give.
    encoder = torch.nn.Flatten() if method == "pixels" else evaluation.encoder(method).to(device)

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
