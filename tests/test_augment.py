"""The per-image view pipelines T and T' (arXiv:2006.07733, Table 6): byol.views.per_image over the
augmentations of byol.views.pipeline.

Probabilities and ranges are measured over thousands of seeded draws and compared with the table
within about 4 standard errors; the pixel operations are compared with torchvision's own functional
ops on small constructed images.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from byol.views.augmentation import Draws
from byol.views.blur import GaussianBlur
from byol.views.geometric import sample_crops
from byol.views.per_image import (
    EvalTransform,
    TwoViews,
    ViewTransform,
    as_rgb_tensor,
    paper_views,
)
from byol.views.spec import ViewSpec, blur_kernel_size, paper_view_specs

N_DRAWS = 4000
SRC_H, SRC_W = 256, 320  # a non-square source, like most photos
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator(seed))


T, T_PRIME = paper_view_specs()


def identity_params(
    height: int,
    width: int,
    crop: tuple[int, int, int, int] | None = None,
    flip: bool = False,
    jitter: tuple[float, float, float, float] | None = None,
    jitter_order: tuple[int, ...] = (0, 1, 2, 3),
    grayscale: bool = False,
    blur_sigma: float | None = None,
    solarize: bool = False,
) -> Draws:
    """One image's draws of the paper's pipeline, chosen by hand: by default, nothing but a crop
    of the whole image."""
    return Draws(
        crop={"box": torch.tensor(crop or (0, 0, height, width), dtype=torch.float32)},
        flip={"applied": torch.tensor(flip)},
        jitter={
            "applied": torch.tensor(jitter is not None),
            "factors": torch.tensor(jitter or (1.0, 1.0, 1.0, 0.0)),
            "order": torch.tensor(jitter_order),
        },
        grayscale={"applied": torch.tensor(grayscale)},
        blur={
            "applied": torch.tensor(blur_sigma is not None),
            "sigma": torch.tensor(blur_sigma or 1.0),
        },
        solarize={"applied": torch.tensor(solarize)},
    )


def box(draws: Draws) -> tuple[int, int, int, int]:
    return tuple(int(v) for v in draws["crop"]["box"].tolist())


def applied(draws: Draws, name: str) -> torch.Tensor:
    return draws[name]["applied"]


def blur_of(view: ViewTransform) -> GaussianBlur:
    (blur,) = [a for a in view.augmentations if isinstance(a, GaussianBlur)]
    return blur


def reference(image: torch.Tensor, size: int, mean=MEAN, std=STD) -> torch.Tensor:
    """torchvision's bicubic antialiased resize to size x size, scaled to [0, 1], normalised."""
    x = TF.resize(image, [size, size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), list(mean), list(std))


@pytest.fixture(scope="module")
def draws() -> dict[str, Draws]:
    """N_DRAWS per-image draws of T and of T' (paper_views of the paper's specs), each view's
    made one image at a time and stacked as DataLoader's collate stacks them."""
    views = paper_views(paper_view_specs(), 224, MEAN, STD)
    out = {}
    for name, view, seed in (("T", views.view_1, 1), ("T'", views.view_2, 2)):
        g = generator(seed)
        out[name] = default_collate([view.sample(SRC_H, SRC_W, g) for _ in range(N_DRAWS)])
    return out


def assert_rate(hits: int, n: int, p: float, what: str) -> None:
    if p in (0.0, 1.0):
        assert hits == round(p * n), f"{what}: {hits}/{n}, expected always {'on' if p else 'off'}"
        return
    se = math.sqrt(p * (1 - p) / n)
    assert abs(hits / n - p) < 4 * se, f"{what}: rate {hits / n:.4f}, expected {p} +- {4 * se:.4f}"


def assert_uniform(values: list[float], low: float, high: float, what: str) -> None:
    """Within [low, high], covering it, mean at the centre within 4 standard errors."""
    n = len(values)
    width = high - low
    assert min(values) >= low - 1e-6 and max(values) <= high + 1e-6, what
    assert min(values) < low + 0.01 * width and max(values) > high - 0.01 * width, what
    mean = sum(values) / n
    se = width / math.sqrt(12 * n)
    assert abs(mean - (low + high) / 2) < 4 * se, f"{what}: mean {mean:.4f}"


# --- the specs: Table 6 -------------------------------------------------------------------------


def test_paper_view_specs_are_table_6():
    t, t_prime = paper_view_specs()
    shared = dict(
        crop_scale=(0.08, 1.0),
        crop_ratio=(3 / 4, 4 / 3),
        flip_prob=0.5,
        jitter_prob=0.8,
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.1,
        grayscale_prob=0.2,
        blur_sigma=(0.1, 2.0),
        blur_kernel_fraction=0.1,
    )
    assert t == ViewSpec(**shared, blur_prob=1.0, solarize_prob=0.0)
    assert t_prime == ViewSpec(**shared, blur_prob=0.1, solarize_prob=0.2)


def test_paper_views_builds_t_then_t_prime_at_the_size_given():
    views = paper_views(paper_view_specs(), 64, MEAN, STD)
    assert isinstance(views, TwoViews)
    assert views.view_1.spec == T and views.view_2.spec == T_PRIME
    assert views.view_1.image_size == views.view_2.image_size == 64
    # round(6.4) -> 6 -> odd 7
    assert blur_of(views.view_1).kernel_size == blur_of(views.view_2).kernel_size == 7
    assert [a.p for a in views.view_2.augmentations[1:]] == [0.5, 0.8, 0.2, 0.1, 0.2]
    names = [a.name for a in views.view_1.augmentations]
    assert names == ["crop", "flip", "jitter", "grayscale", "blur", "solarize"]  # Appendix B


# --- 1. probabilities --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "view, field, p",
    [
        ("T", "blur", 1.0),
        ("T'", "blur", 0.1),
        ("T", "solarize", 0.0),
        ("T'", "solarize", 0.2),
        ("T", "grayscale", 0.2),
        ("T'", "grayscale", 0.2),
        ("T", "jitter", 0.8),
        ("T'", "jitter", 0.8),
        ("T", "flip", 0.5),
        ("T'", "flip", 0.5),
    ],
)
def test_operation_probabilities(draws, view, field, p):
    hits = int(applied(draws[view], field).sum())
    assert_rate(hits, N_DRAWS, p, f"{view} {field}")


def test_operations_are_drawn_independently(draws):
    # Each augmentation has its own random stream: were two to share one, their coins would be
    # nested (grayscale only where jitter, say), not independent. In T':
    d = draws["T'"]
    for first, second, p in (
        ("grayscale", "jitter", 0.2 * 0.8),
        ("solarize", "blur", 0.2 * 0.1),
        ("flip", "grayscale", 0.5 * 0.2),
        ("flip", "jitter", 0.5 * 0.8),
    ):
        both = int((applied(d, first) & applied(d, second)).sum())
        assert_rate(both, N_DRAWS, p, f"T' {first} and {second}")


# --- 2. jitter factors and order ---------------------------------------------------------------


@pytest.mark.parametrize(
    "index, name, low, high",
    [
        (0, "brightness", 0.6, 1.4),
        (1, "contrast", 0.6, 1.4),
        (2, "saturation", 0.8, 1.2),
        (3, "hue", -0.1, 0.1),
    ],
)
def test_jitter_factor_ranges(draws, index, name, low, high):
    for view in ("T", "T'"):
        jitter = draws[view]["jitter"]
        factors = jitter["factors"][jitter["applied"], index].tolist()
        assert len(factors) > 0.75 * N_DRAWS
        assert_uniform(factors, low, high, f"{view} {name}")


def test_jitter_order_is_a_uniform_random_permutation(draws):
    orders = [tuple(order) for order in draws["T"]["jitter"]["order"].tolist()]
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
    counts = Counter(orders)
    assert len(counts) == 24
    expected = N_DRAWS / 24
    se = math.sqrt(expected * (1 - 1 / 24))
    assert all(abs(c - expected) < 5 * se for c in counts.values()), counts


# --- 3. blur -----------------------------------------------------------------------------------


def test_blur_sigma_is_uniform_in_0_1_to_2(draws):
    for view in ("T", "T'"):
        blur = draws[view]["blur"]
        sigmas = blur["sigma"][blur["applied"]].tolist()
        if view == "T":
            assert len(sigmas) == N_DRAWS
            assert_uniform(sigmas, 0.1, 2.0, "T blur sigma")  # mean 1.05
        else:
            assert all(0.1 <= s <= 2.0 for s in sigmas)
            assert abs(sum(sigmas) / len(sigmas) - 1.05) < 4 * 1.9 / math.sqrt(12 * len(sigmas))


def test_blur_kernel_size():
    assert blur_kernel_size(224, 0.1) == 23  # Table 6: 23x23 at 224 px
    for size in range(8, 600):
        k = blur_kernel_size(size, 0.1)
        assert k % 2 == 1 and k >= 3
        if 0.1 * size > 2.5:
            assert abs(k - 0.1 * size) <= 1.5, (size, k)
        else:
            assert k == 3, (size, k)  # never below 3 (32 px images: 3x3)
    assert blur_of(ViewTransform(T, 224, MEAN, STD)).kernel_size == 23


def test_blur_is_applied_with_the_kernel_and_sigma_drawn():
    size = 64
    view = ViewTransform(T, size, ZERO, ONE)
    image = random_image(size, size, seed=3)
    out = view.apply(image, identity_params(size, size, blur_sigma=1.7))
    expected = TF.to_dtype(TF.gaussian_blur(image, [7, 7], [1.7, 1.7]), torch.float32, scale=True)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    wrong_kernel = TF.to_dtype(
        TF.gaussian_blur(image, [3, 3], [1.7, 1.7]), torch.float32, scale=True
    )
    assert not torch.allclose(out, wrong_kernel, atol=1 / 255)


# --- 4. crops ----------------------------------------------------------------------------------


def crop_stats(boxes, height, width):
    area = [h * w / (height * width) for _, _, h, w in boxes]
    log_aspect = [math.log(w / h) for _, _, h, w in boxes]
    centre_y = [(t + h / 2) / height for t, _, h, _ in boxes]
    return area, log_aspect, centre_y


def test_crop_boxes_follow_table_6(draws):
    boxes = [tuple(int(v) for v in b) for b in draws["T"]["crop"]["box"].tolist()]
    fallback = (0, 0, SRC_H, SRC_W)  # the image's own ratio 1.25 lies in [3/4, 4/3]
    for top, left, h, w in boxes:
        assert 0 <= top and 0 <= left and 0 < h and 0 < w
        assert top + h <= SRC_H and left + w <= SRC_W
        if (top, left, h, w) == fallback:
            continue
        # Side lengths are rounded to whole pixels: allow that rounding (sides >= ~70 px here).
        assert 0.08 * 0.97 <= h * w / (SRC_H * SRC_W) <= 1.0
        assert 3 / 4 * 0.98 <= w / h <= 4 / 3 * 1.02
    area, log_aspect, _ = crop_stats(boxes, SRC_H, SRC_W)
    # Uniform area in [0.08, 1] conditioned on fitting: small crops are never rejected.
    assert min(area) < 0.09
    assert sum(a < 0.5 for a in area) > 0.4 * N_DRAWS
    assert min(log_aspect) < math.log(3 / 4) + 0.02 and max(log_aspect) > math.log(4 / 3) - 0.02


def test_crop_distribution_matches_torchvision():
    n = N_DRAWS
    spec = T
    g = generator(5)
    ours = sample_crops(n, SRC_H, SRC_W, spec.crop_scale, spec.crop_ratio, g).int().tolist()
    rrc = v2.RandomResizedCrop(224, scale=spec.crop_scale, ratio=spec.crop_ratio)
    image = torch.zeros(3, SRC_H, SRC_W, dtype=torch.uint8)
    state = torch.random.get_rng_state()
    torch.manual_seed(5)
    try:
        theirs = []
        for _ in range(n):
            p = rrc.make_params([image])
            theirs.append((p["top"], p["left"], p["height"], p["width"]))
    finally:
        torch.random.set_rng_state(state)
    stats = zip(
        crop_stats(ours, SRC_H, SRC_W), crop_stats(theirs, SRC_H, SRC_W), "ALC", strict=True
    )
    for a, b, what in stats:
        ma, mb = sum(a) / n, sum(b) / n
        va = sum((x - ma) ** 2 for x in a) / n
        vb = sum((x - mb) ** 2 for x in b) / n
        assert abs(ma - mb) < 4 * math.sqrt((va + vb) / n), (what, ma, mb)
        qa, qb = sorted(a), sorted(b)
        for q in (0.1, 0.25, 0.5, 0.75, 0.9):  # a coarse two-sample quantile comparison
            assert abs(qa[int(q * n)] - qb[int(q * n)]) < 0.04 + 0.1 * abs(qb[int(q * n)]), what


@pytest.mark.parametrize("height, width", [(20, 400), (400, 20)])
def test_crop_fallback_is_torchvisions_central_crop(height, width):
    # A 20x400 image: most boxes of area >= 0.08 at ratio <= 4/3 do not fit, so some draws take
    # the fallback after 10 misses: the largest central box within the ratio range.
    expected = torchvision_fallback(height, width)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    g = generator(0)
    boxes = [tuple(b) for b in sample_crops(300, height, width, scale, ratio, g).int().tolist()]
    for top, left, h, w in boxes:
        assert 0 <= top and 0 <= left and top + h <= height and left + w <= width
    assert expected in boxes
    assert expected == ((height - expected[2]) // 2, (width - expected[3]) // 2) + expected[2:]


def torchvision_fallback(height, width):
    if width > height:
        h, w = height, int(round(height * 4 / 3))
    else:
        h, w = int(round(width / (3 / 4))), width
    return ((height - h) // 2, (width - w) // 2, h, w)


# --- 5. per-image draws and reproducibility ----------------------------------------------------


def test_each_draw_is_new_and_a_seed_reproduces_it():
    view = ViewTransform(T_PRIME, 32, MEAN, STD)
    g = generator(7)
    first, second = view.sample(48, 40, g), view.sample(48, 40, g)
    assert box(first) != box(second)
    many = [view.sample(48, 40, g) for _ in range(200)]
    assert len({box(p) for p in many}) > 150  # one draw per image, not per batch
    again = view.sample(48, 40, generator(7))
    assert again.keys() == first.keys()
    for name, params in first.items():
        assert all(torch.equal(v, again[name][k]) for k, v in params.items()), name

    image = random_image(48, 40, seed=1)
    a = view(image, generator(11))
    b = view(image, generator(11))
    c = view(image, generator(12))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_two_views_are_different_draws_and_reproducible():
    views = paper_views(paper_view_specs(), 32, MEAN, STD)
    image = random_image(40, 40, seed=2)
    v1, v2_ = views(image, generator(3))
    assert v1.shape == v2_.shape == (3, 32, 32)
    assert not torch.allclose(v1, v2_)
    w1, w2 = views(image, generator(3))
    assert torch.equal(v1, w1) and torch.equal(v2_, w2)
    # view 1 draws first from the shared generator, then view 2 goes on with it
    for seed in range(10):
        v1, v2_ = views(image, generator(seed))
        g = generator(seed)
        p1 = views.view_1.sample(40, 40, g)
        p2 = views.view_2.sample(40, 40, g)
        assert torch.equal(v1, views.view_1.apply(image, p1))
        assert torch.equal(v2_, views.view_2.apply(image, p2))


def test_two_views_applies_first_then_second_pipeline():
    plain = dataclasses.replace(
        ViewSpec(),
        crop_scale=(1.0, 1.0),
        flip_prob=0.0,
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=0.0,
        solarize_prob=0.0,
    )
    white = torch.full((3, 8, 8), 255, dtype=torch.uint8)
    keep = ViewTransform(plain, 8, ZERO, ONE)
    invert = ViewTransform(dataclasses.replace(plain, solarize_prob=1.0), 8, ZERO, ONE)
    first, second = TwoViews(keep, invert)(white, generator(0))
    assert torch.equal(first, torch.ones(3, 8, 8)) and torch.equal(second, torch.zeros(3, 8, 8))


# --- 6. apply ----------------------------------------------------------------------------------


def test_apply_output_shape_and_dtype():
    view = ViewTransform(T, 32, MEAN, STD)
    g = generator(0)
    image = random_image(50, 70)
    for _ in range(5):
        out = view.apply(image, view.sample(50, 70, g))
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        assert torch.isfinite(out).all()


def test_apply_with_nothing_drawn_is_bicubic_resize_and_normalise():
    image = random_image(50, 70, seed=4)
    view = ViewTransform(T_PRIME, 32, MEAN, STD)
    out = view.apply(image, identity_params(50, 70))
    torch.testing.assert_close(out, reference(image, 32), atol=1e-6, rtol=0)
    # normalisation really uses the dataset statistics
    assert not torch.allclose(out, reference(image, 32, ZERO, ONE))


def test_apply_crops_top_left_height_width():
    image = random_image(50, 70, seed=5)
    view = ViewTransform(T, 24, MEAN, STD)
    out = view.apply(image, identity_params(50, 70, crop=(5, 11, 30, 40)))
    torch.testing.assert_close(out, reference(image[:, 5:35, 11:51], 24), atol=1e-6, rtol=0)


def test_flip_is_horizontal():
    image = random_image(40, 40, seed=6)
    view = ViewTransform(T, 32, MEAN, STD)
    plain = view.apply(image, identity_params(40, 40))
    flipped = view.apply(image, identity_params(40, 40, flip=True))
    torch.testing.assert_close(flipped, torch.flip(plain, dims=[-1]), atol=0, rtol=0)
    assert not torch.equal(flipped, plain)


def test_solarise_inverts_pixels_at_or_above_one_half():
    ramp = torch.arange(256, dtype=torch.uint8).reshape(16, 16)
    image = torch.stack([ramp, ramp.flip(0), ramp.t()])
    view = ViewTransform(T_PRIME, 16, ZERO, ONE)  # same size: no resampling
    plain = view.apply(image, identity_params(16, 16))
    torch.testing.assert_close(plain * 255, image.float(), atol=1e-4, rtol=0)
    out = view.apply(image, identity_params(16, 16, solarize=True))
    x = image.int()
    expected = torch.where(x >= 128, 255 - x, x).float()
    torch.testing.assert_close(out * 255, expected, atol=1e-4, rtol=0)
    assert (out <= 0.5 + 1e-6).all()  # x -> 1 - x above 0.5: nothing stays above one half


def test_grayscale_output_has_equal_channels():
    image = random_image(40, 40, seed=7)
    view = ViewTransform(T, 32, ZERO, ONE)
    out = view.apply(image, identity_params(40, 40, grayscale=True))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    colour = view.apply(image, identity_params(40, 40))
    assert not torch.equal(colour[0], colour[1])
    # luma of the resized image
    luma = TF.to_dtype(
        TF.rgb_to_grayscale(
            TF.resize(image, [32, 32], antialias=True, interpolation=InterpolationMode.BICUBIC)
        ),
        torch.float32,
        scale=True,
    )
    torch.testing.assert_close(out[:1], luma, atol=1e-6, rtol=0)


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 0, 3, 1)])
def test_jitter_applies_the_four_factors_in_the_drawn_order(order):
    image = random_image(16, 16, seed=8)
    factors = (1.35, 0.65, 1.15, 0.08)
    view = ViewTransform(T, 16, ZERO, ONE)
    out = view.apply(image, identity_params(16, 16, jitter=factors, jitter_order=order))
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    drawn = torch.tensor(factors).tolist()  # a draw is a float32 number: used as it is
    x = image
    for op in order:
        x = ops[op](x, drawn[op])
    torch.testing.assert_close(out, TF.to_dtype(x, torch.float32, scale=True), atol=1e-6, rtol=0)
    other = view.apply(image, identity_params(16, 16, jitter=factors, jitter_order=order[::-1]))
    assert not torch.equal(out, other)  # the order matters, so it must be the drawn one


def test_grayscale_source_skip_matches_full_pipeline_on_gray_images():
    """On an R=G=B image saturation, hue and grayscale change nothing, so skipping them
    (grayscale_source=True) gives the full pipeline's views. Not bit-exact: torchvision's uint8
    colour ops truncate (its luma of a gray pixel x is trunc(0.9999 x) = x - 1, and saturation's
    blend truncates too), so the full pipeline runs up to a level darker after saturation or
    grayscale, and brightness/contrast factors up to 1.4 can grow that to a few levels.
    Measured over 2000 draws: at most 1/255 without jitter, at most 4/255 with it."""
    gray = torch.randint(0, 256, (1, 40, 48), dtype=torch.uint8, generator=generator(1))
    image = gray.expand(3, 40, 48).contiguous()
    worst = {False: 0.0, True: 0.0}
    total, count = 0.0, 0
    for spec in paper_view_specs():
        full = ViewTransform(spec, 32, ZERO, ONE)
        skip = ViewTransform(spec, 32, ZERO, ONE, grayscale_source=True)
        g = generator(0)
        for _ in range(150):
            params = full.sample(40, 48, g)
            a, b = full.apply(image, params), skip.apply(image, params)
            assert torch.equal(b[0], b[1]) and torch.equal(b[1], b[2])
            diff = (a - b).abs()
            jittered = bool(applied(params, "jitter"))
            worst[jittered] = max(worst[jittered], diff.max().item())
            if not jittered and not applied(params, "grayscale"):
                assert torch.equal(a, b)  # no colour op drawn: identical work, identical pixels
            total, count = total + diff.mean().item(), count + 1
    assert worst[False] <= 1 / 255 + 1e-6
    assert worst[True] <= 4 / 255 + 1e-6
    assert total / count < 1 / 255  # on average well under one level


def test_grayscale_source_still_applies_brightness_and_contrast():
    # ...on one channel, and only those: saturation 0.8 run on the three-channel gray uint8 image
    # would lower it by a level (torchvision's truncating luma and blend).
    gray = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8, generator=generator(2))
    image = gray.expand(3, 16, 16)
    view = ViewTransform(T, 16, ZERO, ONE, grayscale_source=True)
    plain = view.apply(image, identity_params(16, 16))
    factors = torch.tensor((1.3, 0.7, 0.8, 0.1)).tolist()
    jittered = view.apply(image, identity_params(16, 16, jitter=factors))
    expected = TF.adjust_contrast(TF.adjust_brightness(gray, factors[0]), factors[1])
    expected = TF.to_dtype(expected.expand(3, -1, -1), torch.float32, scale=True)
    torch.testing.assert_close(jittered, expected, atol=1e-6, rtol=0)
    assert not torch.equal(plain, jittered)
    # The three-channel torchvision ops agree to one level (their luma of gray x is 0.9999 x).
    rgb = TF.adjust_contrast(TF.adjust_brightness(image, factors[0]), factors[1])
    rgb = TF.to_dtype(rgb, torch.float32, scale=True)
    assert (jittered - rgb).abs().max() <= 1 / 255 + 1e-6


# --- 7. input kinds ----------------------------------------------------------------------------


def test_pil_and_one_channel_inputs():
    image = random_image(30, 36, seed=9)
    view = ViewTransform(T_PRIME, 24, MEAN, STD)
    expected = view(image, generator(4))

    pil = Image.fromarray(image.permute(1, 2, 0).numpy(), mode="RGB")
    assert torch.equal(as_rgb_tensor(pil), image)
    assert torch.equal(view(pil, generator(4)), expected)
    rgba = pil.convert("RGBA")
    assert torch.equal(view(rgba, generator(4)), expected)

    gray = image[0]
    for given in (gray, gray[None], Image.fromarray(gray.numpy(), mode="L")):
        rgb = as_rgb_tensor(given)
        assert rgb.shape == (3, 30, 36) and rgb.dtype == torch.uint8
        assert all(torch.equal(rgb[c], gray) for c in range(3))
        out = view(given, generator(4))
        assert out.shape == (3, 24, 24)
        assert torch.equal(out, view(gray.expand(3, 30, 36).contiguous(), generator(4)))


# --- 8. evaluation view ------------------------------------------------------------------------


def test_eval_transform_resizes_shorter_side_and_centre_crops():
    image = random_image(50, 70, seed=10)
    transform = EvalTransform(32, MEAN, STD, crop_fraction=0.875)
    out = transform(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, transform(image))  # deterministic
    resized = TF.resize(image, [37], interpolation=InterpolationMode.BICUBIC, antialias=True)
    assert resized.shape[-2:] == (37, 51)  # round(32 / 0.875) = 37 on the shorter side
    expected = TF.normalize(
        TF.to_dtype(TF.center_crop(resized, [32, 32]), torch.float32, scale=True),
        list(MEAN),
        list(STD),
    )
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    assert torch.equal(transform(pil), out)


def test_eval_transform_at_native_size_only_normalises():
    image = random_image(32, 32, seed=11)
    out = EvalTransform(32, MEAN, STD, crop_fraction=1.0)(image)
    torch.testing.assert_close(out, reference(image, 32), atol=1e-6, rtol=0)
    mean = torch.tensor(MEAN)[:, None, None]
    std = torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(out, (image.float() / 255 - mean) / std, atol=1e-6, rtol=0)
