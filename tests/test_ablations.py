"""The ablation tables as data (byol/experiments/ablations.toml): every row is a valid config of
its method, every reference and claim names a row the table has, the paper's numbers are where
the harness reads them, and a broken file is refused in one line."""

import copy
from pathlib import Path

import pytest

from byol.config import apply_overrides, identity, resolve_key
from byol.errors import ConfigError
from byol.experiments import tables
from byol.experiments.tables import ABLATIONS, FINETUNE, RANDOM_INIT, table
from byol.presets import preset
from byol.settings import split_item

PRESETS = ("imagenet-paper", "fashion-mnist", "cifar10-cpu", "cifar10", "stl10")


def _data() -> dict:
    return copy.deepcopy(tables._data())  # the file as read, for a test to break


@pytest.mark.parametrize("name", ABLATIONS)
def test_every_row_is_a_config_of_its_method_that_changes_what_it_says(name):
    for row in table(name).rows:
        for preset_name in PRESETS:
            base = preset(preset_name, row.trains)
            for item in row.overrides:  # a real key of this method's config, no other's
                assert resolve_key(base, split_item(item)[0]), (name, row.key, item)
            config = row.config(base)
            config.validate()
        # On the paper's own settings every override changes the experiment: no silent typo.
        paper = preset("imagenet-paper", row.trains)
        assert not row.overrides or identity(row.config(paper)) != identity(paper), row.key


def test_every_preset_budget_and_default_is_a_real_setting():
    data = _data()
    for preset_name, spec in data["presets"].items():
        config = apply_overrides(preset(preset_name), [*spec["set"], *data["defaults"]["run"]])
        config.validate()
        assert set(spec) <= {"set", "eval_train_images", "transfer_dataset"}
    from byol.evaluation.eval_settings import split_overrides

    assert split_overrides(tables.defaults("eval"))[0].knn_ks == (200,)
    assert {entry["table"] for entry in tables.reproduce_plan()} == set(ABLATIONS)


def test_the_tables_hold_the_papers_rows_and_numbers():
    target = table("target").rows
    assert target[1].overrides == ("tau_base=0", "tau_schedule=constant")
    assert [r.overrides for r in target[2:]] == [(f"tau_base={t}",) for t in (0.9, 0.99, 0.999, 1)]
    assert target[1].paper == 0.3 and {r.reference for r in target} == {"baseline"}
    batch = table("batch-size").rows
    assert {(r.method, r.name) for r in batch} == {
        (m, f"batch-{b}") for m in ("byol", "simclr", "barlow") for b in (256, 128, 64, 32)
    }
    assert [r.method for r in batch[:3]] == ["byol", "simclr", "barlow"]  # name-major
    augment = {(r.name, r.method): r for r in table("augmentations").rows}
    assert augment["crop-only", "simclr"].paper == 40.3
    assert ("no-blur-t2", "simclr") not in augment  # T vs T' is BYOL's asymmetry
    # The CPU preset has no blur: removing it leaves the config as it is, so the run is shared.
    config = preset("fashion-mnist")
    assert identity(augment["no-blur", "byol"].config(config)) == identity(config)
    labels = {(r.name, r.method): r for r in table("labels").rows}
    assert labels["1pct-labels", "byol"].fraction == 0.01
    assert labels["10pct-labels", "random-init"].paper == 56.4  # supervised, Table 2
    assert all(r.protocol == FINETUNE for r in labels.values())
    # Training from scratch and the untrained encoder are BYOL's run of the same seed: the same
    # config, so the run is shared, and BYOL's row comes first.
    for name in ("labels", "transfer"):
        rows = table(name).rows
        scratch = [i for i, r in enumerate(rows) if r.method == RANDOM_INIT]
        first = [i for i, r in enumerate(rows) if r.method == "byol"]
        assert scratch and all(rows[i].trains == "byol" and not rows[i].overrides for i in scratch)
        assert first < scratch


def test_a_value_may_name_another_setting_of_the_tables_config():
    row = next(r for r in table("tau-zero").rows if r.name == "tau-0-schedule")
    config = row.config(preset("fashion-mnist").replace(epochs=7))
    assert config.schedule.schedule_epochs == 7.0 and config.schedule.tau_base == 0.0


def test_every_claim_compares_rows_its_table_has():
    for name in ABLATIONS:
        rows = {(r.name, r.method) for r in table(name).rows}
        for claim in table(name).claims:
            assert set(claim.rows) <= rows, claim.text


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda t: t["claims"][0].update(variant="tau-7"), "names tau-7 (byol)"),
        (lambda t: t["claims"][0].update(kind="better"), "unknown kind 'better'"),
        (lambda t: t["claims"][0].update(verdict="holds"), "unknown key(s) verdict"),
        (lambda t: t["rows"][1].update(reference="tau-7"), "reference 'tau-7'"),
        (lambda t: t["rows"][1].update(methods=["byol", "moco2"]), "method"),
        (lambda t: t["rows"][1].update(protocol="frozen-ish"), "protocol 'frozen-ish'"),
        (lambda t: t["rows"][1].update(refrence="baseline"), "unknown key(s) refrence"),
        (lambda t: t.update(claim=[]), "unknown key(s) claim"),
        (lambda t: t["rows"][1].pop("label"), "lacks its name, label or methods"),
    ],
)
def test_a_broken_table_is_refused_in_one_line(change, words):
    spec = _data()["tables"]["target"]
    change(spec)
    with pytest.raises(ConfigError, match="ablations.toml") as error:
        tables._table("target", spec)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_the_data_file_is_package_data():
    # An installed wheel must carry the file the harness reads.
    pyproject = tables.tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "experiments/ablations.toml" in pyproject["tool"]["setuptools"]["package-data"]["byol"]
