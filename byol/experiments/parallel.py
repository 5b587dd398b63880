"""Independent ablation runs side by side: N worker processes, each with its share of the threads.

A training step does not scale linearly with threads, so a table of many runs finishes sooner
as N runs at a time (docs/speed.md). Runs are resumable as always, so an interrupted table
continues.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from byol.config import Config
from byol.errors import ByolError, RunInterrupted


def threads_per_job(config: Config, jobs: int) -> int:
    total = config.runtime.threads or os.cpu_count() or 1
    return max(1, total // jobs)


def _train_one(job: tuple[Config, Path, Path]) -> tuple[str, str | None]:
    from byol.experiments.ablation_runs import train_run

    config, run_dir, root = job
    try:
        train_run(config, run_dir, root, quiet=True)
    except (ByolError, RunInterrupted) as error:
        return str(run_dir), str(error)
    return str(run_dir), None


def train_side_by_side(
    jobs_list: list[tuple[Config, Path, Path]], jobs: int, say: Callable[[str], None]
) -> None:
    """Train every (config, run folder, ablation root) in ``jobs_list``, ``jobs`` at a time, the
    threads split between them. A run that fails is named; the others still finish. A worker
    that dies (killed, out of memory) ends the call with one line; finished runs are kept."""
    if not jobs_list:
        return
    threads = threads_per_job(jobs_list[0][0], jobs)
    work = [(c.replace(threads=threads), d, r) for c, d, r in jobs_list]
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
                run_dir, error = future.result()
                note = f" ({error})" if error else ""
                say(f"  trained {done}/{len(work)}: {Path(run_dir).name}{note}")
                if error:
                    failures.append(f"{Path(run_dir).name}: {error}")
    except BrokenProcessPool:
        raise ByolError(
            "a training process of `byol ablate --jobs` died (killed, or out of memory); "
            "finished runs are kept: rerun the same command to continue, with fewer --jobs if "
            "memory is short."
        ) from None
    if failures:
        raise ByolError(f"{len(failures)} ablation run(s) failed: {'; '.join(failures)}")
