"""A row of an ablation table: its run trained or reused (``byol.training.side_by_side``), then
scored by the protocols of ``byol eval``, the scores kept in the run's ablation_eval.json and
reused while the evaluation settings stay the same."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from byol import run_folder
from byol.config import Config
from byol.errors import ByolError, RunInterrupted
from byol.evaluation.eval_settings import split_overrides
from byol.evaluation.protocols import Evaluation
from byol.evaluation.results import fraction_tag
from byol.experiments.tables import FINETUNE, RANDOM_INIT, Row
from byol.files import read_json
from byol.methods.losses import COLLAPSED_BELOW
from byol.training.side_by_side import train_or_reuse


def _kept(
    run_dir: Path, key: list[Any], overrides: list[str], compute: Callable[[], dict[str, float]]
) -> dict[str, float]:
    """``compute()`` once per ``key`` and evaluation settings; a damaged file (a crash, an edit)
    is set aside and its scores computed again."""
    # train_images is kept out of the settings (a frozen-feature key holds it), as files written
    # before it was an evaluation setting have them.
    eval_settings = dataclasses.asdict(split_overrides(overrides)[0])
    eval_settings.pop("train_images")
    key_text = json.dumps([*key, eval_settings], sort_keys=True)
    path = run_dir / run_folder.ABLATION_EVAL
    stored = read_json(path, lambda value: isinstance(value, dict), "scores by setting") or {}
    if key_text not in stored:
        stored[key_text] = compute()
        run_folder.write_json(path, stored)
    return stored[key_text]


def frozen_scores(
    run_dir: Path, encoder: str, overrides: list[str], images: int, dataset: str = ""
) -> dict[str, float]:
    """kNN and linear top-1 on the frozen features of ``run_dir``'s trained encoder ("byol"), of
    its random init ("random-init") or of raw pixels ("pixels"), the kNN bank and the probe
    trained on ``images`` labelled images (0 = all) of ``dataset`` ('' = the pretraining one)."""

    def compute() -> dict[str, float]:
        ev = Evaluation(run_dir, dataset or None, [*overrides, f"train_images={images}"])
        knn = ev.knn(encoder, record=False)[f"knn{ev.settings.knn_ks[-1]}_top1"]
        linear = ev.linear(encoder, record=False)
        return {
            "knn_top1": knn,
            "linear_top1": linear.get("linear_top1", linear.get("linear_paper_top1")),
        }

    return _kept(run_dir, [encoder, images, *([dataset] if dataset else [])], overrides, compute)


def finetune_scores(
    run_dir: Path, encoder: str, overrides: list[str], fraction: float, seed: int
) -> dict[str, float]:
    """``byol eval finetune`` of the encoder (or from its random init: training from scratch) on
    the labels of a class-balanced ``fraction`` of the images the run was pretrained on, as the
    paper labels a fraction of the images it pretrains on; seed N draws label subset N."""
    overrides = [*overrides, f"seed={seed}"]

    def compute() -> dict[str, float]:
        ev = Evaluation(run_dir, None, overrides)
        epochs = dict(zip(ev.settings.label_fractions, ev.settings.finetune_epochs, strict=True))
        if fraction not in epochs:
            raise ByolError(
                f"fine-tuning on {fraction:.0%} of the labels needs its epoch count: set "
                f"label_fractions to include {fraction} with one finetune_epochs entry each."
            )
        ev.use_pretraining_images()
        method = "byol" if encoder == "byol" else "supervised"
        values = ev.finetune(method, (fraction,), (epochs[fraction],), record=False)
        return {"finetune_top1": values[f"finetune_{fraction_tag(fraction)}_top1"]}

    key = ["finetune", encoder, fraction, "of the pretraining images"]
    return _kept(run_dir, key, overrides, compute)


def run_row(
    row: Row,
    config: Config,
    run_dir: Path,
    root: Path,
    overrides: list[str],
    images: int,
    quiet: bool,
) -> dict[str, Any]:
    """Train (or reuse) one run and score it by ``row``'s protocol (``overrides``: the evaluation
    settings; ``images``: the frozen-feature protocols' labelled training images)."""
    try:
        run_dir = train_or_reuse(config, run_dir, root, quiet)
    except RunInterrupted as error:
        raise RunInterrupted(
            f"{error.args[0].split(';')[0]}; rerun the same `byol ablate` command to continue."
        ) from None
    result: dict[str, Any] = dict(name=row.name, label=row.label, method=row.method)
    result.update(seed=config.seed, paper=row.paper, reference=row.reference, run_dir=str(run_dir))
    if (run_dir / run_folder.DIVERGED).is_file():
        return {**result, "status": "diverged"}
    encoder = RANDOM_INIT if row.method == RANDOM_INIT else "byol"
    if row.protocol == FINETUNE:
        result.update(finetune_scores(run_dir, encoder, overrides, row.fraction, config.seed))
    else:
        result.update(frozen_scores(run_dir, encoder, overrides, images, row.dataset))
    result.update({"dataset": row.dataset} if row.dataset else {}, train_s=None, status="ok")
    if encoder == RANDOM_INIT:  # nothing was trained: no collapse to report
        return result
    summary = run_folder.read_summary(run_dir) or {}
    curve = [
        r["collapse"] for r in run_folder.read_metrics(run_dir) if "loss" in r and "collapse" in r
    ]
    collapse = summary.get("collapse")
    collapsed = collapse is not None and collapse < COLLAPSED_BELOW
    result.update(collapse=collapse, collapse_curve=curve, train_s=summary.get("wall_time_s"))
    return {**result, "status": "collapsed" if collapsed else "ok"}
