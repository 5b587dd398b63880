"""Epochs of view pairs from a streaming source stored in pieces (tar shards), made so that every
image is read once per epoch over all ranks and a run resumed mid-epoch sees the same images, in
the same order, with the same views as an uninterrupted run.

The plan is a function of the piece counts, the seed, the world size and the number of DataLoader
workers, never of timing:

- each rank keeps the same pieces for the whole run (balanced by count, largest first), so every
  epoch has the same number of steps: the smallest rank's items over its share of a batch. The
  images left over per epoch (the ranks' imbalance, at most about one piece, and the last partial
  batch) are said once in the log;
- every epoch, a rank's pieces are shuffled (seeded by seed, epoch and rank) and dealt to its
  workers, worker w taking every W-th; each worker reads its pieces' records through a shuffle
  buffer seeded likewise, and makes the views of each item from a seed of its position;
- the main process takes the workers' chunks of a micro-batch in a fixed round-robin (a part
  that ends drops out), whatever order the workers finish them in, and cuts micro-batches;
- a resumed run skips the records the epoch consumed before its step (read, not decoded: the
  shuffle buffer holds records) and continues from the same position of each part.

An unreadable record is replaced by the next readable one of its part, as a folder's file is,
and counted into the run's unreadable images; a piece that ends early (truncated) is filled with
the last readable one, so that positions stay those of the counts.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from byol import distributed
from byol.config import Config
from byol.data import DatasetInfo, StreamingSource, indexable
from byol.data.decode import UnreadableImage
from byol.data.subsets import shuffled
from byol.errors import DatasetError
from byol.training.epochs import views_threads, with_threads
from byol.training.stream_plan import StreamPlan, chunk_schedule
from byol.views.cropped import CroppedViews, cropped_paper_views
from byol.views.per_image import TwoViews, paper_views

log = logging.getLogger(__name__)

Pairs = tuple[torch.Tensor, torch.Tensor]
_END = object()


def _slots(records: Iterator[Any], length: int, decode, names: list[str]) -> Iterator[Any]:  # noqa: ANN001
    """``length`` items from ``records``: each the first readable at or after its position; the
    last readable where the records end early. Unreadable records are named into ``names``."""

    def decoded() -> Any:
        record = next(records, _END)
        if record is _END:
            return _END
        try:
            return decode(record)
        except UnreadableImage as error:
            return error

    window: deque = deque()
    last = None
    for _ in range(length):
        k = 0
        while True:
            if len(window) <= k:
                window.append(decoded())
            if not isinstance(window[k], UnreadableImage):
                break
            k += 1
        chosen = window[k] if window[k] is not _END else last
        head = window.popleft()
        if isinstance(head, UnreadableImage):
            names.append(str(head.path))
        if chosen is None:
            raise DatasetError("no sample of a shard part can be read; check the shards.")
        last = chosen
        yield chosen


class _PartStream(IterableDataset):
    """What one DataLoader worker makes of its part in an epoch: its chunks of view pairs (or
    crops and draws), collated, each with the unreadable records met on the way."""

    def __init__(self, source, views, plan: StreamPlan, epoch: int, schedule: list) -> None:  # noqa: ANN001
        self.source, self.views, self.plan = source, views, plan
        self.epoch, self.schedule = epoch, schedule

    def __iter__(self) -> Iterator[tuple[int, Any, list[str]]]:
        worker = get_worker_info()
        part = 0 if worker is None else worker.id
        mine = [(start, stop) for p, start, stop in self.schedule if p == part]
        if not mine:
            return
        plan, source = self.plan, self.source
        pieces = plan.parts(self.epoch)[part]
        seed = plan.part_seed(self.epoch, part)
        records = itertools.chain.from_iterable(source.read_piece(i) for i in pieces)
        records = shuffled(records, plan.buffer, random.Random(seed))
        skip, end = mine[0][0], mine[-1][1]
        for _ in range(skip):  # the epoch consumed these before the resumed step
            next(records, None)
        names: list[str] = []
        items = _slots(records, end - skip, source.decode, names)
        position = skip
        for start, stop in mine:
            images = [image for image, _ in itertools.islice(items, stop - start)]
            generators = [
                torch.Generator().manual_seed((seed + position + offset) % 2**63)
                for offset in range(len(images))
            ]
            position = stop
            # The chunk's draws worked out at once: the values of collating one call per image.
            yield part, self.views.many(images, generators), names
            names = []


def _cat(parts: list[Any]) -> Any:
    first = parts[0]
    if torch.is_tensor(first):
        return torch.cat(parts)
    if isinstance(first, Mapping):
        return type(first)({k: _cat([p[k] for p in parts]) for k in first})
    return type(first)(_cat(list(column)) for column in zip(*parts, strict=True))


def _rows(data: Any, start: int, stop: int) -> Any:
    if torch.is_tensor(data):
        return data[start:stop]
    if isinstance(data, Mapping):
        return type(data)({k: _rows(v, start, stop) for k, v in data.items()})
    return type(data)(_rows(v, start, stop) for v in data)


def _to(data: Any, device: torch.device) -> Any:
    if torch.is_tensor(data):
        return data.to(device, non_blocking=True)
    if isinstance(data, Mapping):
        return type(data)({k: _to(v, device) for k, v in data.items()})
    return type(data)(_to(v, device) for v in data)


class StreamEpochs:
    """``epoch(epoch, start_batch)`` as ``PerImageEpochs`` has it, for a source read by pieces."""

    def __init__(
        self,
        source: StreamingSource,
        config: Config,
        info: DatasetInfo,
        device: torch.device,
        ranks: distributed.Ranks,
    ) -> None:
        counts = source.pieces()
        if counts is None:
            raise DatasetError(
                f"pretraining on {source.name}, a streaming source, needs the sample count of "
                "each of its shards, which it does not know; list them in an index.json beside "
                "the shards, or write a copy with `byol shards`."
            )
        if config.data.train_subset:
            indexable(source, f"train_subset={config.data.train_subset}", "set train_subset=0")
        self.source, self.config, self.info, self.device = source, config, info, device
        self.plan = StreamPlan(counts, config, ranks)
        self.images_per_epoch = self.plan.steps_per_epoch * config.optim.batch_size
        path = "per-image" if config.runtime.view_path == "per-image" else "cropped"
        make = cropped_paper_views if path == "cropped" else paper_views
        self.views: TwoViews | CroppedViews = make(
            config.views, config.data.image_size, info.mean, info.std, info.grayscale
        )
        self._unreadable = set(info.unreadable)
        if ranks.is_main and self.plan.left_over:
            # Beyond a partial batch (which any run drops) the ranks' shards are uneven: said.
            uneven = self.plan.left_over >= config.optim.batch_size
            (log.warning if uneven else log.info)(
                "%d of the %d images are left out of each epoch: the ranks' shards differ in "
                "size and the last batch is never partial",
                self.plan.left_over,
                sum(counts),
            )

    def epoch(self, epoch: int, start_batch: int) -> Iterator[Iterator[Pairs]]:
        """For each optimizer step from ``start_batch`` on, this rank's micro-batches."""
        c, plan = self.config, self.plan
        lengths = [sum(plan.counts[i] for i in part) for part in plan.parts(epoch)]
        total = plan.steps_per_epoch * plan.local_batch
        micro = plan.local_batch // c.optim.accumulation_steps
        # A chunk a micro-batch, as a folder's workers make them: each arrives whole, uncopied,
        # and every chunk's many small tensors (the draws) cross between processes once a batch.
        schedule = chunk_schedule(lengths, micro, start_batch * plan.local_batch, total)
        workers = c.runtime.num_workers
        loader = DataLoader(
            _PartStream(self.source, self.views, plan, epoch, schedule),
            batch_size=None,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )
        batches = (tuple(_to(b, self.device)) for b in self._batches(iter(loader), schedule, micro))
        finish = getattr(self.views, "finish", None)
        if finish is not None:  # with the threads the folder path's finish has beside workers
            batches = map(with_threads(finish, views_threads(c, self.device, "cropped")), batches)
        for _ in range(start_batch, plan.steps_per_epoch):
            yield itertools.islice(batches, c.optim.accumulation_steps)

    def _batches(self, chunks: Iterator, schedule: list, micro: int) -> Iterator[Any]:
        """Micro-batches of ``micro`` items cut from the chunks taken in ``schedule``'s order."""
        waiting: dict[int, deque] = {}
        held, count = [], 0
        for part, start, stop in schedule:
            while not waiting.get(part):
                arrived, data, names = next(chunks)
                waiting.setdefault(arrived, deque()).append(data)
                self._note(names)
            held.append(waiting[part].popleft())
            count += stop - start
            while count >= micro:
                joined = _cat(held) if len(held) > 1 else held[0]
                yield _rows(joined, 0, micro)
                count -= micro
                held = [_rows(joined, micro, micro + count)] if count else []

    def _note(self, names: list[str]) -> None:
        for name in names:
            if name not in self._unreadable:
                self._unreadable.add(name)
                self.info.unreadable.append(name)
