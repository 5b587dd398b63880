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

from byol.settings.fields import Rule, section, setting
from byol.settings.parse import (
    apply_overrides,
    check_rules,
    describe,
    from_dict,
    has_key,
    normalise_key,
    parse_value,
    set_text,
    split_by_owner,
    split_item,
    typed_value,
    unknown_key,
    variable_length,
)
from byol.settings.tree import Leaf, find, flatten, is_settings, leaves, replace

__all__ = [
    "Leaf",
    "Rule",
    "apply_overrides",
    "check_rules",
    "describe",
    "find",
    "flatten",
    "from_dict",
    "has_key",
    "is_settings",
    "leaves",
    "normalise_key",
    "parse_value",
    "replace",
    "section",
    "set_text",
    "setting",
    "split_by_owner",
    "split_item",
    "typed_value",
    "unknown_key",
    "variable_length",
]
