"""The two views of an image, T and T' (arXiv:2006.07733, Table 6), from one ``ViewSpec`` each:
``per_image`` makes them one image at a time (DataLoader workers, any dataset), ``batched`` a
whole batch at once on the training device (in-memory datasets); ``EvalTransform`` is the
evaluation's resize and centre crop."""

from byol.views.batched import BatchTwoViews, BatchViewTransform, batch_paper_views
from byol.views.per_image import EvalTransform, TwoViews, ViewTransform, paper_views
from byol.views.spec import ViewSpec, paper_view_specs

__all__ = [
    "BatchTwoViews",
    "BatchViewTransform",
    "EvalTransform",
    "TwoViews",
    "ViewSpec",
    "ViewTransform",
    "batch_paper_views",
    "paper_views",
    "paper_view_specs",
]
