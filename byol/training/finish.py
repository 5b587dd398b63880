"""The end of a run: the encoder file, the final kNN scores, the summary and the result."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from byol import distributed, run_folder
from byol.checkpoint import save_encoder
from byol.runtime import peak_memory_mb
from byol.training.run_context import RunContext
from byol.training.train_state import TrainState, build_model


@dataclass
class PretrainResult:
    run_dir: Path
    steps: int
    wall_time_s: float
    knn_top1: float | None
    knn_top1_random_init: float | None
    knn_top1_pixels: float | None
    collapse: float | None
    peak_memory_mb: float
    images_per_second: float
    stopped_early: bool
    already_finished: bool = False  # resumed after it had finished: nothing was done


def finished_result(run_dir: Path, summary: dict) -> PretrainResult:
    """A run resumed after it had finished: its summary, unchanged; nothing was trained."""
    fields = {f.name for f in dataclasses.fields(PretrainResult)} - {"run_dir", "already_finished"}
    values = {k: summary.get(k) for k in fields}
    return PretrainResult(run_dir=run_dir, **values, already_finished=True)


def finish(
    state: TrainState,
    context: RunContext,
    started: float,
    collapse: float | None,
    images_per_second: float,
    early: bool,
) -> PretrainResult:
    """The encoder file, the final kNN scores and the summary."""
    c, ranks, step = context.config, context.ranks, state.step
    if ranks.is_main:
        path, encoder = context.run_dir / run_folder.ENCODER, state.method.online_encoder
        save_encoder(path, encoder, c.model.backbone, c.model.cifar_stem, c.model.backbone_kwargs)
    # The checkpoint and the encoder are on disk when any rank returns; rank 0 alone then runs
    # the final kNN and writes the summary, while the others are done.
    distributed.barrier()
    final_knn = context.monitor is not None and c.monitor.knn_final
    scores = _final_scores(state, context) if final_knn else {}
    epoch = step / context.schedule.steps_per_epoch
    context.log.write(dict(step=step, epoch=epoch, final=True, **scores))
    context.log.close()
    result = PretrainResult(
        run_dir=context.run_dir,
        steps=step,
        wall_time_s=time.perf_counter() - started,
        knn_top1=scores.get("knn_top1"),
        knn_top1_random_init=scores.get("knn_top1_random_init"),
        knn_top1_pixels=scores.get("knn_top1_pixels"),
        collapse=collapse,
        peak_memory_mb=peak_memory_mb(),
        images_per_second=images_per_second,
        stopped_early=early,
    )
    if ranks.is_main:
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
        del summary["already_finished"]
        summary["world_size"] = ranks.world_size
        summary["precision"] = context.precision  # what training ran in, with auto resolved
        summary["speed"] = context.speed.summary()  # the speed switches, auto resolved
        summary["data_wait_s"] = context.data_wait_s  # of the training time: views and images
        summary["unreadable_images"] = context.info.unreadable
        summary.update({k: v for k, v in scores.items() if k.endswith(run_folder.EPOCH_BANK)})
        run_folder.write_json(context.run_dir / run_folder.SUMMARY, summary)
    return result


def _final_scores(state: TrainState, context: RunContext) -> dict[str, float]:
    c, monitor = context.config, context.monitor
    scores = {"knn_top1": monitor.score(state.method.online_encoder, full=True)}
    if c.monitor.knn_references:
        torch.manual_seed(c.seed)  # the same initial weights the run started from
        random_init = build_model(c).online_encoder.to(context.device)
        if context.speed.channels_last:
            random_init = random_init.to(memory_format=torch.channels_last)
        scores["knn_top1_random_init"] = monitor.score(random_init, full=True)
        scores["knn_top1_pixels"] = monitor.score_pixels()
    # The scores on the epochs' bank too, so that a learning curve ends on its own protocol; where
    # that bank is the whole one they are the same numbers.
    for key in ("knn_top1", "knn_top1_pixels"):
        if key in scores and not monitor.narrowed:
            scores[key + run_folder.EPOCH_BANK] = scores[key]
    if monitor.narrowed:
        scores["knn_top1" + run_folder.EPOCH_BANK] = monitor.score(state.method.online_encoder)
        if c.monitor.knn_references:
            scores["knn_top1_pixels" + run_folder.EPOCH_BANK] = monitor.score_pixels(full=False)
    return scores
