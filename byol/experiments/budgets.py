"""What an ablation run costs on each preset: the schedule (``BUDGETS``), and how its encoders are
scored (``EVAL_DEFAULTS``, ``EVAL_TRAIN_IMAGES``). ``byol ablate --set`` changes any of it."""

from __future__ import annotations

from typing import Any

# The main job's recipe on the 1/8-width ResNet-18, for 2 of its 4 epochs over half its images
# (234 steps of batch 128; the lr and tau schedules sized for 4 epochs, as the recipe sizes them
# for twice its run): a few minutes a run on one thread of a 2-core CPU, so that 3-seed tables fit
# in an hour each. The full-width recipe (kNN 83.5 against 78.1 for its random init) costs about
# 55 minutes a run on a 2-core CPU without native bf16.
_CPU_BUDGET = dict(backbone="resnet18-narrow", train_subset=15000, epochs=2, schedule_epochs=4)

# A short schedule per preset, so one ablation (4-20 runs) is affordable; --set changes any of it.
BUDGETS: dict[str, dict[str, Any]] = {
    "fashion-mnist": _CPU_BUDGET,
    "cifar10-cpu": _CPU_BUDGET,  # the same budget on CIFAR-10 (--set dataset=cifar10-jpeg)
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
EVAL_TRAIN_IMAGES = {"fashion-mnist": 10000, "cifar10-cpu": 10000}
# `byol ablate transfer`: the second dataset each preset's encoders are scored on (frozen
# features, the same kNN and linear protocols); --set transfer_dataset=NAME changes it.
TRANSFER_DATASETS = {"fashion-mnist": "cifar10", "cifar10-cpu": "fashion-mnist",
                     "cifar10": "stl10", "stl10": "cifar10"}  # fmt: skip
