"""The run configuration: the tree of settings (``tree.py``) and its keys (``keys.py``)."""

from byol.config.keys import (
    apply_changes,
    apply_overrides,
    config_keys,
    departures,
    from_dict,
    identity,
    is_config_key,
    resolve_key,
    resume_changes,
)
from byol.config.tree import (
    Config,
    DataSettings,
    ModelSettings,
    MonitorSettings,
    OptimSettings,
    RuntimeSettings,
    ScheduleSettings,
)
from byol.methods import METHODS

__all__ = [
    "METHODS",
    "Config",
    "DataSettings",
    "ModelSettings",
    "MonitorSettings",
    "OptimSettings",
    "RuntimeSettings",
    "ScheduleSettings",
    "apply_changes",
    "apply_overrides",
    "config_keys",
    "departures",
    "from_dict",
    "identity",
    "is_config_key",
    "resolve_key",
    "resume_changes",
]
