"""Each of the paper's claims judged against what an ablation measured, with seeds.

A difference counts only when it exceeds its spread: the sum of the standard deviations (over
seeds) of the numbers it is made of; one seed gives no spread and no verdict but "not shown".
A claim that compares encoders is judged only where its reference rows beat raw pixels beyond
the spread: an encoder below the identity map has learned no representation yet, and comparing
such encoders says how fast each starts, not what it learns. A claim of collapse is judged by
the collapse metric, which needs no such reference; a fine-tuning claim's reference for "learned
nothing" is training from scratch, which the claim itself compares with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from byol.errors import ConfigError
from byol.methods.losses import COLLAPSED_BELOW
from byol.reporting.stats import Stat

HOLDS, NOT_SHOWN, CONTRADICTED = "holds", "not shown", "contradicted"
NOT_TESTABLE = "not testable at this budget"
COLLAPSES, WORSE, DROPS_LESS = "collapses", "worse", "drops_less"
FINETUNED = "finetune_top1"
METRICS = ("knn_top1", "linear_top1", FINETUNED, "collapse")


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
        """The (row name, method) pairs the claim compares."""
        mine = (self.variant, self.method)
        if self.kind == COLLAPSES:
            return [mine]
        if self.kind == WORSE:
            return [mine, (self.reference, self.other or self.method)]
        if self.kind == DROPS_LESS:  # each method at the reference, then at the variant
            return [
                (r, m) for m in (self.method, self.other) for r in (self.reference, self.variant)
            ]
        raise ConfigError(f"claim {self.text!r}: unknown kind {self.kind!r}.")

    @property
    def references(self) -> list[tuple[str, str]]:
        """The rows that must have learned a representation for the comparison to mean one."""
        return {COLLAPSES: [], WORSE: self.rows[1:], DROPS_LESS: self.rows[::2]}[self.kind]


@dataclass(frozen=True)
class References:
    """What every encoder must beat to have learned anything: its random init (kNN top-1) and
    raw pixels ({metric: Stat}), over seeds."""

    random_init: Stat | None = None
    pixels: dict[str, Stat] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str
    effect: str  # the measured effect with its spread, in words


def judge(
    claim: Claim, stats: dict[tuple[str, str], dict[str, Stat]], refs: References | None = None
) -> Verdict:
    """The verdict of ``claim`` from ``stats[(row name, method)][metric]``."""
    refs, parts = refs or References(), [stats.get(k, {}).get(claim.metric) for k in claim.rows]
    if parts[claim.rows.index((claim.variant, claim.method))] is None:
        return Verdict(claim, NOT_SHOWN, "not measured")
    if claim.kind == COLLAPSES:
        return Verdict(claim, *_collapses(stats[claim.variant, claim.method], refs.random_init))
    if None in parts:
        missing = "reference not measured" if claim.kind == WORSE else "not every row measured"
        return Verdict(claim, NOT_SHOWN, missing)
    spread, n = sum(p.std for p in parts), min(p.n for p in parts)
    if claim.kind == WORSE:
        verdict, effect = _compare(parts[1].mean - parts[0].mean, spread, n)
        effect = f"reference minus this row: {effect}"
    else:
        drop_a, drop_b = parts[0].mean - parts[1].mean, parts[2].mean - parts[3].mean
        verdict, effect = _compare(drop_b - drop_a, spread, n)
        effect = (
            f"drops {drop_a:+.2f} ({claim.method}) vs {drop_b:+.2f} ({claim.other}); "
            f"smaller drop by {effect}"
        )
    gate, passed = _gate(claim, stats, refs.pixels.get(claim.metric))
    if not passed:
        return Verdict(claim, NOT_TESTABLE, f"{gate}; measured: {effect}")
    return Verdict(claim, verdict, f"{effect}; {gate}")


def _gate(
    claim: Claim, stats: dict[tuple[str, str], dict[str, Stat]], pixels: Stat | None
) -> tuple[str, bool]:
    """Whether every reference row of ``claim`` beats raw pixels beyond the spread, in words."""
    if claim.metric == FINETUNED:
        return "no raw-pixel gate: fine-tuning is compared with training from scratch", True
    if pixels is None:
        return "raw pixels were not scored, so nothing shows the reference learned anything", False
    words, passed = [], True
    for name, method in claim.references:
        ref = stats[name, method][claim.metric]
        above, spread = ref.mean - pixels.mean, ref.std + pixels.std
        who = f"the reference ({name}, {method})" if len(claim.references) > 1 else "the reference"
        if above > spread:
            where = f"beats raw pixels by {above:.2f}"
        else:
            where = f"is {-above:.2f} points below" if above < 0 else f"is only {above:.2f} above"
            where, passed = f"{where} raw pixels", False
        words.append(f"{who} {where} ({ref} against {pixels}, spread {spread:.2f})")
    return "; ".join(words), passed


def _compare(difference: float, spread: float, n: int) -> tuple[str, str]:
    """The verdict on ``difference`` (> 0 is the claim's direction), and the effect in words."""
    effect = f"{difference:+.2f} (spread {spread:.2f}, {n} seed{'s' if n > 1 else ''})"
    if n < 2:
        return NOT_SHOWN, effect + "; one seed gives no spread"
    if abs(difference) <= spread:
        return NOT_SHOWN, effect + "; within the spread"
    return HOLDS if difference > 0 else CONTRADICTED, effect


def _collapses(mine: dict[str, Stat], random_init: Stat | None) -> tuple[str, str]:
    """Holds when the collapse metric falls under COLLAPSED_BELOW, or when the run learned
    nothing beyond its random init (kNN within the spread); raw pixels do not gate it."""
    collapse, knn = mine.get("collapse"), mine["knn_top1"]
    said = f"judged by the collapse metric: {collapse}" if collapse else "no collapse metric"
    if collapse is not None and collapse.mean < COLLAPSED_BELOW:
        return HOLDS, f"{said} (< {COLLAPSED_BELOW})"
    if random_init is None:
        return NOT_SHOWN, f"{said}; no random-init reference"
    above, spread = knn.mean - random_init.mean, knn.std + random_init.std
    n = min(knn.n, random_init.n)
    effect = f"{said}; kNN {above:+.2f} over random init (spread {spread:.2f}, {n} seeds)"
    if n < 2:
        return NOT_SHOWN, effect + "; one seed gives no spread"
    return (HOLDS if above <= spread else CONTRADICTED), effect


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Stat]]:
    """Rows of single runs -> {(row name, method): {metric: Stat over seeds}}."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") != "diverged":
            grouped.setdefault((row["name"], row["method"]), []).append(row)
    stats = {
        key: {m: Stat.of([r.get(m) for r in runs]) for m in METRICS}
        for key, runs in grouped.items()
    }
    return {key: {m: s for m, s in group.items() if s is not None} for key, group in stats.items()}


def references(found: dict[str, list[dict[str, float]]]) -> References:
    """A table's references (results.json's "references") as Stats over seeds."""
    pixels = {m: Stat.of([r.get(m) for r in found.get("pixels", [])]) for m in METRICS}
    random_init = Stat.of([r["knn_top1"] for r in found.get("random-init", [])])
    return References(random_init, {m: s for m, s in pixels.items() if s is not None})


def judge_rows(
    claims: tuple[Claim, ...] | list[Claim],
    rows: list[dict[str, Any]],
    found: dict[str, list[dict[str, float]]],
) -> list[Verdict]:
    """The verdict of each claim on a table's rows and its references."""
    stats, refs = aggregate(rows), references(found)
    return [judge(claim, stats, refs) for claim in claims]
