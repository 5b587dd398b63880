"""Epochs of view pairs, made so that a run resumed mid-epoch sees exactly the batches and views an
uninterrupted run would have seen.

``EpochBatches`` picks image indices and a seed per image; ``ViewPairs`` turns each into two views
(T and T') in DataLoader workers (any dataset), either whole (``views=per-image``) or as two crops
that the training device finishes a batch at a time (``views.cropped``: folders read from files);
``BatchedEpochs`` makes a whole batch's views at once on the training device (in-memory datasets).
``PerImageEpochs`` and ``BatchedEpochs`` yield an epoch's steps through the same ``epoch``.
Under torchrun every rank yields its own slices of each global batch (``distributed.shard_slices``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from byol import distributed, speed
from byol.config import Config
from byol.views.batched import BatchTwoViews
from byol.views.cropped import CroppedViews
from byol.views.per_image import TwoViews

ONE_PROCESS = distributed.Ranks()


def epoch_order(size: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image order of an epoch and one view seed per position: functions of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(size, generator=generator)
    return order, torch.randint(0, 2**62, (size,), generator=generator)


class EpochBatches(torch.utils.data.Sampler):
    """Micro-batches of (image index, view seed) for one epoch, starting at a given global batch.

    The order and the seeds are functions of (seed, epoch) only, so a run resumed mid-epoch sees
    exactly the batches and views that an uninterrupted run would have seen. Every rank computes
    the same global batches and yields its own slices of each (``distributed.shard_slices``): the
    ranks' images and per-image view seeds together are the one-process batch.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        epoch: int,
        start_batch: int = 0,
        ranks: distributed.Ranks = ONE_PROCESS,
        accumulation_steps: int = 1,
    ):
        self.size, self.batch_size = size, batch_size
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch
        self.slices = distributed.shard_slices(batch_size, ranks, accumulation_steps)

    def __len__(self) -> int:
        return (self.size // self.batch_size - self.start_batch) * len(self.slices)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, view_seeds = epoch_order(self.size, self.seed, self.epoch)
        for b in range(self.start_batch, self.size // self.batch_size):  # drop the last partial
            batch = order[b * self.batch_size : (b + 1) * self.batch_size].tolist()
            seeds = view_seeds[b * self.batch_size : (b + 1) * self.batch_size].tolist()
            for part in self.slices:
                yield list(zip(batch[part], seeds[part], strict=True))


class ViewPairs(Dataset):
    """Wraps an (image, label) dataset: key (index, seed) -> (view 1, view 2), or, with
    ``CroppedViews``, the two crops and draws that its ``finish`` turns into views on the device."""

    def __init__(self, images: Dataset, views: TwoViews | CroppedViews) -> None:
        self.images, self.views = images, views
        self.finish = views.finish if isinstance(views, CroppedViews) else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        image, _ = self.images[index]
        return self.views(image, torch.Generator().manual_seed(seed))

    def __getitems__(self, keys: list[tuple[int, int]]) -> tuple:
        """A whole micro-batch, already stacked (``already_stacked`` is the loader's collate):
        the values of collating ``self[key]`` for each key, with the view parameters of all the
        images worked out at once instead of image by image."""
        images = [self.images[index][0] for index, _ in keys]
        generators = [torch.Generator().manual_seed(seed) for _, seed in keys]
        return self.views.many(images, generators)


def already_stacked(batch: tuple) -> tuple:
    """The collate of a loader over ``ViewPairs``: its ``__getitems__`` stacks the batch itself."""
    return batch


Pairs = tuple[torch.Tensor, torch.Tensor]


def per_image_epoch(
    view_pairs: ViewPairs,
    config: Config,
    device: torch.device,
    epoch: int,
    start_batch: int,
    ranks: distributed.Ranks = ONE_PROCESS,
) -> Iterator[Iterator[Pairs]]:
    """An epoch of view pairs made image by image in DataLoader workers (any dataset), finished a
    batch at a time on the device where ``view_pairs`` has a ``finish``: for each optimizer step,
    this rank's micro-batches, made as they are consumed."""
    sampler = EpochBatches(
        len(view_pairs),
        config.optim.batch_size,
        config.seed,
        epoch,
        start_batch,
        ranks,
        config.optim.accumulation_steps,
    )
    loader = DataLoader(
        view_pairs,
        batch_sampler=sampler,
        num_workers=config.runtime.num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if config.runtime.num_workers else None,
        collate_fn=already_stacked,
    )
    on_device = (tuple(t.to(device, non_blocking=True) for t in batch) for batch in loader)
    finish = view_pairs.finish
    if finish is not None:
        on_device = map(with_threads(finish, views_threads(config, device, "cropped")), on_device)
    for _ in range(len(sampler) // config.optim.accumulation_steps):
        yield itertools.islice(on_device, config.optim.accumulation_steps)


class PerImageEpochs:
    """Epochs of view pairs made image by image in DataLoader workers (``per_image_epoch``): the
    same ``epoch(epoch, start_batch)`` as ``BatchedEpochs``, so the loop asks either alike."""

    def __init__(
        self,
        view_pairs: ViewPairs,
        config: Config,
        device: torch.device,
        ranks: distributed.Ranks = ONE_PROCESS,
    ) -> None:
        self.view_pairs, self.config, self.device, self.ranks = view_pairs, config, device, ranks

    def epoch(self, epoch: int, start_batch: int) -> Iterator[Iterator[Pairs]]:
        """For each optimizer step, this rank's micro-batches, made as they are consumed."""
        return per_image_epoch(
            self.view_pairs, self.config, self.device, epoch, start_batch, self.ranks
        )


def views_threads(config: Config, device: torch.device, path: str) -> int:
    """The intra-op threads that make views in the training process (``speed.view_threads``)."""
    workers = config.runtime.num_workers if path == "cropped" else 0
    return speed.view_threads(
        config.runtime.view_threads,
        device.type,
        os.cpu_count() or 1,
        workers,
        torch.get_num_threads(),
        path,
    )


def with_threads(make: Callable[..., Pairs], threads: int) -> Callable[..., Pairs]:
    """``make`` run with ``threads`` intra-op threads, the step's restored after it."""
    if threads == torch.get_num_threads():
        return make

    def make_with_threads(*args: object) -> Pairs:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return make(*args)
        finally:
            torch.set_num_threads(before)

    return make_with_threads


class BatchedEpochs:
    """Epochs of view pairs made a batch at a time on the training device, from uint8 images
    held there (in-memory datasets): no workers, no per-image Python, no host-device copies.

    Each rank draws the view parameters of the whole global batch, exactly as one process would
    (cheap: a few numbers per image), and makes the views of its own slices only; so the ranks'
    views together are the one-process batch's, bit for bit in the parameters.
    """

    def __init__(
        self,
        images: torch.Tensor,
        views: BatchTwoViews,
        config: Config,
        ranks: distributed.Ranks = ONE_PROCESS,
    ) -> None:
        self.images, self.views, self.config = images, views, config
        self.apply = with_threads(views.apply, views_threads(config, images.device, "batched"))
        self.slices = distributed.shard_slices(
            config.optim.batch_size, ranks, config.optim.accumulation_steps
        )

    def epoch(self, epoch: int, start_batch: int) -> Iterator[Iterator[Pairs]]:
        """For each optimizer step, this rank's micro-batches, made as they are consumed."""
        c = self.config
        order, view_seeds = epoch_order(self.images.shape[0], c.seed, epoch)
        order = order.to(self.images.device)
        generator = torch.Generator(self.images.device)
        height, width = self.images.shape[-2:]
        for b in range(start_batch, self.images.shape[0] // c.optim.batch_size):
            generator.manual_seed(int(view_seeds[b]))  # per batch: resume lands on the same views
            params = self.views.sample(c.optim.batch_size, height, width, generator)
            yield self._micro_batches(
                order[b * c.optim.batch_size : (b + 1) * c.optim.batch_size], params
            )

    def _micro_batches(self, batch: torch.Tensor, params: tuple) -> Iterator[Pairs]:
        for part in self.slices:
            yield self.apply(self.images[batch[part]], (params[0][part], params[1][part]))


def view_path(config: Config, train_set: Dataset) -> str:
    """Where views are made: "batched" (all on the device; data held in memory), "cropped"
    (crops in workers, the rest batched on the device; images read from files) or "per-image"."""
    if config.runtime.view_path == "per-image":
        return "per-image"
    return "batched" if getattr(train_set, "in_memory", False) else "cropped"
