"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020, arXiv:2006.07733) for PyTorch.

The package follows the path a batch takes, each folder importing only the ones before it:

    config.py, presets.py, settings.py   what a run is (Config: the paper's numbers), --set parsing
    runtime.py, backbones.py (torchvision, timm), checkpoint.py, run_folder.py, run_lock.py,
    loggers.py, distributed.py, errors.py   foundations
    data/          datasets as uint8 images + labels; label subsets
    views/         T and T' (per image, batched on the device) from one ViewSpec
    methods/       BYOL and the baselines, heads, losses, the one EMA (base.py)
    evaluation/    features, kNN, linear probes, fine-tuning, the `byol eval` protocols
    training/      the pretraining loop, epochs, step, LARS, schedules, kNN monitor, signals
    reporting/     HTML report, export (embeddings, ONNX), byol embed, ablation tables
    experiments/   `byol ablate`: the paper's ablations as runs
    cli/           the `byol` command
"""

import importlib
from typing import Any

# Public names -> the module that defines them, imported on first use (PEP 562): `import byol`
# (and so the `byol` command's start, where a Ctrl-C must still end in one line) does not import
# torch until a name is used.
_EXPORTS = {
    "build_backbone": "byol.backbones",
    "load_encoder": "byol.checkpoint",
    "save_encoder": "byol.checkpoint",
    "Config": "byol.config",
    "Method": "byol.methods",
    "MethodOutput": "byol.methods",
    "build_method": "byol.methods",
    "ema_update": "byol.methods",
    "BarlowTwins": "byol.methods.barlow",
    "BYOL": "byol.methods.byol",
    "barlow_twins_loss": "byol.methods.losses",
    "byol_loss": "byol.methods.losses",
    "collapse_metric": "byol.methods.losses",
    "info_nce": "byol.methods.losses",
    "nt_xent": "byol.methods.losses",
    "MoCo": "byol.methods.moco",
    "SimCLR": "byol.methods.simclr",
    "PRESETS": "byol.presets",
    "preset": "byol.presets",
    "LARS": "byol.training.optim",
    "build_optimizer": "byol.training.optim",
    "parameter_groups": "byol.training.optim",
    "learning_rate": "byol.training.schedules",
    "scaled_learning_rate": "byol.training.schedules",
    "target_tau": "byol.training.schedules",
    "BatchTwoViews": "byol.views.batched",
    "BatchViewTransform": "byol.views.batched",
    "batch_paper_views": "byol.views.batched",
    "EvalTransform": "byol.views.per_image",
    "TwoViews": "byol.views.per_image",
    "ViewTransform": "byol.views.per_image",
    "paper_views": "byol.views.per_image",
    "ViewSpec": "byol.views.spec",
    "paper_view_specs": "byol.views.spec",
    "Augmentation": "byol.views",
    "pipeline": "byol.views",
    "VICReg": "byol.methods.vicreg",
    "apply_overrides": "byol.config",
    "configure": "byol.presets",
}
_ALIASES = {"BYOLOutput": "MethodOutput"}  # the name the package gave it first


def __getattr__(name: str) -> Any:
    target = _ALIASES.get(name, name)
    if target not in _EXPORTS:
        raise AttributeError(f"module 'byol' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[target]), target)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_ALIASES])


__version__ = "0.1.0"

__all__ = [*_EXPORTS, *_ALIASES]
