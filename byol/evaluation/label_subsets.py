"""Label subsets kept in the run folder (``subsets/<dataset>-<tag>-seed<seed>.npy`` and its
``.json``): written once, so every method and every later evaluation uses the same images, and
checked when read back, since a user may have edited or copied them."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from byol import run_folder
from byol.errors import ByolError


def write_subset(stem: Path, indices: np.ndarray, meta: dict[str, Any]) -> None:
    """``stem``.npy (the indices) and ``stem``.json (``meta`` and the indices, for people)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, indices)
    run_folder.atomic_write(stem.with_name(f"{stem.name}.npy"), [buffer.getbuffer()])
    text = json.dumps({**meta, "indices": indices.tolist()}) + "\n"
    run_folder.write_text(stem.with_name(f"{stem.name}.json"), text)


def read_subset(stem: Path, train_size: int) -> np.ndarray:
    """A label subset written before, checked: the same training set, valid indices."""
    fix = f"delete {stem}.npy and {stem.name}.json to draw the subset again"
    try:
        meta = json.loads(stem.with_name(f"{stem.name}.json").read_text())
        indices = np.load(stem.with_name(f"{stem.name}.npy"), allow_pickle=False)
        made_for = int(meta["train_size"])
    except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
        raise ByolError(f"{stem}.npy or its .json is unreadable ({error}); {fix}.") from None
    if made_for != train_size:
        raise ByolError(
            f"{stem}.npy was made for a training set of {made_for} images, this one has "
            f"{train_size}; {fix}, or use another seed."
        )
    valid = indices.ndim == 1 and indices.dtype.kind in "iu" and len(indices) > 0
    if not valid or indices.min() < 0 or indices.max() >= train_size:
        raise ByolError(f"{stem}.npy holds no valid image indices; {fix}.")
    return indices
