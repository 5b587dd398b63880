"""The methods ``byol pretrain --method`` trains: BYOL and the baselines, one file each.

``METHODS`` is the registry: a method named ``name`` there lives in ``byol/methods/<name>.py``,
whose ``METHOD`` class (a ``Method``, see ``base.py``) declares its own settings
(``METHOD.Settings``, a ``MethodSettings``: the ``method.*`` keys of the run's config) and is
built with ``METHOD.from_settings(settings, encoder, feature_dim, seed)``. Adding a method is one
new file plus its line in ``METHODS``; the training loop never names a method.
"""

from __future__ import annotations

import importlib

from torch import nn

from byol.errors import ConfigError
from byol.methods.base import Method, MethodOutput, MethodSettings, ema_update

# name -> the name tables and plots give it.
METHODS = {
    "byol": "BYOL",
    "simclr": "SimCLR",
    "barlow": "Barlow Twins",
    "moco": "MoCo v2",
    "vicreg": "VICReg",
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not one of {', '.join(METHODS)}.")
    return importlib.import_module(f"byol.methods.{name}").METHOD


def settings_class(name: str) -> type[MethodSettings]:
    """The settings class of method ``name``: what ``--set method=NAME`` starts from."""
    return method_class(name).Settings


def build_method(
    settings: MethodSettings, encoder: nn.Module, feature_dim: int, seed: int = 0
) -> Method:
    """The method ``settings.name`` around ``encoder`` (``feature_dim``-d representations)."""
    return method_class(settings.name).from_settings(settings, encoder, feature_dim, seed)


__all__ = [
    "METHODS",
    "Method",
    "MethodOutput",
    "MethodSettings",
    "build_method",
    "ema_update",
    "method_class",
    "settings_class",
]
