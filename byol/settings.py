"""One ``key=value`` parser for every settings dataclass: the run's ``Config``, the evaluation's
``EvalSettings`` and the ablation's ``AblationSettings``.

A value is parsed against the type of the field's default; a tuple field annotated
``tuple[float, float]`` takes exactly that many comma-separated numbers, one annotated
``tuple[int, ...]`` any number. An unknown key or a value of the wrong type is a one-line
``ConfigError`` naming the key, the value and what is valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

from byol.errors import ConfigError


def field_names(settings_class: type) -> list[str]:
    return [f.name for f in dataclasses.fields(settings_class)]


def normalise_key(key: str) -> str:
    return key.strip().replace("-", "_")


def split_item(item: str) -> tuple[str, str]:
    """``"key=value"`` -> (key, value), the key with dashes read as underscores."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}.")
    key, text = item.split("=", 1)
    return normalise_key(key), text.strip()


def check_key(key: str, names: list[str], what: str = "config key") -> None:
    if key not in names:
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown {what} {key!r}.{hint} Valid keys: {', '.join(names)}.")


def _variable_length(settings_class: type, key: str) -> bool:
    annotation = {f.name: f.type for f in dataclasses.fields(settings_class)}[key]
    return "..." in str(annotation)


def parse_value(key: str, text: str, default: Any, variable_length: bool = False) -> Any:
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
            if variable_length:
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
            count = "one or more" if variable_length else str(len(default))
            shape = f"{count} comma-separated numbers"
        else:
            shape = kind.__name__
        raise ConfigError(f"{key}={text!r} is not a valid {shape} (default {default!r}).") from None


def parse_overrides(settings_class: type, overrides: list[str], what: str) -> dict[str, Any]:
    """``key=value`` strings -> {field: parsed value}, every key a field of ``settings_class``."""
    names, defaults = field_names(settings_class), settings_class()
    changes: dict[str, Any] = {}
    for item in overrides:
        key, text = split_item(item)
        check_key(key, names, what)
        variable = _variable_length(settings_class, key)
        changes[key] = parse_value(key, text, getattr(defaults, key), variable)
    return changes


def apply_overrides(settings: Any, overrides: list[str], what: str = "config key") -> Any:
    """A copy of the dataclass ``settings`` with the ``key=value`` strings applied."""
    return dataclasses.replace(settings, **parse_overrides(type(settings), overrides, what))


def split_by_owner(overrides: list[str], *owners: type) -> list[list[str]]:
    """Sort ``key=value`` strings by the settings class that has the key, in ``owners`` order: a
    key that several have goes to each of them (``seed`` repeats a whole experiment); a key none
    has goes to the first owner, whose parser then names it as unknown."""
    groups: list[list[str]] = [[] for _ in owners]
    for item in overrides:
        key, _ = split_item(item)
        found = [i for i, owner in enumerate(owners) if key in field_names(owner)]
        for i in found or [0]:
            groups[i].append(item)
    return groups


def typed_value(key: str, value: Any, default: Any) -> Any:
    """``value`` from JSON as the type of ``default``; a value of another type is an error."""
    if isinstance(default, tuple) and isinstance(value, list):
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


def from_dict(settings_class: type, values: dict[str, Any], what: str = "config key") -> Any:
    """Rebuild a settings dataclass from a saved dict (lists become tuples); unknown keys and
    values of the wrong type are errors."""
    names, defaults = field_names(settings_class), settings_class()
    typed = {}
    for key, value in values.items():
        check_key(key, names, what)
        typed[key] = typed_value(key, value, getattr(defaults, key))
    return dataclasses.replace(defaults, **typed)


@dataclass(frozen=True)
class Rule:
    """What values a setting accepts, beyond its type: bounds (``low``/``high`` inclusive,
    ``above`` exclusive), a set of ``choices``, a ``pattern``, or a (low, high) pair that must be
    ``ordered``. Bounds apply to each element of a tuple. With ``prefix``, a name that starts
    with it (and goes on) is accepted besides the ``choices``."""

    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None
    ordered: bool = False
    nonempty: bool = False
    prefix: str | None = None

    def valid(self) -> str:
        """What is valid, in words."""
        if self.choices is not None:
            other = f", or {self.prefix}<name>" if self.prefix else ""
            return f"one of {', '.join(map(str, self.choices))}{other}"
        if self.pattern is not None:
            return f"of the form {self.pattern.replace('|', ' or ')}"
        if self.nonempty:
            return "a name or a path, not empty"
        parts = []
        if self.above is not None:
            parts.append(f"> {self.above:g}")
        if self.low is not None:
            parts.append(f">= {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        words = " and ".join(parts) or "any value"
        return f"{words}, low <= high" if self.ordered else words

    def accepts(self, value: Any) -> bool:
        if self.prefix and str(value).startswith(self.prefix) and str(value) != self.prefix:
            return True
        if self.choices is not None:
            return value in self.choices
        if self.pattern is not None:
            return re.fullmatch(self.pattern, str(value)) is not None
        if self.nonempty:
            return bool(str(value).strip())
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if self.low is not None and v < self.low:
                return False
            if self.high is not None and v > self.high:
                return False
            if self.above is not None and v <= self.above:
                return False
        return not (self.ordered and len(values) == 2 and values[0] > values[1])


def check_rules(settings: Any, rules: dict[str, Rule]) -> None:
    """A ConfigError naming the first field whose value its rule refuses, the value and what is
    valid."""
    for key, rule in rules.items():
        value = getattr(settings, key)
        if not rule.accepts(value):
            raise ConfigError(f"{key}={value!r} is out of range: valid is {rule.valid()}.")
