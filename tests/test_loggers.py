"""The loggers beside metrics.jsonl receive the config, the same scalars and the views picture;
an optional logger that is not installed stops the run with one line naming its extra."""

import sys

import numpy as np
import pytest
import torch

from byol.config import Config, apply_overrides
from byol.errors import ConfigError
from byol.run_folder import MetricsLog
from byol.views.picture import views_picture

RECORDS = [
    {"step": 1, "epoch": 0.5, "loss": 3.0, "lr": 0.1},
    {"step": 2, "epoch": 1.0, "loss": 2.5, "lr": 0.2, "final": True},
]


def logged(tmp_path, loggers: str) -> np.ndarray:
    config = apply_overrides(Config(), [f"loggers={loggers}"])
    log = MetricsLog(tmp_path, config=config)
    picture = views_picture(
        torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8), (0.5,) * 3, (0.25,) * 3
    )
    log.image("views", picture, 0)
    for record in RECORDS:
        log.write(record)
    log.close()
    return picture


def test_views_picture_shows_t_above_t_prime():
    picture = views_picture(
        torch.zeros(3, 3, 4, 4), torch.ones(3, 3, 4, 4), (0.5,) * 3, (0.25,) * 3
    )
    assert picture.shape == (2 * 8, 3 * 8, 3) and picture.dtype == np.uint8
    assert picture[4, 4, 0] == 128 and picture[12, 4, 0] == 191  # mean, mean + std, gaps aside


def test_tensorboard_gets_config_scalars_and_views(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged(tmp_path, "tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [e.value for e in events.Scalars("loss")] == [3.0, 2.5]
    assert "views" in events.Tags()["images"] and "final" not in events.Tags()["scalars"]
    assert any("config" in tag for tag in events.Tags()["tensors"])


def test_mlflow_gets_config_scalars_and_views(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    # A file store: the default SQLite database takes ~20 s to create its tables.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    logged(tmp_path, "mlflow")
    client = mlflow.tracking.MlflowClient((tmp_path / "mlruns").as_uri())
    run = client.search_runs([client.get_experiment_by_name("byol").experiment_id])[0]
    assert run.data.params["backbone"] == "resnet50"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [3.0, 2.5]
    assert "views.png" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_wandb_offline_gets_a_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged(tmp_path, "wandb")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_missing_logger_is_one_line_naming_the_extra(monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr("importlib.util.find_spec", lambda module, *a: None)
    with pytest.raises(ConfigError, match=rf"byol\[{name}\]"):
        apply_overrides(Config(), [f"loggers=tensorboard,{name}"]).validate()
