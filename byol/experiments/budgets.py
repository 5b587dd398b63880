"""What an ablation run costs on each preset: the schedule (``BUDGETS``), and how its encoders are
scored (``EVAL_DEFAULTS``, ``EVAL_TRAIN_IMAGES``). ``byol ablate --set`` changes any of it."""

from __future__ import annotations

from typing import Any

# A short schedule per preset, so one ablation (4-20 runs) is affordable; --set changes any of it.
BUDGETS: dict[str, dict[str, Any]] = {
    # ~15-25 minutes per ablation on 1 CPU thread (measured, docs/ablations.md): 20k images once
    # at 16 px (2.3x faster than 28 px to train, 4x to evaluate, for ~0.3 points of kNN, README).
    "fashion-mnist": dict(
        image_size=16,
        train_subset=20000,
        epochs=1,
        num_workers=0,
        # The recipe docs/ablations.md measured, pinned so that tuning the main job's preset (its
        # crops, heads, tau_base and the options outside the paper) does not move these tables.
        crop_scale=(0.5, 1.0),
        projector_hidden_dim=1024,
        predictor_hidden_dim=1024,
        tau_base=0.99,
        predictor_warmup_steps=0,
        predictor_lr_scale=1.0,
        schedule_epochs=0,
    ),
    "cifar10": dict(epochs=100),
    "stl10": dict(epochs=50),
    "imagenet-paper": dict(epochs=300, tau_base=0.99),  # the paper's ablation schedule
}
# Ablations with many runs get a shorter schedule: (preset, ablation) -> overrides on the budget.
ABLATION_BUDGETS: dict[tuple[str, str], dict[str, Any]] = {
    ("fashion-mnist", "augmentations"): dict(train_subset=8000),  # 17 distinct runs
}
# Ablation runs skip the kNN scores of a single run: the evaluation below scores every encoder.
RUN_DEFAULTS = dict(knn_every_epochs=0, knn_final=False, knn_references=False)
# kNN k=200 only; 10 epochs of the linear probe (SGD on standardised features).
EVAL_DEFAULTS = ["knn_ks=200", "linear_epochs=10"]
# kNN bank and linear-probe training set: this many labelled training images (0 = all), so that
# scoring an encoder costs seconds, not minutes; --set eval_train_images=N changes it.
EVAL_TRAIN_IMAGES = {"fashion-mnist": 10000}
