"""Each of the paper's claims judged against what an ablation measured, with seeds.

A difference counts only when it exceeds its spread: the sum of the standard deviations (over
seeds) of the numbers it is made of. With one seed there is no spread, and no verdict but "not
shown". A claim is judged on kNN top-1 (the protocol every frozen-feature row has), or on
fine-tuned top-1 for the label-fraction claims.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from byol.errors import ConfigError
from byol.methods.losses import COLLAPSED_BELOW

HOLDS, NOT_SHOWN, CONTRADICTED = "holds", "not shown", "contradicted"
COLLAPSES, WORSE, DROPS_LESS = "collapses", "worse", "drops_less"
METRICS = ("knn_top1", "linear_top1", "finetune_top1", "collapse")


@dataclass(frozen=True)
class Stat:
    """Mean and standard deviation over seeds (std 0 and n 1 for a single run)."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[Any]) -> Stat | None:
        values = [v for v in values if isinstance(v, (int, float))]
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, len(values))

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}" if self.n > 1 else f"{self.mean:.2f}"


@dataclass(frozen=True)
class Claim:
    """One sentence of the paper and how to test it on an ablation's rows: its ``kind`` (the
    expected direction, as byol/experiments/ablations.toml's header defines each), the rows it
    compares and the ``metric`` it is judged on."""

    text: str
    kind: str
    variant: str
    reference: str = ""
    method: str = "byol"
    other: str = ""
    paper: str = ""  # the paper's numbers behind the claim
    metric: str = "knn_top1"

    @property
    def rows(self) -> list[tuple[str, str]]:
        """The (row name, method) pairs the claim compares, the judged row first."""
        mine = (self.variant, self.method)
        if self.kind == COLLAPSES:
            return [mine]
        if self.kind == WORSE:
            return [mine, (self.reference, self.other or self.method)]
        if self.kind == DROPS_LESS:
            theirs = [(self.reference, self.other), (self.variant, self.other)]
            return [(self.reference, self.method), mine, *theirs]
        raise ConfigError(f"claim {self.text!r}: unknown kind {self.kind!r}.")


@dataclass(frozen=True)
class References:
    """What every encoder must beat to have learned anything: kNN top-1 of its random init and
    of raw pixels, over seeds."""

    random_init: Stat | None = None
    pixels: Stat | None = None


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str
    effect: str  # the measured effect with its spread, in words


def judge(
    claim: Claim, stats: dict[tuple[str, str], dict[str, Stat]], refs: References | None = None
) -> Verdict:
    """The verdict of ``claim`` from ``stats[(row name, method)][metric]``."""
    refs = refs or References()
    mine = stats.get((claim.variant, claim.method), {})
    if claim.metric not in mine:
        return Verdict(claim, NOT_SHOWN, "not measured")
    if claim.kind == COLLAPSES:
        return _collapses(claim, mine[claim.metric], mine.get("collapse"), refs.random_init)
    parts = [stats.get(key, {}).get(claim.metric) for key in claim.rows]
    if any(part is None for part in parts):
        missing = "reference not measured" if claim.kind == WORSE else "not every row measured"
        return Verdict(claim, NOT_SHOWN, missing)
    spread, n = sum(p.std for p in parts), min(p.n for p in parts)
    if claim.kind == WORSE:
        difference = parts[1].mean - parts[0].mean
        return _compare(claim, difference, spread, n, "reference minus this row:")
    ref_a, var_a, ref_b, var_b = parts
    drop_a, drop_b = ref_a.mean - var_a.mean, ref_b.mean - var_b.mean
    verdict = _compare(claim, drop_b - drop_a, spread, n, "smaller drop by")
    effect = f"drops {drop_a:+.2f} ({claim.method}) vs {drop_b:+.2f} ({claim.other}); "
    return Verdict(claim, verdict.verdict, effect + verdict.effect)


def _compare(claim: Claim, difference: float, spread: float, n: int, words: str) -> Verdict:
    """``difference`` > 0 is the claim's direction."""
    effect = f"{words} {difference:+.2f} (spread {spread:.2f}, {n} seed{'s' if n > 1 else ''})"
    if n < 2:
        return Verdict(claim, NOT_SHOWN, effect + "; one seed gives no spread")
    if difference > spread:
        return Verdict(claim, HOLDS, effect)
    if -difference > spread:
        return Verdict(claim, CONTRADICTED, effect)
    return Verdict(claim, NOT_SHOWN, effect + "; within the spread")


def _collapses(
    claim: Claim, mine: Stat, collapse: Stat | None, random_init: Stat | None
) -> Verdict:
    if collapse is not None and collapse.mean < COLLAPSED_BELOW:
        return Verdict(claim, HOLDS, f"collapse metric {collapse} (< {COLLAPSED_BELOW})")
    metric = f"collapse metric {collapse}" if collapse is not None else "no collapse metric"
    if random_init is None:
        return Verdict(claim, NOT_SHOWN, f"{metric}; no random-init reference")
    above = mine.mean - random_init.mean
    spread = mine.std + random_init.std
    n = min(mine.n, random_init.n)
    effect = f"{metric}; kNN {above:+.2f} over random init (spread {spread:.2f}, {n} seeds)"
    if n < 2:
        return Verdict(claim, NOT_SHOWN, effect + "; one seed gives no spread")
    if above <= spread:  # learned nothing the random encoder did not already give
        return Verdict(claim, HOLDS, effect)
    return Verdict(claim, CONTRADICTED, effect)


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Stat]]:
    """Rows of single runs -> {(row name, method): {metric: Stat over seeds}}."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") != "diverged":
            grouped.setdefault((row["name"], row["method"]), []).append(row)
    out = {}
    for key, runs in grouped.items():
        stats = {m: Stat.of([r.get(m) for r in runs]) for m in METRICS}
        out[key] = {m: s for m, s in stats.items() if s is not None}
    return out


def judge_rows(
    claims: tuple[Claim, ...] | list[Claim],
    rows: list[dict[str, Any]],
    references: dict[str, list[dict[str, float]]],
) -> list[Verdict]:
    """The verdict of each claim on a table's rows and its references (kNN top-1)."""
    stats = aggregate(rows)
    random_init, pixels = (
        Stat.of([r["knn_top1"] for r in references.get(name, [])])
        for name in ("random-init", "pixels")
    )
    return [judge(claim, stats, References(random_init, pixels)) for claim in claims]
