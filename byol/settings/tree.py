"""Walking a settings tree: its leaves by dotted path, finding one, replacing one."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from byol.settings.fields import Rule


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


def child(node: Any, part: str) -> tuple[Any, dataclasses.Field | None]:
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
        value, f = child(value, part)
    return value, f


def replace(node: Any, path: str, value: Any) -> Any:
    """A copy of the tree with ``value`` at ``path``; every node on the way is copied, the rest
    shared (settings are treated as immutable)."""
    head, _, rest = path.partition(".")
    inner, _ = child(node, head)
    new = replace(inner, rest, value) if rest else value
    if isinstance(node, tuple):
        i = int(head) - 1
        return node[:i] + (new,) + node[i + 1 :]
    return dataclasses.replace(node, **{head: new})
