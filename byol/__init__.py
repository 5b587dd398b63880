"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020, arXiv:2006.07733) for PyTorch.

The package follows the path a batch takes, each folder importing only the ones before it:

    config.py, presets.py, settings.py   what a run is (Config: the paper's numbers), --set parsing
    runtime.py, backbones.py (torchvision, timm), checkpoint.py, run_folder.py, loggers.py,
    distributed.py, errors.py   foundations
    data/          datasets as uint8 images + labels; label subsets
    views/         T and T' (per image, batched on the device) from one ViewSpec
    methods/       BYOL and the baselines, heads, losses, the one EMA (base.py)
    evaluation/    features, kNN, linear probes, fine-tuning, the `byol eval` protocols
    training/      the pretraining loop, epochs, step, LARS, schedules, kNN monitor, signals
    reporting/     HTML report, export (embeddings, ONNX), byol embed, ablation tables
    experiments/   `byol ablate`: the paper's ablations as runs
    cli/           the `byol` command
"""

from byol.backbones import build_backbone
from byol.checkpoint import load_encoder, save_encoder
from byol.config import Config
from byol.methods import Method, MethodOutput, build_method, ema_update
from byol.methods.barlow import BarlowTwins
from byol.methods.byol import BYOL
from byol.methods.losses import barlow_twins_loss, byol_loss, collapse_metric, info_nce, nt_xent
from byol.methods.moco import MoCo
from byol.methods.simclr import SimCLR
from byol.presets import PRESETS, preset
from byol.training.optim import LARS, build_optimizer, parameter_groups
from byol.training.schedules import learning_rate, scaled_learning_rate, target_tau
from byol.views.batched import BatchTwoViews, BatchViewTransform, batch_paper_views
from byol.views.per_image import EvalTransform, TwoViews, ViewTransform, paper_views
from byol.views.spec import ViewSpec

BYOLOutput = MethodOutput  # the name the package gave it first

__version__ = "0.1.0"

__all__ = [
    "BYOL",
    "BarlowTwins",
    "MoCo",
    "SimCLR",
    "barlow_twins_loss",
    "info_nce",
    "nt_xent",
    "Method",
    "MethodOutput",
    "BYOLOutput",
    "build_method",
    "ema_update",
    "BatchTwoViews",
    "BatchViewTransform",
    "Config",
    "EvalTransform",
    "LARS",
    "PRESETS",
    "TwoViews",
    "ViewSpec",
    "ViewTransform",
    "batch_paper_views",
    "build_backbone",
    "build_optimizer",
    "byol_loss",
    "collapse_metric",
    "learning_rate",
    "load_encoder",
    "paper_views",
    "parameter_groups",
    "preset",
    "save_encoder",
    "scaled_learning_rate",
    "target_tau",
]
