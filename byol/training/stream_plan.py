"""Which pieces (tar shards) each rank and DataLoader worker reads in an epoch of a streamed
source and in which order the main process takes their chunks: pure functions of the counts,
the seed, the epoch, the world size and the worker count (``stream_epochs.py`` runs them, with
the shuffle buffer ``data.subsets.shuffled``)."""

from __future__ import annotations

import random

import numpy as np

from byol import distributed
from byol.config import Config
from byol.errors import ConfigError


def pieces_by_rank(counts: list[int], world_size: int) -> list[list[int]]:
    """Piece indices per rank, fixed for a run: the largest piece first, each to the rank
    holding the fewest items so far (the lowest rank on a tie)."""
    held, ranks = [0] * world_size, [[] for _ in range(world_size)]
    for piece in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        rank = min(range(world_size), key=lambda r: (held[r], r))
        ranks[rank].append(piece)
        held[rank] += counts[piece]
    return [sorted(pieces) for pieces in ranks]


def chunk_schedule(lengths: list[int], chunk: int, skip: int, total: int) -> list[tuple]:
    """(part, start, stop) of each chunk, in the order the main process takes them: a round-robin
    over the parts, ``chunk`` positions at a time, a part that ends dropping out; from position
    ``skip`` of that order up to position ``total``."""
    out, seen = [], 0
    for start in range(0, max(lengths, default=0), chunk):
        for part, length in enumerate(lengths):
            if start >= length:
                continue
            stop = min(start + chunk, length)
            first, last = max(start, start + skip - seen), min(stop, start + total - seen)
            if first < last:
                out.append((part, first, last))
            seen += stop - start
            if seen >= total:
                return out
    return out


class StreamPlan:
    """Which pieces each rank and worker reads in an epoch, and how many steps an epoch has."""

    def __init__(self, counts: list[int], config: Config, ranks: distributed.Ranks) -> None:
        self.counts, self.seed, self.rank = counts, config.seed, ranks.rank
        self.workers = max(1, config.runtime.num_workers)
        self.buffer = config.data.shuffle_buffer
        self.local_batch = config.optim.batch_size // ranks.world_size
        self.by_rank = pieces_by_rank(counts, ranks.world_size)
        held = [sum(counts[i] for i in pieces) for pieces in self.by_rank]
        if min(held) < self.local_batch:
            raise ConfigError(
                f"{len(counts)} shards of {sum(counts)} images give rank {held.index(min(held))} "
                f"{min(held)} images, fewer than its {self.local_batch} of batch_size="
                f"{config.optim.batch_size}; lower batch_size or write more, smaller shards "
                "(byol shards --shard-size)."
            )
        self.steps_per_epoch = min(held) // self.local_batch
        self.left_over = sum(counts) - self.steps_per_epoch * config.optim.batch_size

    def parts(self, epoch: int) -> list[list[int]]:
        """This rank's pieces in ``epoch``: shuffled, then dealt to its workers."""
        pieces = list(self.by_rank[self.rank])
        random.Random(f"{self.seed}-{epoch}-{self.rank}").shuffle(pieces)
        return [pieces[w :: self.workers] for w in range(self.workers)]

    def part_seed(self, epoch: int, part: int) -> int:
        entropy = [self.seed, epoch, self.rank, part]
        return int(np.random.SeedSequence(entropy).generate_state(2, np.uint64)[0] >> 2)
