"""The two views of an image, T and T' (arXiv:2006.07733, Table 6), from one ``ViewSpec`` each.

A view pipeline is a list of augmentation objects (``pipeline``: crop, flip, colour jitter,
grayscale, blur, solarisation). Each draws its per-image parameters from its own random stream and
applies them to one image or to a batch (``augmentation.Augmentation``), so a new augmentation is
one class plus its ``ViewSpec`` field(s), and leaves the others' draws as they were. Three drivers
run the same list: ``per_image`` one image at a time (DataLoader workers, any dataset),
``batched`` a whole batch at once on the training device (in-memory datasets), ``cropped`` the
crop in workers and the rest batched (folders read from files). ``EvalTransform`` is the
evaluation's resize and centre crop."""

from byol.views.augmentation import Augmentation, Draws, RandomApply
from byol.views.batched import BatchTwoViews, BatchViewTransform, batch_paper_views
from byol.views.per_image import EvalTransform, TwoViews, ViewTransform, paper_views
from byol.views.pipeline import pipeline
from byol.views.spec import ViewSpec, paper_view_specs

__all__ = [
    "Augmentation",
    "BatchTwoViews",
    "BatchViewTransform",
    "Draws",
    "EvalTransform",
    "RandomApply",
    "TwoViews",
    "ViewSpec",
    "ViewTransform",
    "batch_paper_views",
    "paper_views",
    "paper_view_specs",
    "pipeline",
]
