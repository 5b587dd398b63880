"""One ablation run: trained, resumed or reused (a finished run of an identical config anywhere
under the ablation folder), then scored by the protocols of ``byol eval`` and kept beside it.
Independent runs may train side by side, each worker process with its share of the threads: a
step does not scale linearly with threads, so a table of many runs finishes sooner (docs/speed.md).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byol import run_folder
from byol.config import Config, identity
from byol.errors import ByolError, RunInterrupted, TrainingDiverged
from byol.evaluation.eval_settings import split_overrides
from byol.evaluation.protocols import Evaluation
from byol.evaluation.results import fraction_tag
from byol.experiments.tables import FINETUNE, RANDOM_INIT, TRANSFER, Row
from byol.files import read_json
from byol.methods.losses import COLLAPSED_BELOW
from byol.training.loop import pretrain


def same_config(run_dir: Path, config: Config) -> bool:
    saved = run_dir / run_folder.CONFIG
    return saved.is_file() and identity(Config.load(saved)) == identity(config)


def finished(run_dir: Path) -> bool:
    """Trained to the end (a run stopped early by max_minutes is resumed instead), or diverged."""
    if (run_dir / run_folder.DIVERGED).is_file():
        return True
    summary = run_folder.read_summary(run_dir)
    return summary is not None and summary.get("stopped_early") is False


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
        saved, wanted = identity(Config.load(run_dir / run_folder.CONFIG)), identity(config)
        changed = [f"{k}: {saved[k]!r} -> {v!r}" for k, v in wanted.items() if saved[k] != v]
        raise ByolError(  # never overwrite another experiment's run
            f"{run_dir} holds a run with another config ({'; '.join(changed)}); choose another "
            "--out, or delete that folder to rerun it."
        )
    if finished(run_dir):
        return run_dir
    shared = shared_run(root, config)
    if shared is not None:
        return shared
    resume = (run_dir / run_folder.CHECKPOINT).is_file()
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # an attempt that stopped before its first checkpoint
    try:
        pretrain(config, run_dir, resume=resume, quiet=quiet)
    except TrainingDiverged as error:  # a result of the ablation, not a reason to stop it
        run_folder.write_json(run_dir / run_folder.DIVERGED, {"error": str(error)})
    return run_dir


def threads_per_job(config: Config, jobs: int) -> int:
    return max(1, (config.runtime.threads or os.cpu_count() or 1) // jobs)


def _train_one(job: tuple[Config, Path, Path]) -> tuple[str, str | None]:
    config, run_dir, root = job
    try:
        train_run(config, run_dir, root, quiet=True)
    except (ByolError, RunInterrupted) as error:
        return run_dir.name, str(error)
    return run_dir.name, None


def train_side_by_side(
    work: list[tuple[Config, Path, Path]], jobs: int, say: Callable[[str], None]
) -> None:
    """Train every (config, run folder, ablation root) of ``work``, ``jobs`` at a time, the
    threads split between them. A run that fails is named; the others still finish. A worker
    that dies (killed, out of memory) ends the call with one line; finished runs are kept."""
    if not work:
        return
    threads = threads_per_job(work[0][0], jobs)
    work = [(c.replace(threads=threads), d, r) for c, d, r in work]
    # spawn: no fork of a process holding torch's threads; one run per worker process, so no
    # memory is carried from run to run (max_tasks_per_child exists from Python 3.11).
    options: dict = {"mp_context": multiprocessing.get_context("spawn")}
    if sys.version_info >= (3, 11):
        options["max_tasks_per_child"] = 1
    failures = []
    try:
        with ProcessPoolExecutor(jobs, **options) as pool:
            futures = [pool.submit(_train_one, job) for job in work]
            for done, future in enumerate(as_completed(futures), 1):
                name, error = future.result()
                say(f"  trained {done}/{len(work)}: {name}" + (f" ({error})" if error else ""))
                failures += [f"{name}: {error}"] if error else []
    except BrokenProcessPool:
        raise ByolError(
            "a training process of `byol ablate --jobs` died (killed, or out of memory); "
            "finished runs are kept: rerun the same command to continue, with fewer --jobs if "
            "memory is short."
        ) from None
    if failures:
        raise ByolError(f"{len(failures)} ablation run(s) failed: {'; '.join(failures)}")


@dataclass(frozen=True)
class Scoring:
    """How every row of a table is scored: the evaluation settings, the labelled training
    images of the frozen-feature protocols, and the dataset a transfer row is scored on."""

    eval_overrides: list[str]
    train_images: int
    transfer_dataset: str | None = None


def score(
    run_dir: Path, encoder: str, scoring: Scoring, row: Row | None = None, seed: int = 0
) -> dict[str, float]:
    """The scores of ``run_dir``'s trained encoder ("byol"), of its random init ("random-init")
    or of raw pixels ("pixels"), by ``row``'s protocol (frozen-feature kNN and linear when
    None), kept in the run's ablation_eval.json and reused while the settings stay the same."""
    overrides, protocol = list(scoring.eval_overrides), row.protocol if row else None
    if protocol == FINETUNE:
        overrides.append(f"seed={seed}")  # each seed fine-tunes on its own draw of the labels
        key = ["finetune", encoder, row.fraction, "of the pretraining images"]
    else:
        key = [encoder, scoring.train_images]
        key += [scoring.transfer_dataset] if protocol == TRANSFER else []
    # train_images is already in the key: kept out of the settings, as files written before
    # it was an evaluation setting have it.
    eval_settings = dataclasses.asdict(split_overrides(overrides)[0])
    eval_settings.pop("train_images")
    key_text = json.dumps([*key, eval_settings], sort_keys=True)
    path = run_dir / run_folder.ABLATION_EVAL
    # A damaged file (a crash, an edit) is set aside and its scores computed again.
    stored = read_json(path, lambda value: isinstance(value, dict), "scores by setting") or {}
    if key_text not in stored:
        if protocol == FINETUNE:
            stored[key_text] = _finetune(Evaluation(run_dir, None, overrides), row, encoder)
        else:
            dataset = scoring.transfer_dataset if protocol == TRANSFER else None
            overrides.append(f"train_images={scoring.train_images}")
            ev = Evaluation(run_dir, dataset, overrides)
            knn = ev.knn(encoder, record=False)[f"knn{ev.settings.knn_ks[-1]}_top1"]
            linear = ev.linear(encoder, record=False)
            top1 = linear.get("linear_top1", linear.get("linear_paper_top1"))
            stored[key_text] = {"knn_top1": knn, "linear_top1": top1}
        run_folder.write_json(path, stored)
    return stored[key_text]


def _finetune(ev: Evaluation, row: Row, encoder: str) -> dict[str, float]:
    """``byol eval finetune`` of the encoder (or from its random init: training from scratch) on
    the labels of a class-balanced ``fraction`` of the images the run was pretrained on, as the
    paper labels a fraction of the images it pretrains on, with the epochs set for it."""
    fraction = row.fraction
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


def run_row(
    row: Row, config: Config, run_dir: Path, root: Path, scoring: Scoring, quiet: bool
) -> dict[str, Any]:
    """Train (or reuse) one run and score it: a row of the table."""
    try:
        run_dir = train_run(config, run_dir, root, quiet)
    except RunInterrupted as error:
        raise RunInterrupted(
            f"{error.args[0].split(';')[0]}; rerun the same `byol ablate` command to continue."
        ) from None
    result: dict[str, Any] = dict(name=row.name, label=row.label, method=row.method)
    result.update(seed=config.seed, paper=row.paper, reference=row.reference, run_dir=str(run_dir))
    if (run_dir / run_folder.DIVERGED).is_file():
        return {**result, "status": "diverged"}
    encoder = RANDOM_INIT if row.method == RANDOM_INIT else "byol"
    result.update(score(run_dir, encoder, scoring, row, config.seed))
    if row.protocol == TRANSFER:
        result["dataset"] = scoring.transfer_dataset
    result.update(train_s=None, status="ok")
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
