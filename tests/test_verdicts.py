"""Verdicts on the paper's claims: mean and spread over seeds, and each rule on hand-made rows."""

import pytest

from byol.reporting.verdicts import (
    CONTRADICTED,
    HOLDS,
    NOT_SHOWN,
    Claim,
    Stat,
    aggregate,
    judge,
)


def rows(name: str, knn: list[float], collapse: float = 0.9, method: str = "byol") -> list[dict]:
    return [
        dict(name=name, method=method, seed=s, knn_top1=v, linear_top1=v, collapse=collapse,
             status="ok")
        for s, v in enumerate(knn)
    ]  # fmt: skip


def test_stat_is_the_mean_and_sample_standard_deviation():
    stat = Stat.of([80.0, 82.0, 84.0])
    assert (stat.mean, stat.std, stat.n) == (82.0, 2.0, 3)
    assert Stat.of([5.0]) == Stat(5.0, 0.0, 1)
    assert Stat.of([None, "x"]) is None


def test_aggregate_groups_seeds_and_skips_diverged_runs():
    runs = rows("a", [1.0, 3.0]) + [dict(name="a", method="byol", status="diverged")]
    assert aggregate(runs)[("a", "byol")]["knn_top1"] == Stat(2.0, 2**0.5, 2)


WORSE = Claim("tau = 1 is worse", "worse", "tau-1", "baseline")


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
    assert judge(WORSE, stats, None).verdict == expected


def test_one_seed_gives_no_verdict():
    stats = aggregate(rows("baseline", [90.0]) + rows("tau-1", [10.0]))
    verdict = judge(WORSE, stats, None)
    assert verdict.verdict == NOT_SHOWN and "one seed" in verdict.effect


def test_collapse_holds_by_the_collapse_metric_or_by_learning_nothing():
    claim = Claim("no predictor collapses", "collapses", "no-predictor")
    random_init = Stat(78.0, 0.5, 3)
    by_metric = aggregate(rows("no-predictor", [82.0, 83.0, 84.0], collapse=0.05))
    assert judge(claim, by_metric, random_init).verdict == HOLDS
    at_random = aggregate(rows("no-predictor", [77.0, 78.0, 79.0], collapse=0.5))
    assert judge(claim, at_random, random_init).verdict == HOLDS
    learned = aggregate(rows("no-predictor", [82.0, 83.0, 84.0], collapse=0.9))
    assert judge(claim, learned, random_init).verdict == CONTRADICTED
    assert judge(claim, learned, None).verdict == NOT_SHOWN


def test_drops_less_compares_the_two_methods_drops():
    claim = Claim("BYOL loses less", "drops_less", "batch-32", "batch-256", other="simclr")
    stats = aggregate(
        rows("batch-256", [80.0, 80.0]) + rows("batch-32", [79.0, 79.0])
        + rows("batch-256", [70.0, 70.0], method="simclr")
        + rows("batch-32", [60.0, 60.0], method="simclr")
    )  # fmt: skip
    verdict = judge(claim, stats, None)
    assert verdict.verdict == HOLDS and "+1.00 (byol) vs +10.00 (simclr)" in verdict.effect
    missing = aggregate(rows("batch-256", [80.0, 80.0]) + rows("batch-32", [79.0, 79.0]))
    assert judge(claim, missing, None).verdict == NOT_SHOWN


def test_a_claim_across_methods_is_judged_on_its_own_metric():
    # Fine-tuned top-1: BYOL 60 ± 1, from scratch 50 ± 1; kNN says the opposite and must not count.
    byol = [dict(r, finetune_top1=v) for r, v in zip(rows("1pct", [90, 90]), [59, 61], strict=True)]
    scratch = [
        dict(r, finetune_top1=v)
        for r, v in zip(rows("1pct", [95, 95], method="random-init"), [49, 51], strict=True)
    ]
    stats = aggregate(byol + scratch)
    claim = Claim("pretraining beats scratch", "worse", "1pct", "1pct", method="random-init",
                  other="byol", metric="finetune_top1")  # fmt: skip
    verdict = judge(claim, stats, None)
    # difference 10, spread std(59, 61) + std(49, 51) = 2 * sqrt(2)
    assert verdict.verdict == HOLDS and "+10.00 (spread 2.83" in verdict.effect
    on_knn = Claim("pretraining beats scratch", "worse", "1pct", "1pct", method="random-init",
                   other="byol")  # fmt: skip
    assert judge(on_knn, stats, None).verdict == CONTRADICTED  # 95 vs 90 on kNN
