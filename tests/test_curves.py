"""`byol curves`: learning curves of several runs, mean and spread over seeds, against raw pixels.

Run folders are written here by hand (metrics.jsonl, summary.json, config.json as pretraining
writes them), so every number the command prints has a closed form.
"""

import json
import math
import statistics
from pathlib import Path

import pytest

from byol.cli import main
from byol.errors import ByolError
from byol.reporting.learning_curves import (
    Recipe,
    curves_table,
    first_step_above,
    parse_recipe,
    read_curve,
)


def fake_run(folder: Path, scores: dict[int, float], pixels: float | None = 75.0, rate=64.0):
    """A finished run: kNN after each epoch but the last, the last in summary.json."""
    folder.mkdir(parents=True)
    *epochs, last = sorted(scores)
    rows = [{"step": s, "loss": 1.0, "images_per_second": rate} for s in range(10, last + 1, 10)]
    rows += [{"step": s, "epoch": i + 1, "knn_top1": scores[s]} for i, s in enumerate(epochs)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"steps": last, "knn_top1": scores[last], "knn_top1_random_init": 60.0}
    if pixels is not None:
        summary["knn_top1_pixels"] = pixels
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.json").write_text(json.dumps({"optim": {"batch_size": 32}}))
    return folder


def test_a_curve_joins_the_epoch_scores_and_the_final_one(tmp_path: Path):
    curve = read_curve(fake_run(tmp_path / "a", {100: 70.0, 200: 74.0, 300: 77.0}))
    assert curve.steps == (100, 200, 300) and curve.knn == (70.0, 74.0, 77.0)
    assert curve.pixels == 75.0 and curve.random_init == 60.0
    assert curve.seconds_per_step == pytest.approx(32 / 64.0)


def test_seeds_give_the_mean_and_sample_spread_on_the_steps_they_share(tmp_path: Path):
    a = read_curve(fake_run(tmp_path / "a", {100: 70.0, 200: 74.0, 300: 78.0}))
    b = read_curve(fake_run(tmp_path / "b", {100: 72.0, 200: 76.0, 250: 1.0, 300: 80.0}))
    recipe = Recipe("r", (a, b))
    assert recipe.steps == [100, 200, 300]  # 250 was scored by one seed only
    assert [stat.mean for stat in recipe.stats()] == [71.0, 75.0, 79.0]
    assert [stat.std for stat in recipe.stats()] == pytest.approx([statistics.stdev([70, 72])] * 3)
    assert {stat.n for stat in recipe.stats()} == {2}
    assert recipe.minutes() == pytest.approx([s * 0.5 / 60 for s in (100, 200, 300)])


def test_the_step_above_pixels_is_interpolated_or_extrapolated(tmp_path: Path):
    rising = Recipe("r", (read_curve(fake_run(tmp_path / "a", {100: 70.0, 200: 80.0})),))
    assert first_step_above(rising, 2.0) == (pytest.approx(100 + 100 * (77 - 70) / 10), False)
    slow = Recipe("s", (read_curve(fake_run(tmp_path / "b", {100: 70.0, 200: 72.0})),))
    assert first_step_above(slow, 2.0) == (pytest.approx(200 + 5 / 0.02), True)
    falling = Recipe("f", (read_curve(fake_run(tmp_path / "c", {100: 72.0, 200: 71.0})),))
    assert first_step_above(falling, 2.0) == (None, False)
    no_pixels = Recipe("n", (read_curve(fake_run(tmp_path / "d", {100: 1.0}, pixels=None)),))
    assert first_step_above(no_pixels, 0.0) == (None, False)
    table = curves_table([rising, slow, falling], 2.0)
    assert "| r | 1 | 200 | 2 | 80.0 | 75.0 | +5.0 | 170 |" in table
    assert "450 (extrapolated)" in table and "| f | 1 | 200 |" in table


def test_the_command_prints_the_table_and_draws_the_picture(tmp_path: Path, capsys):
    runs = [fake_run(tmp_path / f"s{i}", {100: 70.0 + i, 200: 78.0 + i}) for i in range(2)]
    out = tmp_path / "pictures" / "curves.png"
    recipe = f"main job={runs[0]},{runs[1]}"
    assert main(["curves", "--recipe", recipe, "--margin", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"| main job | 2 | 200 | 2 | 78.5 ± {math.sqrt(0.5):.1f} | 75.0 | +3.5 |" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("text", ["no-equals-sign", "=a,b", "label="])
def test_a_malformed_recipe_is_refused_in_one_line(text):
    with pytest.raises(ByolError, match="LABEL=RUN_DIR"):
        parse_recipe(text)


def test_a_missing_or_scoreless_run_is_refused_in_one_line(tmp_path: Path, capsys):
    assert main(["curves", "--recipe", f"x={tmp_path / 'nowhere'}"]) == 2
    assert "no run folder at" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "summary.json").write_text("[1, 2]")  # our file, of the wrong shape
    assert main(["curves", "--recipe", f"x={tmp_path / 'empty'}"]) == 2
    err = capsys.readouterr().err
    assert "has no kNN scores" in err and len(err.strip().splitlines()) == 1


def test_a_subset_bank_curve_ends_on_that_bank_and_an_older_run_is_refused(tmp_path: Path):
    """Epochs scored on a knn_bank_subset bank: the curve ends on the final scores against that
    bank (a whole bank scores higher, so mixing them would fake a last-epoch jump)."""
    run = fake_run(tmp_path / "a", {100: 70.0, 200: 74.0, 300: 90.0}, pixels=80.0)
    config = {"optim": {"batch_size": 32}, "monitor": {"knn_bank_subset": 1000}}
    (run / "config.json").write_text(json.dumps({**config, "data": {"train_subset": 5000}}))
    with pytest.raises(ByolError, match="mix two protocols") as error:
        read_curve(run)
    assert "\n" not in str(error.value)
    summary = json.loads((run / "summary.json").read_text())
    summary.update(knn_top1_epoch_bank=76.0, knn_top1_pixels_epoch_bank=73.0)
    (run / "summary.json").write_text(json.dumps(summary))
    curve = read_curve(run)
    assert curve.knn == (70.0, 74.0, 76.0) and curve.pixels == 73.0
    # The bank is drawn from the whole train split, whatever train_subset is: still refused.
    (run / "config.json").write_text(json.dumps({**config, "data": {"train_subset": 500}}))
    (run / "summary.json").write_text(json.dumps({"steps": 300, "knn_top1": 90.0}))
    with pytest.raises(ByolError, match="mix two protocols"):
        read_curve(run)
