"""An augmentation is one object (byol.views.augmentation): a new one plugs into every path, and
each draws from its own random stream, so adding one leaves the others' draws, and the views of
runs that do not use it, as they were."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from byol.views.augmentation import Draws, Params, RandomApply, draw
from byol.views.batched import BatchTwoViews, BatchViewTransform
from byol.views.blur import GaussianBlur
from byol.views.cropped import CroppedViews
from byol.views.per_image import TwoViews, ViewTransform, paper_views
from byol.views.pipeline import pipeline
from byol.views.spec import paper_view_specs

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
T, T_PRIME = paper_view_specs()


pytestmark = pytest.mark.usefixtures("one_thread")


class Invert(RandomApply):
    """A toy augmentation: x -> 1 - x with probability p. All a new augmentation needs."""

    name = "invert"

    def transform_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        return 255 - image

    def transform_batch(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return 1.0 - x


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def same_draws(a: Draws, b: Draws, names) -> bool:
    return all(
        a[n].keys() == b[n].keys() and all(torch.equal(v, b[n][k]) for k, v in a[n].items())
        for n in names
    )


@pytest.mark.parametrize("where", [2, 6])  # after the flip, and last
def test_a_new_augmentation_changes_no_other_draw_nor_view_on_the_per_image_path(where):
    plain = ViewTransform(T_PRIME, 24, ZERO, ONE)
    augmentations = pipeline(T_PRIME, 24)
    augmentations.insert(where, Invert(0.5))
    extended = ViewTransform(T_PRIME, 24, ZERO, ONE, augmentations=augmentations)
    names = [a.name for a in plain.augmentations]
    inverted = 0
    for seed, image in enumerate(images(40, 32)):
        before = plain.sample(32, 32, torch.Generator().manual_seed(seed))
        after = extended.sample(32, 32, torch.Generator().manual_seed(seed))
        assert same_draws(before, after, names)
        view, new_view = plain.apply(image, before), extended.apply(image, after)
        if not after["invert"]["applied"]:
            assert torch.equal(view, new_view)
        elif where == 6:  # inverting last: exactly the plain view, inverted
            torch.testing.assert_close(new_view, 1.0 - view, atol=1e-6, rtol=0)
            inverted += 1
        else:
            if not after["solarize"]["applied"]:  # solarising after inverting undoes it
                assert not torch.allclose(new_view, view)
            inverted += 1
    assert 8 < inverted < 32  # p = 0.5 of 40


def test_a_new_augmentation_changes_no_other_draw_nor_view_on_the_batched_path():
    plain = BatchViewTransform(T_PRIME, 24, ZERO, ONE)
    extended = BatchViewTransform(
        T_PRIME, 24, ZERO, ONE, augmentations=[*pipeline(T_PRIME, 24), Invert(0.3)]
    )
    batch = images(64, 32)
    before = plain.sample(64, 32, 32, torch.Generator().manual_seed(3))
    after = extended.sample(64, 32, 32, torch.Generator().manual_seed(3))
    assert same_draws(before, after, [a.name for a in plain.augmentations])
    for masked in (False, True):
        views, new_views = plain.apply(batch, before, masked), extended.apply(batch, after, masked)
        chosen = after["invert"]["applied"]
        assert 5 < int(chosen.sum()) < 40
        assert torch.equal(views[~chosen], new_views[~chosen])
        torch.testing.assert_close(new_views[chosen], 1.0 - views[chosen], atol=1e-6, rtol=0)


def test_a_new_augmentation_runs_in_the_crops_in_workers_path():
    def extended(spec):
        return [*pipeline(spec, 24), Invert(0.5)]

    specs = (T, T_PRIME)
    per_image = TwoViews(
        *(ViewTransform(s, 24, ZERO, ONE, augmentations=extended(s)) for s in specs)
    )
    batched = BatchTwoViews(
        *(BatchViewTransform(s, 24, ZERO, ONE, augmentations=extended(s)) for s in specs)
    )
    cropped = CroppedViews(per_image, batched)
    batch = images(16, 40)
    items = [cropped(x, torch.Generator().manual_seed(i)) for i, x in enumerate(batch)]
    assert 0 < sum(int(item[3]["invert"]["applied"]) for item in items) < 16
    fast = cropped.finish(default_collate(items))
    reference = [per_image(x, torch.Generator().manual_seed(i)) for i, x in enumerate(batch)]
    for v in (0, 1):
        slow = torch.stack([r[v] for r in reference])
        assert (fast[v] - slow).abs().mean() < 2 / 255  # the per-image path's uint8 rounding


def test_each_augmentation_draws_from_its_own_stream():
    augmentations = pipeline(T_PRIME, 32)
    g = torch.Generator().manual_seed(9)
    everything = draw(augmentations, 50, 40, 40, g)
    for kept in ([0, 4], [5, 1], [3]):  # any subset, in any order
        subset = draw(
            [augmentations[i] for i in kept], 50, 40, 40, torch.Generator().manual_seed(9)
        )
        assert same_draws(everything, subset, list(subset))
    # Drawn from the generator: a second draw is new, and a fresh generator repeats the first.
    again = draw(augmentations, 50, 40, 40, g)
    assert not torch.equal(again["crop"]["box"], everything["crop"]["box"])
    assert same_draws(
        draw(augmentations, 50, 40, 40, torch.Generator().manual_seed(9)),
        everything,
        list(everything),
    )


class Pairs(Dataset):
    """(index, seed) -> the two views, as training's ViewPairs."""

    def __init__(self) -> None:
        self.views = paper_views(paper_view_specs(), 16, ZERO, ONE)
        self.images = images(4, 20, seed=1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.views(self.images[index], torch.Generator().manual_seed(1000 + index))


def test_views_are_the_same_in_a_fresh_process():
    """A spawned worker is a new interpreter (its own salt for Python's ``hash``): the streams'
    seeds must not depend on it, or the views would change with the number of workers."""
    here = list(DataLoader(Pairs(), batch_size=2))
    there = list(DataLoader(Pairs(), batch_size=2, num_workers=1, multiprocessing_context="spawn"))
    for a, b in zip(here, there, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_never_applied_augmentation_costs_no_work_on_a_batch(monkeypatch):
    calls = []
    original = GaussianBlur.transform_batch
    monkeypatch.setattr(
        GaussianBlur, "transform_batch", lambda s, x, p: calls.append(len(x)) or original(s, x, p)
    )
    batch = images(32, 24)
    for prob, expected in ((0.0, []), (1.0, [32])):  # p = 1: every image, no rows picked
        spec = dataclasses.replace(T, blur_prob=prob)
        BatchViewTransform(spec, 24, ZERO, ONE)(batch, torch.Generator().manual_seed(0))
        assert calls == expected
        calls.clear()
    BatchViewTransform(T_PRIME, 24, ZERO, ONE)(batch, torch.Generator().manual_seed(0))
    assert len(calls) == 1 and 0 < calls[0] < 12  # p = 0.1: only the chosen rows, on a CPU


def test_draws_select_rows_move_collate_and_pickle():
    draws = BatchViewTransform(T, 24, ZERO, ONE).sample(10, 30, 30, torch.Generator())
    part = draws[2:5]
    assert isinstance(part, Draws) and part["jitter"]["factors"].shape == (3, 4)
    assert torch.equal(part["crop"]["box"], draws["crop"]["box"][2:5])
    one = draws[torch.tensor([7])]
    assert one["blur"]["sigma"].shape == (1,)
    assert isinstance(draws.to("cpu", non_blocking=True), Draws)
    restored = pickle.loads(pickle.dumps(draws))
    assert isinstance(restored, Draws) and same_draws(restored, draws, list(draws))
    stacked = default_collate([draws[i] for i in range(10)])
    assert isinstance(stacked, Draws) and same_draws(stacked, draws, list(draws))
