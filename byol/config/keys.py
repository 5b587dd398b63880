"""The run config's keys: dotted paths and short names, ``key=value`` overrides, saved configs
(today's nested ones and the flat ones of earlier releases), and what makes two runs the same
experiment, all read off the tree's field metadata (``byol/settings.py``)."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from byol import settings
from byol.config.tree import Config
from byol.errors import ConfigError
from byol.methods import METHODS, settings_class

VIEWS = "views"


def _leaves_named(config: Config, name: str) -> list[str]:
    return [leaf.path for leaf in settings.leaves(config) if leaf.path.rsplit(".", 1)[-1] == name]


def _other_method_owning(config: Config, key: str) -> str | None:
    """The method (other than ``config``'s) that has a setting named ``key`` (or
    ``method.key``, or an old flat name of one) when ``config``'s method has none."""
    name = key.removeprefix("method.")
    if name in {f.name for f in dataclasses.fields(config.method)}:
        return None
    for method in METHODS:
        owner = settings_class(method)
        if method != config.method.name and (
            key in owner.OLD_NAMES or name in {f.name for f in dataclasses.fields(owner)}
        ):
            return method
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
    owner = _other_method_owning(config, key)
    if owner:
        raise ConfigError(
            f"{key} is a setting of method={owner}, and this run's method is "
            f"{config.method.name}; set method={owner} first."
        )
    paths = _leaves_named(config, key)
    if len(paths) == 1 or (paths and all(p.startswith(f"{VIEWS}.") for p in paths)):
        return paths
    if paths:
        raise ConfigError(f"{key!r} names several settings ({', '.join(paths)}); use one path.")
    keys = config_keys(config)
    short = [k for k in keys if "." not in k]
    close = difflib.get_close_matches(key, keys, n=1) or difflib.get_close_matches(
        key, [path.rsplit(".", 1)[-1] for path in keys], n=1
    )
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"unknown config key {key!r}.{hint} Valid keys: {', '.join(short)}, or a dotted path "
        "(`byol config` prints every one)."
    )


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
        current, _ = settings.find(config, paths[0])
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


def apply_changes(config: Config, changes: dict[str, Any], other_methods: bool = False) -> Config:
    """``config`` with ``{key: value}`` applied, keys as for ``apply_overrides`` and values
    already typed (a pair for a name both views share is split the same way). A change of
    ``method`` comes first. With ``other_methods``, a setting that only other methods have is
    left out, as a run of this method never reads it (so one set of changes fits every
    method); else it is an error."""
    changes = dict(changes)
    if "method" in changes:
        config = dataclasses.replace(config, method=settings_class(str(changes.pop("method")))())
    for key, value in _switches_as_words(changes).items():
        if other_methods and _other_method_owning(config, settings.normalise_key(key)):
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
    sections = {f.name for f in dataclasses.fields(Config)}
    if set(values) <= sections:
        runtime = values.get("runtime")
        if isinstance(runtime, dict):
            values = {**values, "runtime": _switches_as_words(runtime)}
        return settings.from_dict(Config, values)
    return _from_flat(_switches_as_words(values))


# Settings that were booleans before they had "auto": a saved true or false reads as that word.
_WERE_BOOLEANS = ("channels_last", "compile")


def _switches_as_words(values: dict[str, Any]) -> dict[str, Any]:
    def word(key: str, value: Any) -> Any:
        if key.rsplit(".", 1)[-1] in _WERE_BOOLEANS and isinstance(value, bool):
            return "true" if value else "false"
        return value

    return {key: word(key, value) for key, value in values.items()}


# Flat keys of earlier releases that are not a short name of today's tree.
_RENAMED = {"views": "runtime.view_path"}


def _from_flat(values: dict[str, Any]) -> Config:
    """Earlier releases kept every method's settings side by side; the others' were never read."""
    method = values.get("method", "byol")
    if not isinstance(method, str):
        raise ConfigError(f"method={method!r} is not a method name.")
    changes = {
        _RENAMED.get(key, key): tuple(value) if isinstance(value, list) else value
        for key, value in values.items()
    }
    return apply_changes(Config(), changes, other_methods=True)


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
