"""The run configuration as a tree of settings by concern, whose defaults are the paper's numbers
(docs/method.md maps each one to arXiv:2006.07733); the named presets that change some of them
are in ``byol/presets.py``.

    data.*       what is read            model.*     the encoder
    views.1.*    T (views.2.*: T')       method.*    the method's own settings (methods/<name>.py)
    optim.*      optimizer and batch     schedule.*  epochs, warm-up, lr and tau schedules
    runtime.*    how the run executes    monitor.*   the online kNN signal
    seed

``--set`` takes dotted keys (``optim.batch_size=256``, ``views.2.solarize_prob=0.2``,
``method.temperature=0.2``) or a setting's own name where only one setting has it
(``batch_size=256``); a name the two views share sets both (``crop_scale=1,1``), and a pair sets
T and T' apart (``blur_prob=1,0.1``). ``byol config`` prints the tree with each setting's help.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byol import settings, speed
from byol.backbones import BACKBONES, TIMM, check_backbone
from byol.data.hf import HFOptions
from byol.errors import ConfigError
from byol.loggers import check_installed
from byol.methods import MethodSettings, settings_class
from byol.methods.byol import BYOLSettings
from byol.settings import section, setting
from byol.views.spec import ViewSpec, paper_view_specs

_DATASETS = (
    "fashion-mnist | cifar10 | cifar100 | stl10 | cifar10-jpeg | imagenet | a folder | tar "
    "shards (a folder, a {000..127} pattern, a URL) | hf:NAME"
)


@dataclass(frozen=True)
class DataSettings:
    dataset: str = setting("imagenet", _DATASETS, nonempty=True)
    data_dir: str = setting("", "where the dataset lies ('' = its usual place)", identity=False)
    download: bool = setting(False, "fetch torchvision datasets when absent", identity=False)
    # Below 8 px a ResNet's stride-32 trunk sees less than a pixel.
    image_size: int = setting(224, "side of the square views, in pixels", low=8)
    train_subset: int = setting(0, "pretrain on this many images only (0 = all)", low=0)
    strict_images: bool = setting(
        False, "stop at the first unreadable image file instead of skipping it", identity=False
    )
    # Shards are written in a random order; the buffer mixes neighbours within a worker's part.
    shuffle_buffer: int = setting(
        1000, "streamed sources: records each DataLoader worker shuffles among", low=1
    )
    hf_split: str = setting("train", "hf:NAME datasets: the split to pretrain on", nonempty=True)
    hf_test_split: str = setting("test", "hf:NAME datasets: the labelled test split ('' = none)")
    image_column: str = setting("image", "hf:NAME datasets: the column of images", nonempty=True)
    label_column: str = setting("label", "hf:NAME datasets: the column of labels ('' = none)")
    hf_streaming: bool = setting(
        False, "hf:NAME datasets: stream rows (evaluation), never store them", identity=False
    )

    def hf_options(self) -> HFOptions:
        return HFOptions(
            self.hf_split,
            self.hf_test_split,
            self.image_column,
            self.label_column,
            self.hf_streaming,
        )


@dataclass(frozen=True)
class ModelSettings:
    backbone: str = setting(
        "resnet50",
        "a torchvision ResNet, or timm:<name> (`byol models` lists them)",
        choices=tuple(BACKBONES),
        prefix=TIMM,
    )
    backbone_kwargs: str = setting(
        "", "timm backbones only: keyword arguments of timm.create_model, e.g. patch_size=4"
    )
    cifar_stem: bool = setting(False, "3x3 stride-1 first convolution, no max-pool")
    # Section 3.3: statistics over the global batch; false: per process (docs/distributed.md).
    sync_batchnorm: bool = setting(True, "batch norm over the global batch under torchrun")


@dataclass(frozen=True)
class OptimSettings:
    optimizer: str = setting("lars", "lars | sgd | adamw", choices=("lars", "sgd", "adamw"))
    base_lr: float = setting(
        0.2, "learning rate = base_lr * batch_size / 256", above=0.0, recovery=True
    )
    batch_size: int = setting(4096, "the global batch", low=2)  # batch norm needs two images
    weight_decay: float = setting(1.5e-6, "weight decay (not on biases and BN: LARS)", low=0.0)
    momentum: float = setting(0.9, "SGD/LARS momentum", low=0.0, high=0.999)
    lars_trust_coefficient: float = setting(1e-3, "LARS trust coefficient", above=0.0)
    # The global batch and the schedules stay; only which images share batch-norm statistics
    # changes, as with the process count, so a run can move to fewer devices on resume.
    accumulation_steps: int = setting(
        1,
        "micro-batches per optimizer step (BN statistics per micro-batch)",
        low=1,
        resumable=True,
    )


@dataclass(frozen=True)
class ScheduleSettings:
    epochs: int = setting(1000, "passes over the training set", low=1)
    warmup_epochs: float = setting(10.0, "linear learning-rate warm-up", low=0.0)
    # More than epochs stops the run before the schedules decay: a budget too short to spend
    # steps at a learning rate near 0.
    schedule_epochs: float = setting(
        0.0, "the lr and tau schedules span this many epochs (0 = epochs)", low=0.0
    )
    tau_base: float = setting(0.996, "target EMA rate at step 0", low=0.0, high=1.0)
    tau_schedule: str = setting(
        "cosine",
        "cosine: tau_base -> 1 | constant: tau_base throughout",
        choices=("cosine", "constant"),
    )


def _runtime(default: Any, help: str, *, resumable: bool = True, **rule: Any) -> Any:  # noqa: A002
    """How a run executes, never what it computes: not part of its identity."""
    return setting(default, help, identity=False, resumable=resumable, **rule)


@dataclass(frozen=True)
class RuntimeSettings:
    device: str = _runtime(
        "auto", "auto | cpu | cuda | cuda:N | mps", pattern=r"auto|cpu|cuda|cuda:[0-9]+|mps"
    )
    precision: str = _runtime(
        "auto",
        "fp32 | bf16 (autocast) | auto: bf16 on CUDA and native-bf16 CPUs",
        resumable=False,
        recovery=True,
        choices=("auto", "fp32", "bf16"),
    )
    channels_last: str = _runtime(
        "auto",
        "NHWC memory layout: true | false | auto (by measurement, docs/speed.md)",
        choices=speed.SWITCH,
    )
    view_path: str = _runtime(
        "auto",
        "batched (on the device; files: crops in workers) | per-image | auto",
        resumable=False,
        choices=("auto", "batched", "per-image"),
    )
    compile: str = _runtime(
        "auto",
        "torch.compile the method: true | false | auto (where measured to repay its first steps)",
        choices=speed.SWITCH,
    )
    compile_mode: str = _runtime(
        "auto",
        "torch.compile mode; auto: reduce-overhead (CUDA graphs) on one GPU, else default",
        choices=speed.COMPILE_MODES,
    )
    optimizer_kernels: str = _runtime(
        "auto",
        "sgd and adamw: for-loop | foreach | fused | auto (fused on CUDA); LARS: foreach",
        resumable=False,
        choices=speed.OPTIMIZER_KERNELS,
    )
    num_workers: int = _runtime(8, "DataLoader workers", low=0)
    threads: int = _runtime(0, "torch intra-op threads on CPU (0 = torch's default)", low=0)
    view_threads: int = _runtime(
        0,
        "intra-op threads making views (0 = auto: the cores workers leave, else the step's)",
        low=0,
    )
    log_every_steps: int = _runtime(10, "a metrics record every this many steps", low=1)
    loggers: str = _runtime(
        "tensorboard",
        "comma-separated: tensorboard, mlflow, wandb (extras), or none",
        pattern=r"none|(tensorboard|mlflow|wandb)(,(tensorboard|mlflow|wandb))*",
    )
    checkpoint_every_steps: int = _runtime(
        0, "0 = a checkpoint at the end of every epoch only", low=0
    )
    max_minutes: float = _runtime(0.0, "stop cleanly after this much training (0 = off)", low=0.0)


def _monitor(default: Any, help: str, **rule: Any) -> Any:  # noqa: A002
    """The online quality signal: scores, never the weights."""
    return setting(default, help, identity=False, **rule)


@dataclass(frozen=True)
class MonitorSettings:
    knn_k: int = _monitor(200, "neighbours of the weighted kNN", low=1)
    knn_temperature: float = _monitor(0.1, "temperature of the kNN weights", above=0.0)
    knn_every_epochs: int = _monitor(1, "score every this many epochs (0 = at the end)", low=0)
    knn_bank_subset: int = _monitor(0, "kNN bank: this many training images (0 = all)", low=0)
    knn_final: bool = _monitor(True, "score the final encoder into summary.json")
    knn_references: bool = _monitor(True, "also score a random-init encoder and raw pixels")
    eval_batch_size: int = _monitor(512, "batch of feature extraction", low=1)
    eval_crop_fraction: float = _monitor(
        0.875, "eval view: resize to size/fraction, centre-crop size", above=0.0, high=1.0
    )


@dataclass(frozen=True)
class Config:
    data: DataSettings = section(DataSettings, "what is read")
    model: ModelSettings = section(ModelSettings, "the encoder")
    method: MethodSettings = section(BYOLSettings, "the method", kinds=settings_class)
    views: tuple[ViewSpec, ViewSpec] = section(paper_view_specs, "T and T' (Table 6)")
    optim: OptimSettings = section(OptimSettings, "optimisation (Section 3.3)")
    schedule: ScheduleSettings = section(ScheduleSettings, "schedules (Section 3.3)")
    runtime: RuntimeSettings = section(RuntimeSettings, "how the run executes")
    monitor: MonitorSettings = section(MonitorSettings, "the online kNN signal")
    seed: int = setting(0, "seeds weights, data order and views", low=0, high=2**32 - 1)

    def validate(self) -> None:
        """Every setting against its rule: one ConfigError naming the first bad one."""
        settings.check_rules(self)
        check_backbone(self.model.backbone, self.model.backbone_kwargs, self.model.cifar_stem)
        check_installed(self.runtime.loggers)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes``: keys are dotted paths or short names, as for ``--set``;
        ``method`` first, and settings that only other methods have are left out, so one set of
        changes fits a run of any method."""
        from byol.config.keys import apply_changes  # keys.py builds on this module

        return apply_changes(self, changes, other_methods=True)

    @classmethod
    def load(cls, path: Path) -> Config:
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ConfigError(
                f"{path} is not a readable JSON config ({error}); fix or delete it."
            ) from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} holds a JSON {type(values).__name__}, not an object.")
        from byol.config.keys import from_dict  # keys.py builds on this module

        try:
            return from_dict(values)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
