"""Views of a folder read from files (views.cropped: crops in DataLoader workers, the rest batched
on the device) against the per-image path that such folders took before.

With the same seeds both paths draw the same parameters and give the same pixels up to the
per-image path's uint8 rounding; with independent seeds, the crop boxes read back from the pixels
and the colour statistics of the views follow the same distributions; and odd files in a folder
(unreadable, gray, RGBA, 16-bit, of any size) go through as they do on the per-image path.
"""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import default_collate

from byol.data import ImageFolderDataset, TensorImageDataset, load_datasets
from byol.presets import preset
from byol.training.epochs import ViewPairs, per_image_epoch, view_path
from byol.views.augmentation import Draws
from byol.views.cropped import CroppedViews, cropped_paper_views
from byol.views.per_image import paper_views
from byol.views.spec import paper_view_specs

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(autouse=True)
def one_thread():
    """Per-image ops are tiny: with two threads on a busy machine they ran five times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LEVELS = STD[0] * 255  # a normalised view times this is in uint8 levels


def paper_config(size: int = 32, **changes):
    return preset("imagenet-paper").replace(image_size=size, **changes)


def paper_specs(**changes):
    """The paper's T and T' (everything on: crop, flip, jitter, grayscale, blur, solarisation),
    with ``changes`` made to both."""
    return tuple(dataclasses.replace(spec, **changes) for spec in paper_view_specs())


def equal_draws(a: Draws, b: Draws) -> bool:
    return a.keys() == b.keys() and all(
        a[name].keys() == b[name].keys() and all(torch.equal(v, b[name][k]) for k, v in p.items())
        for name, p in a.items()
    )


def odd_images(count: int, channels: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """Smooth colourful uint8 images, each of its own size, square, tall or wide."""
    g = torch.Generator().manual_seed(seed)
    images = []
    for i in range(count):
        h, w = 33 + (17 * i) % 40, 29 + (23 * i) % 50
        coarse = torch.rand(1, channels, 5, 5, generator=g)
        fine = torch.rand(1, channels, h, w, generator=g)
        image = 0.75 * F.interpolate(coarse, size=(h, w), mode="bilinear") + 0.25 * fine
        images.append((image[0] * 255).round().to(torch.uint8))
    return images


def cropped_path(specs, size, images, seeds, grayscale_source=False):
    """The two views of each image (and the workers' items) from views.cropped."""
    views = cropped_paper_views(specs, size, MEAN, STD, grayscale_source)
    items = [views(x, torch.Generator().manual_seed(s)) for x, s in zip(images, seeds, strict=True)]
    return views.finish(default_collate(items)), items


def per_image_path(specs, size, images, seeds, grayscale_source=False):
    views = paper_views(specs, size, MEAN, STD, grayscale_source)
    pairs = [views(x, torch.Generator().manual_seed(s)) for x, s in zip(images, seeds, strict=True)]
    return [torch.stack([p[v] for p in pairs]) for v in (0, 1)]


def both_paths(specs, size, images, seeds, grayscale_source=False):
    fast, items = cropped_path(specs, size, images, seeds, grayscale_source)
    return fast, per_image_path(specs, size, images, seeds, grayscale_source), items


def test_same_seeds_give_the_per_image_paths_draws_and_pixels():
    specs = paper_specs()
    images, seeds = odd_images(48), range(100, 148)
    fast, reference, items = both_paths(specs, 32, images, seeds)
    per_image = paper_views(specs, 32, MEAN, STD)
    for image, seed, item in zip(images, seeds, items, strict=True):
        g = torch.Generator().manual_seed(seed)
        h, w = image.shape[-2:]
        draws = [per_image.view_1.sample(h, w, g), per_image.view_2.sample(h, w, g)]
        assert equal_draws(item[2], draws[0]) and equal_draws(item[3], draws[1])
        assert item[0].dtype == torch.uint8 and item[0].shape == (3, 32, 32)
        # The crop is the per-image path's first step, the same call on the same draws.
        crop = per_image.view_1.augmentations[0]
        assert torch.equal(item[0], crop.apply_image(image, draws[0]["crop"]))
    for view in (0, 1):
        difference = (fast[view] - reference[view]).abs() * LEVELS
        # The per-image path rounds to uint8 after each colour op; a wrong op is tens of levels off.
        assert difference.mean() < 2.0 and difference.max() < 10.0, view


def test_gray_source_is_cropped_as_one_channel_and_matches_the_per_image_path():
    images = [x.expand(3, -1, -1) for x in odd_images(32, channels=1, seed=1)]
    fast, reference, items = both_paths(paper_specs(), 28, images, range(32), True)
    assert items[0][0].shape == (1, 28, 28)  # a third of the bytes to collate and copy
    assert torch.equal(fast[1][:, 0], fast[1][:, 2])
    assert (fast[1] - reference[1]).abs().mean() * LEVELS < 2.0


def ramp_image(height: int, width: int) -> torch.Tensor:
    """Red = column, green = row, each scaled to 0..255 over the image: a crop's pixels say
    which box of the source it shows."""
    x = torch.linspace(0, 255, width).expand(height, width)
    y = torch.linspace(0, 255, height)[:, None].expand(height, width)
    return torch.stack([x, y, torch.full_like(x, 128)]).round().to(torch.uint8)


def boxes_seen(views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(area fraction, log aspect) of the source box each view of a ramp image shows."""
    levels = views * STD[0] + MEAN[0]
    width = levels[:, 0, :, -1].mean(1) - levels[:, 0, :, 0].mean(1)
    height = levels[:, 1, -1, :].mean(1) - levels[:, 1, 0, :].mean(1)
    return width * height, torch.log(width / height)


def test_crop_boxes_follow_the_per_image_distribution_with_independent_seeds():
    """End to end, read back from the pixels: each path with its own draws."""
    n, size = 800, 24
    specs = paper_specs(
        flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0
    )
    image = ramp_image(120, 200)  # wide: the ratio range and the fallback box both matter
    fast, _ = cropped_path(specs, size, [image] * n, range(n))
    reference = per_image_path(specs, size, [image] * n, range(10**6, 10**6 + n))
    stats = zip(boxes_seen(fast[0]), boxes_seen(reference[0]), strict=True)
    for stat_fast, stat_reference in stats:
        bound = 4.5 * math.sqrt((stat_fast.var() + stat_reference.var()) / n)
        assert abs(stat_fast.mean() - stat_reference.mean()) < bound
        for q in (0.1, 0.5, 0.9):
            assert abs(stat_fast.quantile(q) - stat_reference.quantile(q)) < 0.08
    area, _ = boxes_seen(reference[0])
    assert 0.05 < area.min() and area.max() < 1.05  # the readout itself measures the box


def test_colour_statistics_follow_the_per_image_distribution_with_independent_seeds():
    n = 192
    images = odd_images(64, seed=2) * (n // 64)
    fast, _ = cropped_path(paper_specs(), 24, images, range(n))
    reference = per_image_path(paper_specs(), 24, images, range(5000, 5000 + n))
    for view in (0, 1):
        a, b = fast[view] * LEVELS, reference[view] * LEVELS
        for stat in (
            lambda v: v.mean(dim=(2, 3)),  # per view and channel: brightness, colour balance
            lambda v: v.std(dim=(2, 3)),  # contrast within a view
            lambda v: (v[:, 0] - v[:, 1]).abs().mean(dim=(1, 2))[:, None],  # saturation
        ):
            sa, sb = stat(a), stat(b)  # n x channels: compare the means, 4.5 standard errors
            bound = 4.5 * ((sa.var(dim=0) + sb.var(dim=0)) / n).sqrt()
            assert ((sa.mean(dim=0) - sb.mean(dim=0)).abs() < bound).all(), (view, sa, sb)


def _write_odd_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(6):  # every size its own: the folder stays lazy (read from files)
        array = rng.integers(0, 256, (30 + 7 * i, 50 - 3 * i, 3), dtype=np.uint8)
        Image.fromarray(array).save(root / "ab"[i % 2] / f"{i}.jpg")
    Image.new("L", (41, 23), 77).save(root / "a" / "gray.png")
    Image.new("RGBA", (19, 35), (10, 20, 30, 0)).save(root / "b" / "rgba.png")
    Image.fromarray(np.full((27, 31), 40000, dtype=np.uint16)).save(root / "b" / "deep.png")
    (root / "a" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    return root


def test_a_folder_of_odd_files_goes_through_as_on_the_per_image_path(tmp_path: Path):
    train, _, info = load_datasets(str(_write_odd_folder(tmp_path / "odd")))
    assert isinstance(train, ImageFolderDataset) and len(train) == 9  # the corrupt file is out
    train.samples = [*train.samples, (tmp_path / "odd" / "a" / "cut.jpg", 0)]  # met mid-epoch
    config = paper_config(16, batch_size=10, num_workers=0, seed=3)
    assert view_path(config, train) == "cropped"
    device = torch.device("cpu")
    pairs = {}
    for name, make in (("cropped", cropped_paper_views), ("per-image", paper_views)):
        views = ViewPairs(train, make(config.views, config.data.image_size, info.mean, info.std))
        (micro_batches,) = per_image_epoch(views, config, device, 0, 0)
        pairs[name] = next(micro_batches)
    assert train.unreadable[-1][0].name == "cut.jpg"  # replaced by the next file, on both paths
    for fast, reference in zip(pairs["cropped"], pairs["per-image"], strict=True):
        assert fast.shape == (10, 3, 16, 16) and torch.isfinite(fast).all()
        assert (fast - reference).abs().mean() * info.std[0] * 255 < 2.0


def test_views_config_picks_the_path():
    in_memory = TensorImageDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4))
    on_disk = torch.utils.data.TensorDataset(torch.zeros(4, 3, 8, 8))
    for views, expected in (("auto", ("batched", "cropped")), ("batched", ("batched", "cropped"))):
        config = preset("cifar10").replace(view_path=views)
        assert (view_path(config, in_memory), view_path(config, on_disk)) == expected
    per_image = preset("cifar10").replace(view_path="per-image")
    assert view_path(per_image, in_memory) == view_path(per_image, on_disk) == "per-image"


def test_the_draws_collate_into_one_row_per_image():
    views = cropped_paper_views(paper_specs(), 32, MEAN, STD)
    assert isinstance(views, CroppedViews)
    items = [views(x, torch.Generator().manual_seed(i)) for i, x in enumerate(odd_images(5))]
    assert isinstance(items[0][2], Draws) and items[0][2]["blur"]["sigma"].shape == ()
    _, _, draws_1, draws_2 = default_collate(items)
    assert isinstance(draws_1, Draws) and draws_1.keys() == items[0][2].keys()
    for name, params in draws_1.items():
        for key, value in params.items():
            assert value.shape[0] == 5, (name, key)
            assert torch.equal(value[3], items[3][2][name][key]), (name, key)
    assert equal_draws(draws_2[2], items[2][3])


def _stacked_equal(batch, items) -> None:
    expected = default_collate(items)
    assert len(batch) == len(expected)
    for got, want in zip(batch, expected, strict=True):
        if isinstance(want, dict):
            assert isinstance(got, Draws) and equal_draws(got, want)
        else:
            assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("path", ["cropped", "per-image"])
@pytest.mark.parametrize("gray", [False, True])
def test_a_micro_batch_is_its_images_one_by_one_bit_for_bit(path, gray):
    """``ViewPairs.__getitems__`` works the draws out for the whole micro-batch; it must give
    exactly what the loader collated from image-by-image calls before. Sizes vary per image, and
    two are so thin that no crop candidate fits (the central fallback)."""
    images = odd_images(20, channels=1 if gray else 3, seed=3)
    images += [torch.full((1 if gray else 3, 2, 90), 7, dtype=torch.uint8)] * 2
    images = [x.expand(3, -1, -1) for x in images] if gray else images
    make = cropped_paper_views if path == "cropped" else paper_views
    views = make(paper_specs(), 24, MEAN, STD, gray)
    pairs = ViewPairs([(image, 0) for image in images], views)
    keys = [(i, 1000 + 7 * i) for i in (5, 0, 21, 3, 20, 3)]  # any order, repeats
    _stacked_equal(pairs.__getitems__(keys), [pairs[key] for key in keys])


def test_finish_is_the_same_with_and_without_masking():
    """GPUs take the masked (sync-free) path; it must equal the CPU's subset path."""
    views = cropped_paper_views(paper_specs(), 32, MEAN, STD)
    items = [views(x, torch.Generator().manual_seed(i)) for i, x in enumerate(odd_images(24))]
    crops, _, draws, _ = default_collate(items)
    transform = views.batched.view_1
    subset = transform.apply_cropped(crops, draws, masked=False)
    assert torch.allclose(transform.apply_cropped(crops, draws, masked=True), subset)


def test_a_resumed_epoch_sees_the_same_views(tmp_path: Path):
    train, _, info = load_datasets(str(_write_odd_folder(tmp_path / "odd")))
    config = paper_config(16, batch_size=4, num_workers=0)
    views = ViewPairs(
        train, cropped_paper_views(config.views, config.data.image_size, info.mean, info.std)
    )
    device = torch.device("cpu")
    whole = [next(m) for m in per_image_epoch(views, config, device, 1, 0)]
    resumed = [next(m) for m in per_image_epoch(views, config, device, 1, 1)]
    assert len(whole) == 2 and len(resumed) == 1
    assert all(torch.equal(a, b) for a, b in zip(whole[1], resumed[0], strict=True))


def test_pretrain_on_a_folder_read_from_files_takes_the_cropped_path(tmp_path: Path, monkeypatch):
    from byol.training.loop import pretrain

    finished = []
    finish = CroppedViews.finish
    monkeypatch.setattr(CroppedViews, "finish", lambda s, b: finished.append(1) or finish(s, b))

    folder = _write_odd_folder(tmp_path / "odd")
    config = preset("fashion-mnist").replace(
        dataset=str(folder),
        backbone="resnet18-narrow",
        image_size=16,
        batch_size=4,
        epochs=1,
        projector_hidden_dim=32,
        predictor_hidden_dim=32,
        projection_dim=16,
        num_workers=1,  # a real worker process: the crops and draws are pickled back
        knn_references=False,
        precision="fp32",
    )
    result = pretrain(config, tmp_path / "run", quiet=True)
    assert result.steps == 2 and math.isfinite(result.images_per_second)
    assert len(finished) == 2  # both batches were finished on the device


def test_the_views_beside_busy_workers_take_only_the_cores_they_leave(monkeypatch):
    from byol.config import Config
    from byol.training.epochs import views_threads, with_threads

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    torch.set_num_threads(2)
    config, cpu = Config().replace(num_workers=2), torch.device("cpu")
    assert views_threads(config, cpu, "cropped") == 1
    seen = []
    finish = with_threads(lambda batch: seen.append(torch.get_num_threads()), 1)
    finish(())
    assert seen == [1] and torch.get_num_threads() == 2  # restored for the model step
    # no workers: nothing to leave room for; in memory, the views take the step's threads
    assert views_threads(config.replace(num_workers=0), cpu, "cropped") == 2
    assert views_threads(config, cpu, "batched") == 2
    assert with_threads(len, 2) is len
