"""`byol ablate` on tar shards written by `byol shards`: every run of the table pretrains on the
stream and every row is scored from it (kNN and the linear probe on the labelled shards)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from byol.cli import main

pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")

TINY = [
    "backbone=resnet18-narrow",
    "image_size=16",
    "batch_size=64",
    "epochs=1",
    "projector_hidden_dim=32",
    "predictor_hidden_dim=32",
    "projection_dim=16",
    "num_workers=0",
    "threads=1",
    "precision=fp32",  # as tests/test_baselines.py says: bf16 at 16 px is not what is tested
    "linear_epochs=2",
    "linear_lrs=0.1",
    # A stream has no random access: no subset of the training images, the whole stream as bank.
    "train_subset=0",
    "knn_bank_subset=0",
]


def test_ablate_trains_and_scores_every_row_on_shards(small_folder, tmp_path, capsys):
    shards = tmp_path / "shards"
    assert main(["shards", str(small_folder), str(shards), "--shard-size", "64", "--quiet"]) == 0
    index = json.loads((shards / "index.json").read_text())
    assert sum(s["samples"] for s in index["splits"]["train"]) == 256
    out = tmp_path / "ablations"
    settings = [*TINY, f"dataset={shards}"]
    argv = ["ablate", "predictor", "--quiet", "--out", str(out)]
    assert main([*argv, *(arg for item in settings for arg in ("--set", item))]) == 0
    assert "Traceback" not in capsys.readouterr().err
    record = json.loads((out / "predictor" / "results.json").read_text())
    rows = record["rows"]
    assert len(rows) == 3 and len(record["references"]["random-init"]) == 1
    for row in rows:
        assert 0 <= row["knn_top1"] <= 100 and 0 <= row["linear_top1"] <= 100
        run = Path(row["run_dir"])
        assert json.dumps(str(shards)) in (run / "config.json").read_text()
        summary = json.loads((run / "summary.json").read_text())
        # One epoch of the 256 streamed images in batches of 64, none skipped.
        assert summary["steps"] == 4 and summary["unreadable_images"] == []
    assert (
        "predictor + moving-average target (BYOL)" in (out / "predictor" / "table.md").read_text()
    )
