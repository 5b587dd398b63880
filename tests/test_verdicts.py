"""Verdicts on the paper's claims: mean and spread over seeds, and each rule on hand-made rows."""

import pytest

from byol.errors import ConfigError
from byol.reporting.stats import Stat
from byol.reporting.verdicts import (
    CONTRADICTED,
    HOLDS,
    NOT_SHOWN,
    NOT_TESTABLE,
    Claim,
    References,
    aggregate,
    judge,
    judge_rows,
)


def rows(name: str, knn: list[float], collapse: float = 0.9, method: str = "byol") -> list[dict]:
    scores = dict(method=method, collapse=collapse, status="ok")
    return [dict(name=name, seed=s, knn_top1=v, linear_top1=v, **scores) for s, v in enumerate(knn)]


def test_stat_is_the_mean_and_sample_standard_deviation():
    stat = Stat.of([80.0, 82.0, 84.0])
    assert (stat.mean, stat.std, stat.n) == (82.0, 2.0, 3)
    assert Stat.of([5.0]) == Stat(5.0, 0.0, 1)
    assert Stat.of([None, "x"]) is None


def test_aggregate_groups_seeds_and_skips_diverged_runs():
    runs = rows("a", [1.0, 3.0]) + [dict(name="a", method="byol", status="diverged")]
    assert aggregate(runs)[("a", "byol")]["knn_top1"] == Stat(2.0, 2**0.5, 2)


WORSE = Claim("tau = 1 is worse", "worse", "tau-1", "baseline")
# Raw pixels far below every row: the gate passes and the claim is judged on its own numbers.
LOW_PIXELS = References(pixels={"knn_top1": Stat(50.0, 0.0, 1)})


@pytest.mark.parametrize(
    "variant, expected",
    [
        ([79.0, 80.0, 81.0], HOLDS),  # 3.0 below, spread 2.0
        ([81.5, 82.0, 82.5], NOT_SHOWN),  # 1.0 below, spread 1.5
        ([86.0, 87.0, 88.0], CONTRADICTED),  # 4.0 above, spread 2.0
    ],
)
def test_a_difference_counts_only_beyond_the_sum_of_the_standard_deviations(variant, expected):
    stats = aggregate(rows("baseline", [82.0, 83.0, 84.0]) + rows("tau-1", variant))
    assert judge(WORSE, stats, LOW_PIXELS).verdict == expected


def test_one_seed_gives_no_verdict():
    stats = aggregate(rows("baseline", [90.0]) + rows("tau-1", [10.0]))
    verdict = judge(WORSE, stats, LOW_PIXELS)
    assert verdict.verdict == NOT_SHOWN and "one seed" in verdict.effect


def test_collapse_holds_by_the_collapse_metric_or_by_learning_nothing():
    claim = Claim("no predictor collapses", "collapses", "no-predictor")
    random_init = References(random_init=Stat(78.0, 0.5, 3))
    by_metric = aggregate(rows("no-predictor", [82.0, 83.0, 84.0], collapse=0.05))
    assert judge(claim, by_metric, random_init).verdict == HOLDS
    at_random = aggregate(rows("no-predictor", [77.0, 78.0, 79.0], collapse=0.5))
    assert judge(claim, at_random, random_init).verdict == HOLDS
    learned = aggregate(rows("no-predictor", [82.0, 83.0, 84.0], collapse=0.9))
    assert judge(claim, learned, random_init).verdict == CONTRADICTED
    assert judge(claim, learned).verdict == NOT_SHOWN


def test_drops_less_compares_the_two_methods_drops():
    claim = Claim("BYOL loses less", "drops_less", "batch-32", "batch-256", other="simclr")
    byol = rows("batch-256", [80.0, 80.0]) + rows("batch-32", [79.0, 79.0])
    simclr = rows("batch-256", [70.0, 70.0], method="simclr")
    stats = aggregate(byol + simclr + rows("batch-32", [60.0, 60.0], method="simclr"))
    verdict = judge(claim, stats, LOW_PIXELS)
    assert verdict.verdict == HOLDS and "+1.00 (byol) vs +10.00 (simclr)" in verdict.effect
    missing = aggregate(rows("batch-256", [80.0, 80.0]) + rows("batch-32", [79.0, 79.0]))
    assert judge(claim, missing, LOW_PIXELS).verdict == NOT_SHOWN
    # Both methods' references must beat raw pixels: SimCLR's 70 does not beat 75.
    gated = judge(claim, stats, References(pixels={"knn_top1": Stat(75.0, 0.0, 1)}))
    assert gated.verdict == NOT_TESTABLE
    assert "the reference (batch-256, byol) beats raw pixels by 5.00" in gated.effect
    assert "the reference (batch-256, simclr) is 5.00 points below raw pixels" in gated.effect
    assert "measured: drops +1.00 (byol)" in gated.effect  # what was measured, still said


def test_a_claim_across_methods_is_judged_on_its_own_metric():
    # Fine-tuned top-1: BYOL 60 ± 1, from scratch 50 ± 1; kNN says the opposite and must not count.
    byol = [dict(r, finetune_top1=v) for r, v in zip(rows("1pct", [90, 90]), [59, 61], strict=True)]
    scratch = [
        dict(r, finetune_top1=v)
        for r, v in zip(rows("1pct", [95, 95], method="random-init"), [49, 51], strict=True)
    ]
    stats = aggregate(byol + scratch)
    claim = Claim(
        "pretraining beats scratch",
        "worse",
        "1pct",
        "1pct",
        "random-init",
        "byol",
        metric="finetune_top1",
    )
    verdict = judge(claim, stats)
    # difference 10, spread std(59, 61) + std(49, 51) = 2 * sqrt(2)
    assert verdict.verdict == HOLDS and "+10.00 (spread 2.83" in verdict.effect
    on_knn = Claim("pretraining beats scratch", "worse", "1pct", "1pct", "random-init", "byol")
    assert judge(on_knn, stats, LOW_PIXELS).verdict == CONTRADICTED  # 95 vs 90 on kNN


def test_a_tables_verdicts_use_its_references_and_name_what_was_not_run():
    claims = [
        Claim("no predictor collapses", "collapses", "no-predictor"),
        Claim("tau = 1 is worse", "worse", "tau-1", "baseline"),
        Claim("no target collapses", "collapses", "no-target"),  # a row left out by rows=
    ]
    table = rows("no-predictor", [77.0, 78.0, 79.0], collapse=0.5) + rows("tau-1", [70.0, 71.0])
    table += rows("baseline", [80.0, 81.0])
    references = {"random-init": [{"knn_top1": v} for v in (78.0, 78.5, 77.5)], "pixels": []}
    verdicts = judge_rows(claims, table, references)
    assert [v.verdict for v in verdicts] == [HOLDS, NOT_TESTABLE, NOT_SHOWN]
    assert "over random init" in verdicts[0].effect and verdicts[2].effect == "not measured"
    assert "raw pixels were not scored" in verdicts[1].effect  # no evidence that it learned
    references["pixels"] = [{"knn_top1": 60.0, "linear_top1": 65.0}]
    verdicts = judge_rows(claims, table, references)
    assert [v.verdict for v in verdicts] == [HOLDS, HOLDS, NOT_SHOWN]
    assert "the reference beats raw pixels by 20.50" in verdicts[1].effect
    # Without the references a collapse is judged by its collapse metric only.
    assert judge_rows(claims[:1], table, {})[0].verdict == NOT_SHOWN


def test_an_unknown_claim_kind_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown kind 'better'"):
        judge(Claim("x", "better", "a", "b"), aggregate(rows("a", [1.0, 2.0])))


# The gate: the reference (baseline, 80 ± 1) against raw pixels; the variant is 10 points below
# the reference, far beyond its spread, so the claim would hold wherever it is judged.
GATED = aggregate(rows("baseline", [79.0, 80.0, 81.0]) + rows("tau-1", [69.0, 70.0, 71.0]))


def pixels(knn: float) -> References:
    return References(pixels={"knn_top1": Stat(knn, 0.0, 1)})


def test_a_reference_above_raw_pixels_beyond_the_spread_is_judged():
    verdict = judge(WORSE, GATED, pixels(78.5))  # 1.5 above, spread 1.0
    assert verdict.verdict == HOLDS
    assert "the reference beats raw pixels by 1.50 (80.00 ± 1.00 against 78.50" in verdict.effect


def test_a_reference_within_the_spread_of_raw_pixels_is_not_testable():
    verdict = judge(WORSE, GATED, pixels(79.5))  # 0.5 above, spread 1.0
    assert verdict.verdict == NOT_TESTABLE
    assert "the reference is only 0.50 above raw pixels" in verdict.effect


def test_a_reference_below_raw_pixels_is_not_testable_and_says_by_how_much():
    verdict = judge(WORSE, GATED, pixels(86.3))
    assert verdict.verdict == NOT_TESTABLE == "not testable at this budget"
    assert verdict.effect.startswith("the reference is 6.30 points below raw pixels")
    assert "80.00 ± 1.00 against 86.30, spread 1.00" in verdict.effect


def test_collapse_claims_are_judged_by_the_collapse_metric_whatever_the_pixels_score():
    claim = Claim("no predictor collapses", "collapses", "no-predictor")
    collapsed = aggregate(rows("no-predictor", [60.0, 61.0, 62.0], collapse=0.05))
    verdict = judge(claim, collapsed, pixels(90.0))
    assert verdict.verdict == HOLDS and "judged by the collapse metric" in verdict.effect
    spread = aggregate(rows("no-predictor", [60.0, 61.0, 62.0], collapse=0.8))
    refs = References(Stat(40.0, 1.0, 3), {"knn_top1": Stat(90.0, 0.0, 1)})
    assert judge(claim, spread, refs).verdict == CONTRADICTED  # learned, below pixels or not


def test_a_fine_tuning_claim_is_judged_against_training_from_scratch_not_pixels():
    claim = Claim(
        "beats scratch", "worse", "1pct", "1pct", "random-init", "byol", metric="finetune_top1"
    )
    byol = [dict(r, finetune_top1=v) for r, v in zip(rows("1pct", [0, 0]), [70, 71], strict=True)]
    scratch = rows("1pct", [0, 0], method="random-init")
    scratch = [dict(r, finetune_top1=v) for r, v in zip(scratch, [60, 61], strict=True)]
    verdict = judge(claim, aggregate(byol + scratch), pixels(99.0))
    assert verdict.verdict == HOLDS and "compared with training from scratch" in verdict.effect
