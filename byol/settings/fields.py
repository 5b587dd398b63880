"""One setting: its default, help and rule (``setting``), and a nested group (``section``)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What a setting can hold at most when its rule names no upper bound: the numbers a run hands to
# torch become float32 or int32 (learning rates, widths, counts of threads), and beyond these they
# overflow there, far from the setting that caused it.
FLOAT_LIMIT = 3.4028234663852886e38  # float32's largest finite value
INT_LIMIT = 2**31 - 1


def type_limit(value: Any) -> float | None:
    """The upper bound of a value's type when its rule has none: float32's or int32's."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return FLOAT_LIMIT
    return INT_LIMIT if isinstance(value, int) else None


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

    def valid(self, value: Any = None) -> str:
        """What is valid, in words (with the bound of ``value``'s type where the rule has
        none)."""
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
        element = value[0] if isinstance(value, tuple) and value else value
        high = self.high if self.high is not None else type_limit(element)
        if high is not None:
            parts.append(f"<= {high:g}" if isinstance(high, float) else f"<= {high}")
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
            high = self.high if self.high is not None else type_limit(v)
            if high is not None and v > high:
                return False
            if isinstance(v, float) and v < -FLOAT_LIMIT:
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
