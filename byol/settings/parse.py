"""Trees from ``key=value`` strings and from JSON, checked against each setting's rule."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from typing import Any

from byol.errors import ConfigError
from byol.settings.tree import child, find, is_settings, leaves, replace


def normalise_key(key: str) -> str:
    return key.strip().replace("-", "_")


def split_item(item: str) -> tuple[str, str]:
    """``"key=value"`` -> (key, value), the key with dashes read as underscores."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}.")
    key, text = item.split("=", 1)
    return normalise_key(key), text.strip()


def unknown_key(key: str, names: list[str], what: str = "config key") -> ConfigError:
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(names) if len(names) <= 40 else "`byol config` lists them"
    return ConfigError(f"unknown {what} {key!r}.{hint} Valid keys: {listed}.")


def variable_length(f: dataclasses.Field | None) -> bool:
    return f is not None and "..." in str(f.type)


def parse_value(key: str, text: str, default: Any, variable: bool = False) -> Any:
    """``text`` as a value of the type of ``default``."""
    kind = type(default)
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, tuple):
            parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
            if variable:
                if not parts:
                    raise ValueError(text)
                return tuple(parse_value(key, p, default[0]) for p in parts)
            if len(parts) != len(default):
                raise ValueError(text)
            return tuple(parse_value(key, p, d) for p, d in zip(parts, default, strict=True))
        if isinstance(default, float):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
        return kind(text)
    except (ValueError, ConfigError):  # ConfigError: a bad element of a tuple
        if isinstance(default, tuple):
            count = "one or more" if variable else str(len(default))
            shape = f"{count} comma-separated numbers"
        else:
            shape = kind.__name__
        raise ConfigError(f"{key}={text!r} is not a valid {shape} (default {default!r}).") from None


def typed_value(key: str, value: Any, default: Any) -> Any:
    """``value`` from JSON as the type of ``default``; a value of another type is an error."""
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        if len(value) == len(default):
            return tuple(typed_value(key, v, d) for v, d in zip(value, default, strict=True))
    if isinstance(default, bool) or isinstance(value, bool):  # bool is an int: check it first
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"{key}={value!r} is not a valid {type(default).__name__} (default {default!r})."
        )
    return value


def set_text(tree: Any, path: str, text: str, what: str = "config key") -> Any:
    """``tree`` with the setting at ``path`` parsed from ``text``. A kinded section given a name
    becomes that kind's defaults."""
    try:
        current, f = find(tree, path)
    except KeyError:
        raise unknown_key(path, [leaf.path for leaf in leaves(tree)], what) from None
    kinds = f.metadata.get("kinds") if f is not None else None
    if kinds is not None:
        return replace(tree, path, kinds(text.strip())())
    if is_settings(current) or (isinstance(current, tuple) and all(map(is_settings, current))):
        raise ConfigError(f"{path} is a group of settings; set one of them (`byol config`).")
    return replace(tree, path, parse_value(path, text, current, variable_length(f)))


def apply_overrides(tree: Any, overrides: list[str], what: str = "config key") -> Any:
    """A copy of ``tree`` with the ``key=value`` strings applied in order (no aliases: see
    ``Config`` for the run's short names)."""
    for item in overrides:
        key, text = split_item(item)
        tree = set_text(tree, key, text, what)
    return tree


def from_dict(settings_class: type, values: dict[str, Any], what: str = "config key") -> Any:
    """Rebuild a settings tree from nested dicts as ``to_dict`` writes them (lists become
    tuples); unknown keys and values of the wrong type are errors."""
    return _fill(settings_class(), values, "", what)


def _fill(node: Any, values: Any, prefix: str, what: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} holds {values!r}, not a group.")
    names = [f.name for f in dataclasses.fields(node)]
    changes = {}
    for key, value in values.items():
        if key not in names:
            raise unknown_key(f"{prefix}{key}", [f"{prefix}{n}" for n in names], what)
        current, f = child(node, key)
        kinds = f.metadata.get("kinds") if f is not None else None
        if kinds is not None:
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                raise ConfigError(f"{prefix}{key} needs a 'name' naming its kind.")
            current = kinds(value["name"])()
        if is_settings(current):
            changes[key] = _fill(current, value, f"{prefix}{key}.", what)
        elif isinstance(current, tuple) and current and all(map(is_settings, current)):
            if not isinstance(value, (list, tuple)) or len(value) != len(current):
                raise ConfigError(f"{prefix}{key} needs a list of {len(current)} groups.")
            changes[key] = tuple(
                _fill(c, v, f"{prefix}{key}.{i}.", what)
                for i, (c, v) in enumerate(zip(current, value, strict=True), start=1)
            )
        else:
            changes[key] = typed_value(f"{prefix}{key}", value, current)
    return dataclasses.replace(node, **changes)


def has_key(tree: Any, key: str) -> bool:
    return normalise_key(key) in {leaf.path for leaf in leaves(tree)}


def split_by_owner(overrides: list[str], *owners: Callable[[str], bool]) -> list[list[str]]:
    """Sort ``key=value`` strings by which owner (a test of the key) takes them, in ``owners``
    order: a key that several take goes to each of them (``seed`` repeats a whole experiment); a
    key none takes goes to the first owner, whose parser then names it as unknown."""
    groups: list[list[str]] = [[] for _ in owners]
    for item in overrides:
        key, _ = split_item(item)
        found = [i for i, owns in enumerate(owners) if owns(key)]
        for i in found or [0]:
            groups[i].append(item)
    return groups


def check_rules(tree: Any) -> None:
    """A ConfigError naming the first setting whose value its rule refuses, the value and what
    is valid."""
    for leaf in leaves(tree):
        if not leaf.rule.accepts(leaf.value):
            raise ConfigError(
                f"{leaf.path}={leaf.value!r} is out of range: {leaf.rule.valid(leaf.value)}."
            )


def describe(tree: Any) -> str:
    """The tree as ``path = value  # help`` lines, a blank line between top-level groups."""
    lines, group = [], None
    for leaf in leaves(tree):
        top = leaf.path.split(".")[0]
        if group is not None and top != group:
            lines.append("")
        group = top
        value = ",".join(map(str, leaf.value)) if isinstance(leaf.value, tuple) else leaf.value
        lines.append(f"{leaf.path} = {value}" + (f"  # {leaf.help}" if leaf.help else ""))
    return "\n".join(lines)
