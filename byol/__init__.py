"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020) for PyTorch."""

from byol.augment import EvalTransform, TwoViews, ViewSpec, ViewTransform, paper_views
from byol.backbones import build_backbone
from byol.barlow import BarlowTwins
from byol.batch_views import BatchTwoViews, BatchViewTransform, batch_paper_views
from byol.byol import BYOL, BYOLOutput
from byol.checkpoint import load_encoder, save_encoder
from byol.config import PRESETS, Config, preset
from byol.losses import barlow_twins_loss, byol_loss, collapse_metric, info_nce, nt_xent
from byol.moco import MoCo
from byol.optim import LARS, build_optimizer, parameter_groups
from byol.schedules import learning_rate, scaled_learning_rate, target_tau
from byol.simclr import SimCLR

__version__ = "0.1.0"

__all__ = [
    "BYOL",
    "BarlowTwins",
    "MoCo",
    "SimCLR",
    "barlow_twins_loss",
    "info_nce",
    "nt_xent",
    "BYOLOutput",
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
