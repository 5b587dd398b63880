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
    return copy.deepcopy(tables.data())  # the file as read, for a test to break


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

    assert split_overrides(tables.data()["defaults"]["eval"])[0].knn_ks == (200,)
    assert {entry["table"] for entry in tables.data()["reproduce"]} == set(ABLATIONS)


def test_the_tables_hold_the_papers_rows_and_numbers():
    target = table("target").rows
    assert target[1].overrides == ("tau_base=0", "tau_schedule=constant")
    taus = (0.9, 0.99, 0.999, 0.7, 0.997, 1)
    assert [r.overrides for r in target[2:]] == [(f"tau_base={t}",) for t in taus]
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


def _record(pixels_knn: float) -> dict:
    from byol.evaluation.eval_settings import EvalSettings

    rows = []
    for name, label, scores in (
        ("baseline", "EMA", (70.0, 72.0)),
        ("tau-1", "tau 1", (60.0, 61.0)),
    ):
        for seed, knn in enumerate(scores):
            rows.append(
                dict(name=name, label=label, method="byol", seed=seed, paper=None, run_dir=name)
                | dict(knn_top1=knn, linear_top1=knn, collapse=0.9, collapse_curve=[0.9])
                | dict(reference="baseline", train_s=60.0, status="ok")
            )
    references = {"pixels": [{"knn_top1": pixels_knn, "linear_top1": 80.0}]}
    references["random-init"] = [{"knn_top1": 50.0, "linear_top1": 55.0}] * 2
    config = preset("fashion-mnist")
    record = dict(ablation="target", preset="fashion-mnist", command="byol ablate target")
    record.update(config=config.to_dict(), departures=["a=1"], eval_settings=vars(EvalSettings()))
    return record | dict(
        eval_train_images=100, sources=["Table 5a"], rows=rows, references=references
    )


@pytest.mark.parametrize(
    "pixels_knn, verdict", [(77.4, "not testable at this budget"), (60.0, "holds")]
)
def test_the_table_the_verdict_table_and_the_page_show_the_raw_pixel_gate(
    tmp_path, pixels_knn, verdict
):
    from byol.experiments.reproduce import verdict_table
    from byol.reporting.ablation_html import build_ablation_report
    from byol.reporting.ablation_tables import write_report

    text = write_report(
        tmp_path, _record(pixels_knn), table("target").claims, tables.data()["report"]
    )
    assert f"| raw pixels (reference) | – | {pixels_knn:.1f} | 80.0 | | 1 | |" in text
    assert "only where its reference beats raw pixels beyond the spread" in text
    claim = "a constant random target (tau = 1) learns worse features than the EMA"
    line = next(line for line in text.splitlines() if line.startswith(f"| {claim}"))
    assert line.endswith(f"| {verdict} |")
    if verdict == "holds":  # 71 ± 1.41 against 60: judged, and the gate says by how much
        assert "the reference beats raw pixels by 11.00 (71.00 ± 1.41 against 60.00" in line
    else:
        assert "the reference is 6.40 points below raw pixels (71.00 ± 1.41 against 77.40" in line
        assert "measured: reference minus this row: +10.50" in line
    assert (
        "| without the slow target (tau = 0) BYOL collapses | 0.3% (Table 5a) | not measured"
        in text
    )
    assert f"| target | {claim} |" in "\n".join(verdict_table([tmp_path]))
    assert f"**{verdict}**" in "\n".join(verdict_table([tmp_path]))
    assert verdict in build_ablation_report(tmp_path)
    assert "**Ours:** fashion-mnist" in text and "100 labelled training images" in text


def test_a_truncated_results_json_is_set_aside_with_one_line(tmp_path):
    from byol.errors import ByolError
    from byol.experiments.reproduce import verdict_table
    from byol.reporting.ablation_tables import RESULTS_JSON, write_report

    write_report(tmp_path, _record(60.0), table("target").claims, tables.data()["report"])
    path = tmp_path / RESULTS_JSON
    path.write_text(path.read_text()[:40])  # a crash mid-write, or an editor's slip
    with pytest.raises(ByolError, match="rerun the same command") as error:
        verdict_table([tmp_path])
    assert "\n" not in str(error.value)
    assert (tmp_path / f"{RESULTS_JSON}.unreadable").is_file()
