"""Independent ablation runs side by side: N worker processes, each with its share of the threads.

Two one-thread processes train about 1.5x faster than one two-thread process on a 2-core CPU
(the step does not scale linearly with threads), so an ablation with many runs finishes sooner
as N runs at a time. Each worker trains one run and exits (``maxtasksperchild=1``), so no memory
is carried from run to run; runs are resumable as always, so an interrupted table continues.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

from byol.config import Config
from byol.errors import ByolError, RunInterrupted


def threads_per_job(config: Config, jobs: int) -> int:
    total = config.threads or os.cpu_count() or 1
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
    threads split between them. A run that fails is named; the others still finish."""
    if not jobs_list:
        return
    threads = threads_per_job(jobs_list[0][0], jobs)
    work = [(dataclasses.replace(c, threads=threads), d, r) for c, d, r in jobs_list]
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    failures = []
    with context.Pool(jobs, maxtasksperchild=1) as pool:
        for done, (run_dir, error) in enumerate(pool.imap_unordered(_train_one, work), 1):
            say(
                f"  trained {done}/{len(work)}: {Path(run_dir).name}"
                + (f" ({error})" if error else "")
            )
            if error:
                failures.append(f"{Path(run_dir).name}: {error}")
    if failures:
        raise ByolError(f"{len(failures)} ablation run(s) failed: {'; '.join(failures)}")
