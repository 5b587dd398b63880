"""Learning curves of several runs: kNN top-1 against steps and training minutes, the mean and
spread over the seeds of each recipe, read against the raw pixels the encoders learned from.

A run folder gives one curve: the kNN monitor's score after each epoch (``metrics.jsonl``) and the
final score on the whole bank (``summary.json``, beside the random-init and raw-pixel references).
Runs are grouped into recipes by the user (``LABEL=FOLDER,FOLDER...``); a recipe's curve is the
mean at each step its seeds share, with their standard deviation (n - 1), and its minutes at its
fastest seed's rate (the least disturbed by other work). Where the mean passes a
margin above the pixels, the step is interpolated between the two epochs around it; where it never
does, it is extrapolated from the last two epochs' slope, and marked so.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from byol import run_folder
from byol.errors import ByolError
from byol.reporting.figures import pyplot
from byol.reporting.stats import Stat


@dataclass(frozen=True)
class Curve:
    """One run: kNN top-1 (%) at each scored step, the training seconds per step and its
    references."""

    run_dir: Path
    steps: tuple[int, ...]
    knn: tuple[float, ...]
    seconds_per_step: float
    pixels: float | None
    random_init: float | None


@dataclass(frozen=True)
class Recipe:
    """The seeds of one recipe, on the steps they all scored."""

    label: str
    curves: tuple[Curve, ...]

    @property
    def steps(self) -> list[int]:
        shared = set(self.curves[0].steps).intersection(*(c.steps for c in self.curves[1:]))
        return sorted(shared)

    def at(self, step: int) -> list[float]:
        return [c.knn[c.steps.index(step)] for c in self.curves]

    def stats(self) -> list[Stat]:
        """The mean and spread over seeds at each shared step (no spread for one seed)."""
        return [Stat.of(self.at(s)) for s in self.steps]

    def minutes(self) -> list[float]:
        """Training minutes at the fastest seed's rate: the least disturbed by other work."""
        rate = min(c.seconds_per_step for c in self.curves)
        return [s * rate / 60 for s in self.steps]

    @property
    def pixels(self) -> float | None:
        values = [c.pixels for c in self.curves if c.pixels is not None]
        return statistics.fmean(values) if values else None


def read_curve(run_dir: Path) -> Curve:
    """One run folder's curve; refused in one line if it holds no scores, or if its epochs were
    scored on a subset bank without the final scores on that bank (a run of an older version)."""
    records = run_folder.read_metrics(run_dir)
    summary = run_folder.read_summary(run_dir) or {}
    saved = _saved_config(run_dir)
    # A run whose epochs used a knn_bank_subset bank ends its curve on that bank, against raw
    # pixels on that bank: its whole-bank scores are another protocol (a larger bank scores higher).
    on_epoch_bank = _number(summary.get("knn_top1" + run_folder.EPOCH_BANK))
    if not on_epoch_bank and _bank_may_be_narrowed(saved) and _number(summary.get("knn_top1")):
        raise ByolError(
            f"{run_dir} may have scored its epochs on a knn_bank_subset bank and holds its final "
            "encoder's and raw pixels' scores on the whole bank only, so its curve could mix two "
            "protocols: train it with knn_bank_subset=0, or with this version, which scores both."
        )
    final, pixels = ("knn_top1", "knn_top1_pixels")
    if on_epoch_bank:
        final, pixels = final + run_folder.EPOCH_BANK, pixels + run_folder.EPOCH_BANK
    scored = {
        r["step"]: r["knn_top1"]
        for r in records
        if _number(r.get("knn_top1")) and not r.get("final")
    }
    if _number(summary.get(final)) and _number(summary.get("steps")):
        scored[int(summary["steps"])] = summary[final]  # the final score
    if not scored:
        raise ByolError(
            f"{run_dir} has no kNN scores (metrics.jsonl, summary.json): train it with the kNN "
            "monitor on (knn_every_epochs >= 1), or leave it out."
        )
    rates = [r["images_per_second"] for r in records if _number(r.get("images_per_second"))]
    batch = _batch_size(saved)
    per_step = batch / statistics.median(rates) if rates and batch else math.nan
    steps = sorted(scored)
    return Curve(
        run_dir,
        tuple(steps),
        tuple(float(scored[s]) for s in steps),
        per_step,
        summary.get(pixels) if _number(summary.get(pixels)) else None,
        summary.get("knn_top1_random_init")
        if _number(summary.get("knn_top1_random_init"))
        else None,
    )


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _saved_config(run_dir: Path) -> dict:
    try:
        saved = json.loads((run_dir / run_folder.CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _section(saved: dict, name: str) -> dict:
    """A section of a saved config (nested by concern; older runs' configs were flat)."""
    section = saved.get(name)
    return section if isinstance(section, dict) else saved


def _batch_size(saved: dict) -> int | None:
    batch = _section(saved, "optim").get("batch_size")
    return batch if isinstance(batch, int) and batch > 0 else None


def _bank_may_be_narrowed(saved: dict) -> bool:
    """Whether the run's epochs may have used a subset bank: the monitor draws it from the whole
    labelled train split, whose size the saved config does not hold."""
    bank = _section(saved, "monitor").get("knn_bank_subset")
    return isinstance(bank, int) and bank > 0


def parse_recipe(text: str) -> Recipe:
    """``LABEL=RUN_DIR,RUN_DIR,...`` -> the recipe of those runs."""
    label, sep, folders = text.partition("=")
    if not sep or not label.strip() or not folders.strip():
        raise ByolError(
            f"--recipe {text!r}: write LABEL=RUN_DIR[,RUN_DIR...], e.g. 'main job=runs/s0,runs/s1'."
        )
    dirs = [Path(f.strip()) for f in folders.split(",") if f.strip()]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise ByolError(f"--recipe {label}: no run folder at {', '.join(missing)}; check the path.")
    return Recipe(label.strip(), tuple(read_curve(d) for d in dirs))


def first_step_above(recipe: Recipe, margin: float) -> tuple[float | None, bool]:
    """(the step where the mean curve first reaches pixels + margin, whether extrapolated);
    (None, False) without a pixel score or where the curve does not rise at its end."""
    pixels, steps, mean = recipe.pixels, recipe.steps, [s.mean for s in recipe.stats()]
    if pixels is None or not steps:
        return None, False
    target = pixels + margin
    for i, (step, value) in enumerate(zip(steps, mean, strict=True)):
        if value >= target:
            if i == 0:
                return float(step), False
            before, was = steps[i - 1], mean[i - 1]
            return before + (step - before) * (target - was) / (value - was), False
    if len(steps) < 2 or mean[-1] <= mean[-2]:
        return None, False
    slope = (mean[-1] - mean[-2]) / (steps[-1] - steps[-2])
    return steps[-1] + (target - mean[-1]) / slope, True


def curves_table(recipes: list[Recipe], margin: float) -> str:
    """Markdown: each recipe's last shared score, mean ± spread over its seeds, against pixels."""
    lines = [
        f"| recipe | seeds | steps | minutes | kNN top-1 | raw pixels | margin | reaches pixels "
        f"+ {margin:g} at step |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in recipes:
        last, pixels = r.stats()[-1], r.pixels
        step, extrapolated = first_step_above(r, margin)
        reach = (
            "–" if step is None else f"{step:,.0f}" + (" (extrapolated)" if extrapolated else "")
        )
        ahead = "–" if pixels is None else f"{last.mean - pixels:+.1f}"
        lines.append(
            f"| {r.label} | {len(r.curves)} | {r.steps[-1]:,} | {r.minutes()[-1]:.0f} | "
            f"{last.text(1)} | {'–' if pixels is None else f'{pixels:.1f}'} | "
            f"{ahead} | {reach} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(recipes: list[Recipe], margin: float, out: Path) -> Path:
    """Two panels (kNN against steps, against training minutes), a band of ± one spread per
    recipe, and each recipe's raw-pixel score as a dashed line of its colour."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = plt.get_cmap("tab10")
    for i, r in enumerate(recipes):
        colour, stats = colours(i % 10), r.stats()
        mean = [s.mean for s in stats]
        for ax, xs in zip(axes, (r.steps, r.minutes()), strict=True):
            ax.plot(xs, mean, marker="o", markersize=3, color=colour, label=f"{r.label}")
            low = [s.mean - s.std for s in stats]
            high = [s.mean + s.std for s in stats]
            ax.fill_between(xs, low, high, color=colour, alpha=0.2, linewidth=0)
            if r.pixels is not None:
                ax.axhline(r.pixels, color=colour, linestyle="--", linewidth=1)
                ax.axhline(r.pixels + margin, color=colour, linestyle=":", linewidth=1)
    axes[0].set_xlabel("optimizer steps")
    axes[1].set_xlabel("training minutes (at each recipe's fastest seed's median rate)")
    axes[0].set_ylabel("kNN top-1 on the test set (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title=f"-- raw pixels, ··· pixels + {margin:g}", title_fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
