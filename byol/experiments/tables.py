"""The tables of ``byol ablate`` as ``ablations.toml`` describes them (its header gives the
schema): rows, claims, budgets, the report's prose and the ``byol reproduce`` plan, read once
and its tables checked as read."""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from byol import settings
from byol.config import METHODS, Config, apply_overrides, resolve_key
from byol.errors import ConfigError
from byol.reporting.verdicts import Claim

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, before the standard library had it
    import tomli as tomllib

RANDOM_INIT = "random-init"  # a row that scores the weights BYOL's run of the same seed began at
PROTOCOLS = FROZEN, FINETUNE, TRANSFER = "frozen", "finetune", "transfer"
_SHARED = ("name", "label", "source", "reference", "protocol", "fraction")  # TOML key = field
_ROW_KEYS = {*_SHARED, "methods", "set", "paper"}
_TABLE_KEYS = {"methods", "reference", "protocol", "source", "rows", "claims", "budget"}


@dataclass(frozen=True)
class Row:
    """One run of a table: a method, the settings it changes, and how it is scored."""

    name: str  # the x position in the table and plot, shared by the methods compared there
    label: str
    method: str  # a pretraining method, or RANDOM_INIT
    overrides: tuple[str, ...] = ()
    paper: float | str | None = None  # arXiv:2006.07733, ImageNet top-1 %
    source: str = ""
    reference: str = "baseline"  # the row this one is compared with (in results.json)
    protocol: str = FROZEN
    fraction: float = 1.0  # FINETUNE: the share of the training labels
    dataset: str = ""  # TRANSFER: the dataset scored on, named when a table is planned

    @property
    def key(self) -> str:
        """The run folder's name."""
        return f"{self.method}-{self.name}"

    @property
    def trains(self) -> str:
        """The method of the pretraining run (a random-init row shares BYOL's run)."""
        return "byol" if self.method == RANDOM_INIT else self.method

    def config(self, base: Config) -> Config:
        """``base`` with this row's settings; "{key}" in a value is ``base``'s value of key."""

        def value(match: re.Match) -> str:
            found = settings.find(base, resolve_key(base, match.group(1))[0])[0]
            return ",".join(map(str, found)) if isinstance(found, tuple) else str(found)

        return apply_overrides(base, [re.sub(r"\{([\w.]+)\}", value, o) for o in self.overrides])


@dataclass(frozen=True)
class Table:
    name: str
    rows: tuple[Row, ...]
    claims: tuple[Claim, ...]
    budgets: dict[str, list[str]]  # preset -> what this table adds to its budget


def _strict(values: dict[str, Any], allowed: set[str], where: str) -> dict[str, Any]:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"ablations.toml: {where} has unknown key(s) {', '.join(unknown)}.")
    return values


def _table(name: str, spec: dict[str, Any]) -> Table:
    _strict(spec, _TABLE_KEYS, f"table {name}")
    rows = []
    for entry in spec.get("rows", []):
        entry = {**spec, **_strict(entry, _ROW_KEYS, f"a row of {name}")}
        if not {"name", "label", "methods"} <= set(entry):
            raise ConfigError(f"ablations.toml: a row of {name} lacks its name, label or methods.")
        shared = {key: entry[key] for key in _SHARED if key in entry}
        overrides, paper = tuple(entry.get("set", ())), entry.get("paper", {})
        for method in entry["methods"]:
            rows.append(Row(method=method, overrides=overrides, paper=paper.get(method), **shared))
    claim_keys = {f.name for f in dataclasses.fields(Claim)}
    claims = [Claim(**_strict(c, claim_keys, f"a claim of {name}")) for c in spec.get("claims", [])]
    names = {(row.name, row.method) for row in rows}
    for row in rows:
        if (
            row.protocol not in PROTOCOLS
            or row.trains not in METHODS
            or ((row.reference, row.method) not in names)
        ):
            raise ConfigError(
                f"ablations.toml: row {row.name} ({row.method}) of {name} has an unknown "
                f"protocol {row.protocol!r}, method or reference {row.reference!r}."
            )
    for claim in claims:  # every claim compares rows the table has
        try:
            missing = [f"{n} ({m})" for n, m in claim.rows if (n, m) not in names]
        except ConfigError as error:  # an unknown kind
            raise ConfigError(f"ablations.toml: {error}") from None
        if missing:
            raise ConfigError(f"ablations.toml: a claim of {name} names {', '.join(missing)}.")
    return Table(name, tuple(rows), tuple(claims), spec.get("budget", {}))


@functools.cache
def data() -> dict[str, Any]:
    """ablations.toml as read: its defaults (the ``--set`` items every run and every scoring
    starts from), presets, tables, report (the prose of table.md) and reproduce plan."""
    text = resources.files("byol.experiments").joinpath("ablations.toml").read_text()
    return tomllib.loads(text)


@functools.cache
def tables() -> dict[str, Table]:
    """Every table, in the file's order."""
    return {name: _table(name, spec) for name, spec in data()["tables"].items()}


def table(name: str) -> Table:
    if name not in tables():
        raise ConfigError(f"unknown ablation {name!r}; choose one of {', '.join(tables())}.")
    return tables()[name]


def budget(preset_name: str) -> dict[str, Any]:
    """What a table's runs cost on a preset: set (``--set`` items), eval_train_images (0 = all),
    transfer_dataset."""
    return {
        "set": [],
        "eval_train_images": 0,
        "transfer_dataset": "",
        **data()["presets"].get(preset_name, {}),
    }


ABLATIONS = tuple(tables())
