"""The run config's keys: dotted paths and short names, ``key=value`` overrides, saved configs
(today's nested ones and the flat ones of earlier releases), and what makes two runs the same
experiment, all read off the tree's field metadata (``byol/settings.py``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from byol import settings
from byol.config.tree import Config
from byol.errors import ConfigError
from byol.methods import METHODS, settings_class

VIEWS = "views"


def _leaves_named(config: Config, name: str) -> list[str]:
    return [leaf.path for leaf in settings.leaves(config) if leaf.path.rsplit(".", 1)[-1] == name]


def _other_method_owning(config: Config, key: str) -> str | None:
    """The method (other than ``config``'s) whose settings have the old flat name ``key``."""
    for name in METHODS:
        owner = settings_class(name)
        if name != config.method.name and key in owner.OLD_NAMES:
            return name
    return None


def resolve_key(config: Config, key: str) -> list[str]:
    """The dotted paths that ``key`` names in ``config``: itself when it is a path, else the one
    setting of that name, or both views' when T and T' share it. An unknown or ambiguous key is
    a ConfigError."""
    key = settings.normalise_key(key)
    try:
        settings.find(config, key)
        return [key]
    except KeyError:
        pass
    if key in config.method.OLD_NAMES:
        return [f"method.{config.method.OLD_NAMES[key]}"]
    paths = _leaves_named(config, key)
    if len(paths) == 1 or (paths and all(p.startswith(f"{VIEWS}.") for p in paths)):
        return paths
    if paths:
        raise ConfigError(f"{key!r} names several settings ({', '.join(paths)}); use one path.")
    owner = _other_method_owning(config, key)
    if owner:
        raise ConfigError(
            f"{key} is a setting of method={owner}, and this run's method is "
            f"{config.method.name}; set method={owner} first."
        )
    raise settings.unknown_key(key, config_keys(config))


def config_keys(config: Config) -> list[str]:
    """Every key ``--set`` accepts for ``config``: each path and each unambiguous short name."""
    paths = [leaf.path for leaf in settings.leaves(config)]
    short = {path.rsplit(".", 1)[-1] for path in paths}
    usable = {name for name in short if _short_name_usable(config, name)}
    usable |= set(config.method.OLD_NAMES)
    return ["method", *paths, *sorted(usable - set(paths))]


def is_config_key(key: str) -> bool:
    """Whether ``key`` names a run setting for some method (``--set`` may mix run settings with
    evaluation and ablation settings)."""
    key = settings.normalise_key(key)
    return any(key in config_keys(Config(method=settings_class(m)())) for m in METHODS)


def _short_name_usable(config: Config, name: str) -> bool:
    paths = _leaves_named(config, name)
    return len(paths) == 1 or all(p.startswith(f"{VIEWS}.") for p in paths)


def _set(config: Config, key: str, text: str) -> Config:
    """One ``key=value``. A name both views share takes one value for both, or a pair: T's
    and T''s (``blur_prob=1,0.1``)."""
    paths = resolve_key(config, key)
    if len(paths) == 2 and all(p.startswith(f"{VIEWS}.") for p in paths):
        current, f = settings.find(config, paths[0])
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        if not isinstance(current, tuple) and len(parts) == 2:
            for path, part in zip(paths, parts, strict=True):
                config = settings.set_text(config, path, part)
            return config
    for path in paths:
        config = settings.set_text(config, path, text)
    return config


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """``config`` with the ``key=value`` strings applied in order."""
    for item in overrides:
        key, text = settings.split_item(item)
        config = _set(config, key, text)
    return config


def apply_changes(config: Config, changes: dict[str, Any]) -> Config:
    """``config`` with ``{key: value}`` applied in order, keys as for ``apply_overrides`` and
    values already typed (a pair for a name both views share is split the same way)."""
    for key, value in changes.items():
        if settings.normalise_key(key) == "method":
            config = dataclasses.replace(config, method=settings_class(str(value))())
            continue
        paths = resolve_key(config, key)
        current, _ = settings.find(config, paths[0])
        split = len(paths) == 2 and not isinstance(current, tuple) and isinstance(value, tuple)
        for i, path in enumerate(paths):
            default, _ = settings.find(config, path)
            item = value[i] if split else value
            saved = list(item) if isinstance(item, tuple) else item  # as JSON holds it
            config = settings.replace(config, path, settings.typed_value(path, saved, default))
    return config


def from_dict(values: dict[str, Any]) -> Config:
    """A Config from a saved dict: the nested form ``Config.to_dict`` writes, or the flat form of
    earlier releases (whose run folders then resume). Unknown keys and values of the wrong type
    are errors."""
    if "data" in values or "dataset" not in values:
        return settings.from_dict(Config, values)
    return _from_flat(values)


# Flat keys of earlier releases that are not a short name of today's tree.
_RENAMED = {"views": "runtime.view_path"}
# Settings that moved into a method's own section: other methods' copies were never read.
_HEADS = ("projector_hidden_dim", "projection_dim", "predictor_hidden_dim")


def _from_flat(values: dict[str, Any]) -> Config:
    method = values.get("method", "byol")
    if not isinstance(method, str):
        raise ConfigError(f"method={method!r} is not a method name.")
    config = Config(method=settings_class(method)())
    method_fields = {f.name for f in dataclasses.fields(config.method)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key == "method" or _other_method_owning(config, key):
            continue
        if key in _HEADS and key not in method_fields:
            continue
        changes[_RENAMED.get(key, key)] = tuple(value) if isinstance(value, list) else value
    return apply_changes(config, changes)


def identity(config: Config) -> dict[str, Any]:
    """What makes two runs the same experiment: every setting that changes what a run computes
    (its chosen method's included), none of how it executes or what the monitor scores."""
    return {leaf.path: leaf.value for leaf in settings.leaves(config) if leaf.flag("identity")}


def departures(config: Config) -> list[str]:
    """``path=value`` for each identity setting that differs from the paper's defaults (those of
    ``config``'s method for its own section)."""
    paper = identity(Config(method=settings_class(config.method.name)()))
    return [f"{path}={value}" for path, value in identity(config).items() if paper[path] != value]


def resume_changes(saved: Config, config: Config, diverged: bool = False) -> list[str]:
    """``path: old -> new`` for each setting that differs between ``saved`` and ``config`` and
    may not change on resume (``resumable``; ``recovery`` too when the run had diverged)."""
    if saved.method.name != config.method.name:
        return [f"method: {saved.method.name!r} -> {config.method.name!r}"]
    old = settings.flatten(saved)
    changed = []
    for leaf in settings.leaves(config):
        free = leaf.flag("resumable") or (diverged and leaf.flag("recovery"))
        if not free and old[leaf.path] != leaf.value:
            changed.append(f"{leaf.path}: {old[leaf.path]!r} -> {leaf.value!r}")
    return changed
