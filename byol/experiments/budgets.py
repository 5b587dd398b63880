"""What an ablation run costs on each preset: the schedule (``BUDGETS``), and how its encoders are
scored (``EVAL_DEFAULTS``, ``EVAL_TRAIN_IMAGES``). ``byol ablate --set`` changes any of it."""

from __future__ import annotations

from typing import Any

# A short schedule per preset, so one ablation (4-20 runs) is affordable; --set changes any of it.
BUDGETS: dict[str, dict[str, Any]] = {
    # The main job's recipe, unchanged (936 steps at 28 px, about 14 minutes per run on one
    # thread): the smallest measured budget at which BYOL clearly learns (kNN 83.5 against 78.1
    # for its random init on the 60k bank; shorter recipes sat below random init). What it
    # changes from the paper is in byol/presets.py and docs/cpu-preset.md.
    "fashion-mnist": {},
    "cifar10": dict(epochs=100),
    "stl10": dict(epochs=50),
    "imagenet-paper": dict(epochs=300, tau_base=0.99),  # the paper's ablation schedule
}
# Ablations with many runs may get a shorter schedule: (preset, ablation) -> overrides.
ABLATION_BUDGETS: dict[tuple[str, str], dict[str, Any]] = {}
# Ablation runs skip the kNN scores of a single run: the evaluation below scores every encoder.
RUN_DEFAULTS = dict(knn_every_epochs=0, knn_final=False, knn_references=False)
# kNN k=200 only; 10 epochs of the linear probe (SGD on standardised features).
EVAL_DEFAULTS = ["knn_ks=200", "linear_epochs=10"]
# kNN bank and linear-probe training set: this many labelled training images (0 = all), so that
# scoring an encoder costs seconds, not minutes; --set eval_train_images=N changes it.
EVAL_TRAIN_IMAGES = {"fashion-mnist": 10000}
