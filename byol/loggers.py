"""Where a run's numbers go besides ``metrics.jsonl``: TensorBoard (a dependency), MLflow and
Weights & Biases (optional extras), chosen by ``config.runtime.loggers``. Each receives the resolved
config once, the same scalars at the same steps, and pictures (the example views T and T' at
the first step).

MLflow logs to ``$MLFLOW_TRACKING_URI`` when set, else to an SQLite file and an artifact folder
in the run folder; W&B runs offline (files under the run folder, ``wandb sync`` uploads them)
unless ``WANDB_MODE`` says otherwise or an API key is set.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from byol.errors import ConfigError

LOGGERS = ("tensorboard", "mlflow", "wandb")
EXTRAS = {"mlflow": "pip install 'byol[mlflow]'", "wandb": "pip install 'byol[wandb]'"}
TENSORBOARD = "tensorboard"
MLFLOW_DB, MLFLOW_ARTIFACTS = "mlflow.db", "mlflow-artifacts"


class Logger:
    """What every logger does; the base class does nothing, the fallback for a missing backend."""

    def config(self, values: dict[str, Any]) -> None: ...

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def image(self, name: str, picture: np.ndarray, step: int) -> None:
        """``picture``: H x W x 3 uint8."""

    def close(self) -> None: ...


class TensorBoardLogger(Logger):
    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD))

    def config(self, values: dict[str, Any]) -> None:
        rows = "\n".join(f"| {k} | {v} |" for k, v in values.items())
        self.writer.add_text("config", f"| key | value |\n|---|---|\n{rows}", 0)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def image(self, name: str, picture: np.ndarray, step: int) -> None:
        self.writer.add_image(name, picture, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class MLflowLogger(Logger):
    def __init__(self, run_dir: Path) -> None:
        self.mlflow = importlib.import_module("mlflow")
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "byol")
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # all in the run folder, not the cwd
            folder = Path(run_dir).resolve()
            self.mlflow.set_tracking_uri(f"sqlite:///{folder / MLFLOW_DB}")
            if self.mlflow.get_experiment_by_name(name) is None:
                self.mlflow.create_experiment(name, (folder / MLFLOW_ARTIFACTS).as_uri())
        self.mlflow.set_experiment(name)
        self.run = self.mlflow.start_run(run_name=Path(run_dir).resolve().name)

    def config(self, values: dict[str, Any]) -> None:
        self.mlflow.log_params({k: str(v) for k, v in values.items()})

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(values, step=step)

    def image(self, name: str, picture: np.ndarray, step: int) -> None:
        self.mlflow.log_image(picture, f"{name}.png")

    def close(self) -> None:
        self.mlflow.end_run()


class WandbLogger(Logger):
    def __init__(self, run_dir: Path) -> None:
        self.wandb = importlib.import_module("wandb")
        online = os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "offline"
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT", "byol"),
            name=Path(run_dir).resolve().name,
            dir=str(run_dir),
            mode=os.environ.get("WANDB_MODE") or ("online" if online else "offline"),
        )

    def config(self, values: dict[str, Any]) -> None:
        self.run.config.update(values, allow_val_change=True)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def image(self, name: str, picture: np.ndarray, step: int) -> None:
        self.run.log({name: self.wandb.Image(picture)}, step=step)

    def close(self) -> None:
        self.run.finish()


def parse_loggers(text: str) -> list[str]:
    """``"tensorboard,mlflow"`` -> the names; ``"none"`` or "" -> none."""
    names = [n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ConfigError(
            f"loggers={text!r}: unknown {unknown[0]!r}; choose from {', '.join(LOGGERS)} "
            "(comma-separated) or none."
        )
    return names


def check_installed(text: str) -> None:
    """A one-line error naming the extra, before a run starts, for a logger not installed."""
    for name in parse_loggers(text):
        if name in EXTRAS and importlib.util.find_spec(name) is None:
            raise ConfigError(f"loggers={name} needs {name}, not installed: {EXTRAS[name]}.")


def open_loggers(run_dir: Path, text: str, config: dict[str, Any] | None = None) -> list[Logger]:
    """The loggers ``text`` names, each given the resolved config."""
    kinds = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger, "wandb": WandbLogger}
    opened = []
    names = parse_loggers(text)
    try:  # the loggers encode the folder's path as UTF-8 and fail on bytes that are not
        str(run_dir).encode("utf-8")
    except UnicodeEncodeError:
        if names:
            raise ConfigError(
                f"the run folder {str(run_dir).encode('utf-8', 'surrogateescape')!r} has a name "
                f"that is not UTF-8, where {', '.join(names)} cannot write; rename it, or log "
                "to metrics.jsonl alone with --set loggers=none."
            ) from None
    for name in names:
        try:
            logger = kinds[name](run_dir)
        except ImportError:  # tensorboard is a dependency; tolerate its absence in minimal envs
            if name in EXTRAS:
                raise ConfigError(f"loggers={name} needs {name}: {EXTRAS[name]}.") from None
            continue
        if config is not None:
            logger.config(config)
        opened.append(logger)
    return opened
