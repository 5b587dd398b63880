"""The batched on-device views against the per-image reference pipeline (views.per_image).

Two kinds of check keep the fast path from drifting from the paper: with the *same* parameters
both paths must produce the same pixels (up to the per-image path's uint8 rounding), and the
parameters each path draws must follow the same distributions.
"""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from byol.views.augmentation import Draws
from byol.views.batched import BatchViewTransform, batch_paper_views
from byol.views.blur import blur_matrices
from byol.views.colour import shift_hue
from byol.views.per_image import ViewTransform
from byol.views.spec import paper_view_specs

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
PAPER = paper_view_specs()  # everything on: crop, flip, jitter, grayscale, blur, solarisation
NO_BLUR = tuple(dataclasses.replace(s, blur_prob=0.0) for s in PAPER)  # the cifar10 preset's


pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_images(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Colourful images with structure at several scales (crops and blur must see edges)."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(n, channels, 6, 6, generator=g), size=size, mode="bilinear")
    fine = torch.rand(n, channels, size, size, generator=g)
    return ((0.7 * coarse + 0.3 * fine) * 255).round().to(torch.uint8)


def as_batch(draws: list[Draws]) -> Draws:
    """Single images' draws stacked into a batch's, as DataLoader's collate does."""
    return default_collate(draws)


def both_paths(spec, images, size, grayscale_source=False, seed=1):
    """Views of ``images`` from both paths with the same drawn parameters, in uint8 levels."""
    per_image = ViewTransform(spec, size, MEAN, STD, grayscale_source)
    batched = BatchViewTransform(spec, size, MEAN, STD)
    g = torch.Generator().manual_seed(seed)
    h, w = images.shape[-2:]
    params = [per_image.sample(h, w, g) for _ in range(images.shape[0])]
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    reference = torch.stack([per_image.apply(rgb[i], p) for i, p in enumerate(params)])
    fast = batched.apply(images, as_batch(params))
    return fast * STD[0] * 255, reference * STD[0] * 255


@pytest.mark.parametrize("view", [0, 1])
def test_same_parameters_give_the_same_pixels_as_the_per_image_path(view):
    spec = PAPER[view]
    fast, reference = both_paths(spec, smooth_images(96, 40), 32)
    difference = (fast - reference).abs()
    # The per-image path truncates to uint8 after each colour op (torchvision's _blend), so it
    # sits a fraction of a level below; a wrong op or parameter would be tens of levels off.
    assert difference.mean() < 2.0
    assert difference.max() < 10.0


def test_crop_resize_flip_and_blur_match_torchvision_to_rounding():
    spec = dataclasses.replace(
        PAPER[0],
        jitter_prob=0.0,
        grayscale_prob=0.0,
        crop_scale=(0.08, 1.0),
    )
    fast, reference = both_paths(spec, smooth_images(64, 48), 32)
    difference = (fast - reference).abs()
    assert difference.mean() < 0.5  # uint8 rounding alone is 0.25 on average
    assert difference.max() < 3.0


def test_shrinking_crops_are_antialiased_like_torchvision():
    spec = dataclasses.replace(
        PAPER[0],
        crop_scale=(0.9, 1.0),
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=0.0,
    )
    fast, reference = both_paths(spec, smooth_images(32, 96), 24)  # 96 -> 24 px: 4x shrink
    assert (fast - reference).abs().mean() < 0.5


def test_gray_source_stays_gray_and_matches_the_per_image_path():
    spec = PAPER[1]
    gray = smooth_images(64, 28, channels=1)
    fast, reference = both_paths(spec, gray, 28, grayscale_source=True)
    assert fast.shape == (64, 3, 28, 28)
    assert torch.equal(fast[:, 0], fast[:, 2])
    assert (fast - reference).abs().mean() < 2.0


def test_hue_shift_matches_torchvision_and_is_periodic():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(8, 3, 16, 16)
    shifts = torch.linspace(-0.5, 0.5, 8)
    ours = shift_hue(x, shifts)
    theirs = torch.stack([TF.adjust_hue(x[i], float(shifts[i])) for i in range(8)])
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(shift_hue(x, torch.ones(8)), x, atol=1e-5)


def test_blur_matrix_rows_are_normalised_gaussians_with_reflect_padding():
    sigma = torch.tensor([0.5, 2.0])
    m = blur_matrices(sigma, 10, 5)
    assert torch.allclose(m.sum(dim=2), torch.ones(2, 10))
    # Row 0 with taps at -2..2 reflects -1 -> 1 and -2 -> 2: pixel 1 gets two taps' weight.
    k = torch.exp(-0.5 * (torch.arange(-2.0, 3.0) / 2.0) ** 2)
    k = k / k.sum()
    assert torch.allclose(m[1, 0, :3], torch.stack([k[2], k[1] + k[3], k[0] + k[4]]))


def test_every_image_draws_its_own_parameters():
    views = batch_paper_views(NO_BLUR, 32, MEAN, STD)
    same_image = smooth_images(1, 32).expand(64, -1, -1, -1)
    v1, _ = views(same_image, torch.Generator().manual_seed(0))
    distinct = {tuple(v.flatten()[:50].tolist()) for v in v1}
    assert len(distinct) == 64


def test_the_same_generator_seed_gives_the_same_views():
    views = batch_paper_views(NO_BLUR, 32, MEAN, STD)
    images = smooth_images(16, 32)
    a = views(images, torch.Generator().manual_seed(7))
    b = views(images, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _per_image_draws(spec, n, size, seed=0):
    transform = ViewTransform(spec, size, MEAN, STD)
    g = torch.Generator().manual_seed(seed)
    return [transform.sample(size, size, g) for _ in range(n)]


@pytest.mark.parametrize("view", [0, 1])
def test_parameter_distributions_match_the_per_image_path(view):
    n, size = 4000, 32
    spec = PAPER[view]
    reference = as_batch(_per_image_draws(spec, n, size))
    batched = BatchViewTransform(spec, size, MEAN, STD)
    fast = batched.sample(n, size, size, torch.Generator().manual_seed(1))
    assert fast.keys() == reference.keys()

    def close_rate(a, b):  # two binomial rates: 4.5 standard errors of their difference
        p = (a.float().mean() + b.float().mean()) / 2
        bound = 4.5 * math.sqrt(max(p * (1 - p), 1e-4) * 2 / n)
        assert abs(a.float().mean() - b.float().mean()) <= bound

    for name in ("flip", "jitter", "grayscale", "blur", "solarize"):
        close_rate(fast[name]["applied"], reference[name]["applied"])
    area = lambda d: d["crop"]["box"][:, 2] * d["crop"]["box"][:, 3] / size**2  # noqa: E731
    aspect = lambda d: torch.log(d["crop"]["box"][:, 3] / d["crop"]["box"][:, 2])  # noqa: E731
    for stat in (area, aspect):
        a, b = stat(fast), stat(reference)
        assert abs(a.mean() - b.mean()) < 4.5 * math.sqrt((a.var() + b.var()) / n)
    for j in (0, 1):  # where the box lands
        assert abs(fast["crop"]["box"][:, j].mean() - reference["crop"]["box"][:, j].mean()) < 0.5
    jf, jr = fast["jitter"], reference["jitter"]
    for j in range(4):  # jitter factors (where jitter is drawn) and the blur sigma
        a, b = jf["factors"][jf["applied"], j], jr["factors"][jr["applied"], j]
        assert abs(a.mean() - b.mean()) < 4.5 * math.sqrt((a.var() + b.var()) / len(a) + 1e-12)
    bf, br = fast["blur"], reference["blur"]
    a, b = bf["sigma"][bf["applied"]], br["sigma"][br["applied"]]
    if len(b) > 50:
        assert abs(a.mean() - b.mean()) < 4.5 * math.sqrt(a.var() / len(a) + b.var() / len(b))
    # Jitter order: each operation lands in each of the four positions a quarter of the time.
    for op in range(4):
        for stage in range(4):
            close_rate(jf["order"][:, stage] == op, jr["order"][:, stage] == op)


def test_pixel_statistics_match_over_many_draws():
    """End to end, each path with its own random draws: mean and spread of the views agree."""
    spec = PAPER[1]
    images = smooth_images(64, 32).repeat(8, 1, 1, 1)  # 512 draws
    per_image = ViewTransform(spec, 32, MEAN, STD)
    g = torch.Generator().manual_seed(3)
    reference = torch.stack([per_image(img, g) for img in images])
    fast = BatchViewTransform(spec, 32, MEAN, STD)(images, torch.Generator().manual_seed(4))
    for stat in (torch.mean, torch.std):
        a, b = stat(fast * STD[0] * 255), stat(reference * STD[0] * 255)
        assert abs(a - b) < 2.5, (stat.__name__, float(a), float(b))


def test_sync_free_masked_path_gives_the_same_views():
    """GPUs use the masked path (no host-device sync); it must equal the CPU's subset path."""
    spec = PAPER[0]
    transform = BatchViewTransform(spec, 32, MEAN, STD)
    images = smooth_images(48, 40)
    params = transform.sample(48, 40, 40, torch.Generator().manual_seed(5))
    subset_path = transform.apply(images, params, masked=False)
    masked_path = transform.apply(images, params, masked=True)
    assert torch.allclose(subset_path, masked_path, atol=1e-5)
