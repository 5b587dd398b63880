"""Settings as trees of dataclasses, parsed from ``key=value`` strings and JSON.

Every part of the package declares its own settings next to its code, one field at a time with
``setting(default, help, <rule>)``: the rule (``Rule``: bounds, choices, a pattern) and the help
text live in the field's metadata, so nothing parallel has to be kept in sync. A tree nests such
dataclasses: the run's ``Config`` (``byol/config.py``) holds a section per concern, the view
pipelines T and T' as a pair of sections, and the chosen method's own settings as a section whose
class depends on the method's name (a *kinded* section, see ``section``).

Keys are dotted paths: ``optim.batch_size``, ``views.2.solarize_prob`` (views counted from 1),
``method.temperature``. A value is parsed against the type of the field's default; a tuple field
annotated ``tuple[float, float]`` takes exactly that many comma-separated numbers, one annotated
``tuple[int, ...]`` any number. An unknown key, a value of the wrong type or one its rule refuses
is a one-line ``ConfigError`` naming the key, the value and what is valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from byol.errors import ConfigError


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


def setting(
    default: Any,
    help: str,  # noqa: A002 - the word argparse and every user know
    *,
    identity: bool = True,
    resumable: bool = False,
    recovery: bool = False,
    **rule: Any,
) -> Any:
    """A settings field: its default, one line of help and the ``Rule`` keywords it obeys.

    ``identity``: part of what makes two runs the same experiment (what they compute); settings
    of how a run executes are not. ``resumable``: may differ when a run is resumed.
    ``recovery``: may differ when a diverged run is resumed from its last good checkpoint.
    """
    metadata = {
        "help": help,
        "rule": Rule(**rule),
        "identity": identity,
        "resumable": resumable,
        "recovery": recovery,
    }
    return dataclasses.field(default=default, metadata=metadata)


def section(
    factory: Callable[[], Any], help: str, *, kinds: Callable[[str], type] | None = None
) -> Any:
    """A field holding a nested settings dataclass. With ``kinds``, the section's class depends on
    its ``name`` field: ``kinds(name)`` gives it, so setting the section to a name (``method=moco``)
    replaces it with that class's defaults."""
    return dataclasses.field(default_factory=factory, metadata={"help": help, "kinds": kinds})


# --- walking a tree ---


@dataclass(frozen=True)
class Leaf:
    """One setting of a tree: its dotted path, current value and field."""

    path: str
    value: Any
    field: dataclasses.Field

    @property
    def rule(self) -> Rule:
        return self.field.metadata.get("rule", Rule())

    @property
    def help(self) -> str:
        return self.field.metadata.get("help", "")

    def flag(self, name: str) -> bool:
        return bool(self.field.metadata.get(name, name == "identity"))


def is_settings(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _children(node: Any) -> Iterator[tuple[str, Any, dataclasses.Field]]:
    for f in dataclasses.fields(node):
        yield f.name, getattr(node, f.name), f


def leaves(node: Any, prefix: str = "") -> Iterator[Leaf]:
    """Every setting of the tree ``node``, depth first, in declaration order. A tuple of
    sections (the views) is numbered from 1."""
    for name, value, f in _children(node):
        path = f"{prefix}{name}"
        if is_settings(value):
            yield from leaves(value, f"{path}.")
        elif isinstance(value, tuple) and value and all(map(is_settings, value)):
            for i, item in enumerate(value, start=1):
                yield from leaves(item, f"{path}.{i}.")
        else:
            yield Leaf(path, value, f)


def flatten(node: Any) -> dict[str, Any]:
    """{dotted path: value} of every setting."""
    return {leaf.path: leaf.value for leaf in leaves(node)}


def _step(node: Any, part: str) -> tuple[Any, dataclasses.Field | None]:
    """The child ``part`` of ``node`` (a field name, or a 1-based index into a tuple)."""
    if isinstance(node, tuple):
        if part.isdigit() and 1 <= int(part) <= len(node):
            return node[int(part) - 1], None
        raise KeyError(part)
    for name, value, f in _children(node):
        if name == part:
            return value, f
    raise KeyError(part)


def find(node: Any, path: str) -> tuple[Any, dataclasses.Field | None]:
    """The value at ``path`` and its field (None for an element of a tuple of sections)."""
    value, f = node, None
    for part in path.split("."):
        value, f = _step(value, part)
    return value, f


def replace(node: Any, path: str, value: Any) -> Any:
    """A copy of the tree with ``value`` at ``path``; every node on the way is copied, the rest
    shared (settings are treated as immutable)."""
    head, _, rest = path.partition(".")
    child, _ = _step(node, head)
    new = replace(child, rest, value) if rest else value
    if isinstance(node, tuple):
        i = int(head) - 1
        return node[:i] + (new,) + node[i + 1 :]
    return dataclasses.replace(node, **{head: new})


# --- parsing values ---


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


# --- trees from key=value strings and from JSON ---


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
        current, f = _step(node, key)
        kinds = f.metadata.get("kinds") if f is not None else None
        if kinds is not None:
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                raise ConfigError(f"{prefix}{key} needs a 'name' naming its kind.")
            current = kinds(value["name"])()
        if is_settings(current):
            changes[key] = _fill(current, value, f"{prefix}{key}.", what)
        elif isinstance(current, tuple) and current and all(map(is_settings, current)):
            if not isinstance(value, list) or len(value) != len(current):
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
            raise ConfigError(f"{leaf.path}={leaf.value!r} is out of range: {leaf.rule.valid()}.")


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
