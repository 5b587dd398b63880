"""The variants of the paper's ablations (arXiv:2006.07733, Section 5) as config overrides, with
its numbers.

Every variant is a set of Config fields: an augmentation is removed by setting its probability to
0 (or its range to the identity), never by a special case in augment.py, so any view pipeline
built from ``view_specs(config)`` (per-image or batched) honours it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from byol.config import Config
from byol.errors import ConfigError
from byol.reporting.verdicts import Claim

COLLAPSE = "collapse"  # the paper reports collapse where it gives no number

# What each removal sets; "T'" variants act on the second view pipeline only.
_NO_FLIP = {"flip_prob": 0.0}
_NO_BLUR = {"blur_prob": (0.0, 0.0)}
_NO_JITTER = {"jitter_prob": 0.0}
_NO_GRAYSCALE = {"grayscale_prob": 0.0}
_NO_SOLARIZE = {"solarize_prob": (0.0, 0.0)}
_NO_COLOUR = {**_NO_JITTER, **_NO_GRAYSCALE}

# name -> (row label, overrides, paper BYOL, paper SimCLR); Section 5 (Table 17), linear top-1 %.
AUGMENTATIONS: dict[str, tuple[str, dict[str, Any], float | None, float | None]] = {
    "baseline": ("all augmentations", {}, 72.5, 67.9),
    "no-flip": ("remove flip", _NO_FLIP, 71.9, 67.3),
    "no-blur": ("remove blur", _NO_BLUR, 71.2, 65.2),
    "no-colour": ("remove colour (jitter and grayscale)", _NO_COLOUR, 63.4, 45.7),
    "no-jitter": ("remove colour jitter", _NO_JITTER, 71.8, 63.7),
    "no-grayscale": ("remove grayscale", _NO_GRAYSCALE, 70.3, 61.9),
    "crop-only": (
        "crop only",
        {**_NO_FLIP, **_NO_COLOUR, **_NO_BLUR, **_NO_SOLARIZE},
        59.4,
        40.3,
    ),
    "crop-flip": ("crop and flip only", {**_NO_COLOUR, **_NO_BLUR, **_NO_SOLARIZE}, 60.1, 40.2),
    "crop-colour": ("crop and colour only", {**_NO_FLIP, **_NO_BLUR, **_NO_SOLARIZE}, 70.7, 64.2),
    "crop-blur": ("crop and blur only", {**_NO_FLIP, **_NO_COLOUR, **_NO_SOLARIZE}, 61.1, 41.7),
    "no-blur-t2": ("remove blur from T'", {}, None, None),  # overrides depend on the config
    "no-solarize-t2": ("remove solarisation from T'", {}, None, None),
}


def augmentation_overrides(name: str, config: Config) -> dict[str, Any]:
    """The Config fields that remove augmentation(s) ``name`` from ``config``'s views."""
    if name not in AUGMENTATIONS:
        raise ConfigError(
            f"unknown augmentation variant {name!r}; choose one of {', '.join(AUGMENTATIONS)}."
        )
    if name == "no-blur-t2":  # T keeps its blur probability
        return {"blur_prob": (config.views[0].blur_prob, 0.0)}
    if name == "no-solarize-t2":
        return {"solarize_prob": (config.views[0].solarize_prob, 0.0)}
    return dict(AUGMENTATIONS[name][1])


# The "method" of a row that scores the random initial weights of BYOL's run of the same seed:
# training from scratch (fine-tuning), or the encoder that learned nothing (transfer).
RANDOM_INIT = "random-init"
# How a row's encoder is scored: kNN and linear on frozen features of the pretraining dataset,
# fine-tuned on a fraction of its labels, or kNN and linear on frozen features of another dataset.
FROZEN, FINETUNE, TRANSFER = "frozen", "finetune", "transfer"


@dataclass(frozen=True)
class Variant:
    """One run of an ablation: a method and the config fields it changes, and how it is scored."""

    name: str  # the x position in the table and plot, shared by the methods compared there
    label: str
    method: str  # a pretraining method, or RANDOM_INIT
    overrides: dict[str, Any] = field(default_factory=dict)
    paper: float | str | None = None  # arXiv:2006.07733 (ImageNet top-1 %)
    reference: str = "baseline"  # the ``name`` that the delta column compares against
    protocol: str = FROZEN
    fraction: float = 1.0  # FINETUNE: the share of the training labels

    @property
    def key(self) -> str:
        """The run folder's name."""
        return f"{self.method}-{self.name}"

    @property
    def trains(self) -> str:
        """The method of the pretraining run (a random-init row shares BYOL's run)."""
        return "byol" if self.method == RANDOM_INIT else self.method


_STOP_GRADIENT = {"tau_base": 0.0, "tau_schedule": "constant"}  # target = online, every step

BATCH_SIZES = {  # batch -> (paper BYOL, paper SimCLR)
    256: (71.8, 64.3),
    128: (69.6, 63.6),
    64: (59.7, 59.2),
    32: (None, None),
}


# fraction -> (paper BYOL, paper SimCLR, paper supervised): ImageNet top-1 %, Table 2.
LABEL_FRACTIONS = {0.01: (53.2, 48.3, 25.4), 0.1: (68.8, 65.6, 56.4)}
# Linear transfer to CIFAR-10, Table 3: BYOL, SimCLR (repro); the paper has no random-init row.
TRANSFER_PAPER = {"byol": 91.3, "simclr": 90.5}


def ablation_variants(ablation: str, config: Config) -> list[Variant]:
    """The runs of ``ablation`` (see ABLATIONS) on ``config``. A random-init row comes after
    BYOL's, whose run it shares."""
    if ablation == "target":
        taus = [
            ("baseline", "the preset's tau_base (cosine to 1)", {}, None),
            ("tau-0", "tau = 0 (stop-gradient of online)", _STOP_GRADIENT, 0.3),
            ("tau-0.9", "tau_base = 0.9", {"tau_base": 0.9}, 68.4),
            ("tau-0.99", "tau_base = 0.99", {"tau_base": 0.99}, 72.5),
            ("tau-0.999", "tau_base = 0.999", {"tau_base": 0.999}, 69.8),
            ("tau-1", "tau = 1 (constant random target)", {"tau_base": 1.0}, 18.8),
        ]
        return [Variant(n, lbl, "byol", o, p, "baseline") for n, lbl, o, p in taus]
    if ablation == "tau-zero":
        return [Variant(n, lbl, "byol", o) for n, lbl, o in _tau_zero_rows(config)]
    if ablation == "predictor":
        rows = [
            ("baseline", "predictor + moving-average target (BYOL)", {}, 72.5),
            ("no-predictor", "no predictor", {"use_predictor": False}, 0.2),
            ("no-target", "predictor, no target (tau = 0)", _STOP_GRADIENT, 0.3),
        ]
        return [Variant(n, lbl, "byol", o, p) for n, lbl, o, p in rows]
    if ablation == "batch-size":
        return [
            Variant(f"batch-{b}", f"batch {b}", method, {"batch_size": b}, paper, "batch-256")
            for b, papers in BATCH_SIZES.items()
            for method, paper in zip(("byol", "simclr", "barlow"), (*papers, None), strict=True)
        ]
    if ablation == "augmentations":
        variants = []
        for name, (label, _, byol, simclr) in AUGMENTATIONS.items():
            overrides = augmentation_overrides(name, config)
            variants.append(Variant(name, label, "byol", overrides, byol))
            if not name.endswith("-t2"):  # T vs T' is BYOL's asymmetry: BYOL only
                variants.append(Variant(name, label, "simclr", overrides, simclr))
        return variants
    if ablation == "labels":
        variants = []
        for fraction, papers in LABEL_FRACTIONS.items():
            name = f"{fraction * 100:g}pct-labels"
            label = f"fine-tuned on {fraction:.0%} of the labels"
            for method, paper in zip(("byol", "simclr", RANDOM_INIT), papers, strict=True):
                variants.append(Variant(name, label, method, {}, paper, name, FINETUNE, fraction))
        return variants
    if ablation == "transfer":
        return [
            Variant("transfer", "frozen features of another dataset", method, {},
                    TRANSFER_PAPER.get(method), "transfer", TRANSFER)
            for method in ("byol", "simclr", "barlow", RANDOM_INIT)
        ]  # fmt: skip
    raise ConfigError(f"unknown ablation {ablation!r}; choose one of {', '.join(ABLATIONS)}.")


def _tau_zero_rows(config: Config) -> list[tuple[str, str, dict[str, Any]]]:
    """Why tau = 0 does or does not collapse: the stop-gradient target with each of the
    predictor's departures from the paper undone (its lr scale, its warm-up, the schedule sized
    beyond the run), and with all three undone."""
    paper = {"predictor_lr_scale": 1.0, "predictor_warmup_steps": 0}
    paper["schedule_epochs"] = config.schedule.epochs
    return [
        ("baseline", "moving-average target (the preset)", {}),
        ("tau-0", "tau = 0, the preset's predictor", _STOP_GRADIENT),
        ("tau-0-lr1", "tau = 0, predictor lr 1x", {**_STOP_GRADIENT, "predictor_lr_scale": 1.0}),
        ("tau-0-nowarm", "tau = 0, no predictor warm-up",
         {**_STOP_GRADIENT, "predictor_warmup_steps": 0}),
        ("tau-0-schedule", "tau = 0, schedule = run length",
         {**_STOP_GRADIENT, "schedule_epochs": config.schedule.epochs}),
        ("tau-0-paper", "tau = 0, all three as the paper", {**_STOP_GRADIENT, **paper}),
    ]  # fmt: skip


ABLATIONS = (
    "batch-size", "augmentations", "target", "predictor", "tau-zero", "labels", "transfer"
)  # fmt: skip

# The paper's claims each table tests (reporting/verdicts.py judges them).
CLAIMS: dict[str, list[Claim]] = {
    "target": [
        Claim("without the slow target (tau = 0) BYOL collapses", "collapses", "tau-0",
              paper="0.3% (Table 5a)"),
        Claim("a constant random target (tau = 1) learns worse features than the EMA",
              "worse", "tau-1", "baseline", paper="18.8 vs 72.5 (Table 5a)"),
        Claim("tau_base 0.9 is worse than 0.99", "worse", "tau-0.9", "tau-0.99",
              paper="68.4 vs 72.5 (Table 5a)"),
        Claim("tau_base 0.999 is worse than 0.99", "worse", "tau-0.999", "tau-0.99",
              paper="69.8 vs 72.5 (Table 5a)"),
    ],
    "predictor": [
        Claim("without the predictor BYOL collapses", "collapses", "no-predictor",
              paper="0.2% (Table 5b)"),
        Claim("without the target network (tau = 0) BYOL collapses", "collapses", "no-target",
              paper="0.3% (Table 5a/5b)"),
    ],
    "tau-zero": [
        Claim("with the paper's predictor settings, tau = 0 collapses", "collapses",
              "tau-0-paper", paper="0.3% (Table 5a)"),
        Claim("tau = 0 learns worse features than the moving average", "worse", "tau-0",
              "baseline", paper="0.3 vs 72.5 (Table 5a)"),
    ],
    "batch-size": [
        Claim("as the batch shrinks (here 256 -> 32), BYOL loses less than SimCLR", "drops_less",
              "batch-32", "batch-256", other="simclr",
              paper="4096 -> 256: -0.7 vs -3.6; 256 -> 64: -12.1 vs -5.1 (Figure 3a)"),
    ],
    "augmentations": [
        Claim("removing colour hurts SimCLR more than BYOL", "drops_less", "no-colour",
              "baseline", other="simclr", paper="-9.1 vs -22.2 (Figure 3b)"),
        Claim("crops alone hurt SimCLR more than BYOL", "drops_less", "crop-only", "baseline",
              other="simclr", paper="-13.1 vs -27.6 (Figure 3b)"),
    ],
    "labels": [
        Claim("with 1% of the labels, fine-tuning BYOL's encoder beats training from scratch",
              "worse", "1pct-labels", "1pct-labels", method=RANDOM_INIT, other="byol",
              paper="53.2 vs 25.4 (Table 2)", metric="finetune_top1"),
        Claim("with 10% of the labels, fine-tuning BYOL's encoder beats training from scratch",
              "worse", "10pct-labels", "10pct-labels", method=RANDOM_INIT, other="byol",
              paper="68.8 vs 56.4 (Table 2)", metric="finetune_top1"),
    ],
    "transfer": [
        Claim("BYOL's frozen features transfer to another dataset better than random ones",
              "worse", "transfer", "transfer", method=RANDOM_INIT, other="byol",
              paper="91.3 linear on CIFAR-10 (Table 3)"),
        Claim("BYOL's frozen features transfer better than SimCLR's", "worse", "transfer",
              "transfer", method="simclr", other="byol", paper="91.3 vs 90.5 (Table 3)"),
    ],
}  # fmt: skip
