"""Several configs pretrained each once: a finished run of the same experiment is reused, one with
a checkpoint resumed, and independent runs may train side by side, each worker process with its
share of the threads. A step does not scale linearly with threads, so many small runs finish
sooner together (docs/speed.md); `byol ablate --jobs` trains a table this way."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from byol import run_folder
from byol.config import Config, identity
from byol.errors import ByolError, RunInterrupted, TrainingDiverged
from byol.training.loop import pretrain


def finished(run_dir: Path) -> bool:
    """Trained to the end (a run stopped early by max_minutes is resumed instead), or diverged."""
    if (run_dir / run_folder.DIVERGED).is_file():
        return True
    summary = run_folder.read_summary(run_dir)
    return summary is not None and summary.get("stopped_early") is False


def same_config(run_dir: Path, config: Config) -> bool:
    saved = run_dir / run_folder.CONFIG
    return saved.is_file() and identity(Config.load(saved)) == identity(config)


def shared_run(root: Path, config: Config) -> Path | None:
    """A finished run anywhere under ``root`` (two levels down) whose config is the same
    experiment as ``config``. A folder whose config cannot be read (another version's field, a
    damaged file) is not a match: it must not stop every other run from finding its own."""
    for saved in sorted(root.glob("*/*/config.json")):
        try:
            if finished(saved.parent) and same_config(saved.parent, config):
                return saved.parent
        except ByolError:
            continue
    return None


def train_or_reuse(config: Config, run_dir: Path, root: Path, quiet: bool = True) -> Path:
    """The folder holding a finished run of ``config``: ``run_dir`` when finished, else a shared
    run under ``root``, else ``run_dir`` resumed or trained here. A run that diverges is an
    outcome, not an error: ``pretrain`` marks its folder, which counts as finished."""
    if (run_dir / run_folder.CONFIG).is_file():
        saved, wanted = identity(Config.load(run_dir / run_folder.CONFIG)), identity(config)
        changed = [f"{k}: {saved[k]!r} -> {v!r}" for k, v in wanted.items() if saved[k] != v]
        if changed:  # never overwrite another experiment's run
            raise ByolError(
                f"{run_dir} holds a run with another config ({'; '.join(changed)}); choose "
                "another --out, or delete that folder to rerun it."
            )
    if finished(run_dir):
        return run_dir
    shared = shared_run(root, config)
    if shared is not None:
        return shared
    resume = (run_dir / run_folder.CHECKPOINT).is_file()
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # an attempt that stopped before its first checkpoint
    with contextlib.suppress(TrainingDiverged):
        pretrain(config, run_dir, resume=resume, quiet=quiet)
    return run_dir


def threads_per_job(config: Config, jobs: int) -> int:
    return max(1, (config.runtime.threads or os.cpu_count() or 1) // jobs)


def _train_one(config: Config, run_dir: Path, root: Path) -> str | None:
    try:
        train_or_reuse(config, run_dir, root)
    except (ByolError, RunInterrupted) as error:
        return str(error)
    return None


def pretrain_side_by_side(
    runs: list[tuple[Config, Path]], root: Path, jobs: int, say: Callable[[str], None]
) -> None:
    """Train each (config, run folder) of ``runs`` that no finished run under ``root`` holds,
    each experiment once, ``jobs`` at a time with the threads split between them. A run that
    fails is named; the others still finish. A worker that dies (killed, out of memory) ends the
    call with one line; finished runs are kept."""
    pending: dict[str, tuple[Config, Path]] = {}
    for config, run_dir in runs:
        if not finished(run_dir) and shared_run(root, config) is None:
            pending.setdefault(json.dumps(identity(config), default=list), (config, run_dir))
    say(f"training {len(pending)} of {len(runs)} runs ({jobs} at a time)")
    if not pending:
        return
    threads = threads_per_job(runs[0][0], jobs)
    # spawn: no fork of a process holding torch's threads; one run per worker process, so no
    # memory is carried from run to run (max_tasks_per_child exists from Python 3.11).
    options: dict = {"mp_context": multiprocessing.get_context("spawn")}
    if sys.version_info >= (3, 11):
        options["max_tasks_per_child"] = 1
    failures = []
    try:
        with ProcessPoolExecutor(jobs, **options) as pool:
            names = {}  # each job's run folder name
            for config, run_dir in pending.values():
                job = pool.submit(_train_one, config.replace(threads=threads), run_dir, root)
                names[job] = run_dir.name
            for done, future in enumerate(as_completed(names), 1):
                name, error = names[future], future.result()
                say(f"  trained {done}/{len(names)}: {name}" + (f" ({error})" if error else ""))
                failures += [f"{name}: {error}"] if error else []
    except BrokenProcessPool:
        raise ByolError(
            "a training process died (killed, or out of memory); finished runs are kept: rerun "
            "the same command to continue, with fewer --jobs if memory is short."
        ) from None
    if failures:
        raise ByolError(f"{len(failures)} run(s) failed: {'; '.join(failures)}")
