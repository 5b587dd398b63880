"""Many file names held as NumPy arrays (one byte string, each name's bounds in it) instead of a
Python string each: a million names take their own bytes and 16 more each, are quick to take a
subset of, and are not copied page by page into DataLoader workers as Python objects are when
their reference counts change."""

from __future__ import annotations

import numpy as np


class PackedNames:
    """``names[i]`` as given; ``take(indices)`` shares the bytes."""

    def __init__(self, names: list[str]) -> None:
        # No file name holds a NUL; one that is not UTF-8 reaches Python as lone surrogates.
        blob = "\0".join(names).encode("utf-8", "surrogateescape")
        self._bytes = np.frombuffer(blob, np.uint8)
        ends = np.flatnonzero(self._bytes == 0)
        self._starts = np.concatenate(([0], ends + 1)) if names else np.zeros(0, np.int64)
        self._ends = np.concatenate((ends, [len(blob)])) if names else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, i: int) -> str:
        name = self._bytes[self._starts[i] : self._ends[i]].tobytes()
        return name.decode("utf-8", "surrogateescape")

    def take(self, indices: np.ndarray | list[int]) -> PackedNames:
        out = PackedNames.__new__(PackedNames)
        indices = np.asarray(indices, np.int64)
        out._bytes, out._starts, out._ends = self._bytes, self._starts[indices], self._ends[indices]
        return out
