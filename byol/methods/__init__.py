"""The methods ``byol pretrain --method`` trains: BYOL and the baselines, one file each.

``config.METHODS`` is the registry: a method named ``name`` there lives in
``byol/methods/<name>.py``, whose ``METHOD`` class (a ``Method``, see ``base.py``) is built with
``METHOD.from_config(config, encoder, feature_dim)``. Adding a method is one new file plus its
line in ``METHODS``; the training loop never names a method.
"""

from __future__ import annotations

import importlib

from torch import nn

from byol.config import METHODS, Config
from byol.errors import ConfigError
from byol.methods.base import Method, MethodOutput, ema_update


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not one of {', '.join(METHODS)}.")
    return importlib.import_module(f"byol.methods.{name}").METHOD


def build_method(config: Config, encoder: nn.Module, feature_dim: int) -> Method:
    """``config.method`` around ``encoder`` (which outputs ``feature_dim``-d representations)."""
    return method_class(config.method).from_config(config, encoder, feature_dim)


__all__ = ["Method", "MethodOutput", "build_method", "ema_update", "method_class"]
