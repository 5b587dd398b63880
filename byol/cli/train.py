"""``byol pretrain``, and the catalogue commands: ``byol presets``, ``byol config``,
``byol models``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from byol import settings
from byol.config import METHODS, Config, apply_overrides
from byol.distributed import env_rank
from byol.errors import ByolError, OutOfMemory, allocation_failure
from byol.presets import PRESETS, configure

DEFAULT_PRESET = "fashion-mnist"


def resolve_config(args: argparse.Namespace) -> tuple[Config, Path, bool]:
    """(config, run folder, whether to resume). ``--resume RUN_DIR`` continues that run with its
    saved config; ``--resume auto`` continues the run in --run-dir when it has a checkpoint and
    starts it otherwise, so one command both starts and restarts a job."""
    from byol.checkpoint import has_checkpoint
    from byol.run_folder import CONFIG

    if args.resume is not None and args.resume != "auto":
        run_dir = Path(args.resume)
        saved = run_dir / CONFIG
        if not saved.is_file():
            raise ByolError(f"{run_dir} has no config.json; is it a byol run folder?")
        config, resume = Config.load(saved), True
        method = getattr(args, "method", None)
        config = apply_overrides(
            config, ([f"method={method}"] if method else []) + (args.set or [])
        )
    else:
        name = args.preset or DEFAULT_PRESET
        config = configure(name, args.set or [], getattr(args, "method", None))
        run_dir = None
    config.validate()
    if run_dir is None:  # a baseline gets its own default folder, next to BYOL's
        name = args.preset or DEFAULT_PRESET
        suffix = "" if config.method.name == "byol" else f"-{config.method.name}"
        run_dir = Path(args.run_dir or f"runs/{name}{suffix}")
        resume = args.resume == "auto" and has_checkpoint(run_dir)
    return config, run_dir, resume


def cmd_pretrain(args: argparse.Namespace) -> int:
    from byol.checkpoint import encoder_metadata, has_checkpoint, loading_lines
    from byol.training.loop import pretrain

    config, run_dir, resume = resolve_config(args)
    if not resume and has_checkpoint(run_dir):
        raise ByolError(
            f"{run_dir} already holds a run; continue it with `byol pretrain --resume {run_dir}` "
            "or choose another folder with --run-dir."
        )
    try:
        result = pretrain(config, run_dir, resume=resume, quiet=args.quiet)
    except (RuntimeError, MemoryError) as error:
        requested = allocation_failure(error)
        if requested is None:
            raise
        raise OutOfMemory(_out_of_memory(config, run_dir, requested)) from None
    if env_rank() != 0:  # under torchrun rank 0 alone reports
        return 0
    if result.already_finished:
        print(f"{run_dir} had already finished ({result.steps} steps): nothing to resume.")
    print(
        f"\nrun folder: {result.run_dir}  ({result.steps} steps, {result.wall_time_s:.0f} s, "
        f"{result.images_per_second:.0f} img/s, peak memory {result.peak_memory_mb:.0f} MB)"
    )
    encoder = result.run_dir / "encoder.safetensors"
    print(f"encoder:    {encoder}")
    rows = [
        (f"{METHODS[config.method.name]} encoder", result.knn_top1),
        ("random-init encoder", result.knn_top1_random_init),
        ("raw pixels", result.knn_top1_pixels),
    ]
    if result.knn_top1 is not None:
        print(
            f"kNN top-1 on the test set (k={config.monitor.knn_k}, "
            f"T={config.monitor.knn_temperature}):"
        )
        for name, value in rows:
            if value is not None:
                print(f"  {name:<22}{value:6.2f}%")
    if result.collapse is not None:
        print(f"collapse metric (1 = healthy, 0 = collapsed): {result.collapse:.3f}")
    if encoder.is_file():
        print("load the encoder in Python:")
        for line in loading_lines(encoder, encoder_metadata(encoder)):
            print(f"  {line}")
    return 0


def _out_of_memory(config: Config, run_dir: Path, requested: str) -> str:
    """What to lower when training ran out of memory; the checkpoints written are kept."""
    from byol.checkpoint import has_checkpoint

    asked = f" (an allocation of {requested})" if requested else ""
    more = 2 * config.optim.accumulation_steps
    lower = (
        f"lower optim.batch_size or data.image_size, or split each batch into more "
        f"micro-batches (--set accumulation_steps={more})"
    )
    if has_checkpoint(run_dir):
        return (
            f"out of memory while training{asked}; {lower}. The last checkpoint was kept: "
            f"`byol pretrain --resume {run_dir} --set accumulation_steps={more}` continues it."
        )
    return f"out of memory while training{asked}; {lower}."


def cmd_presets(args: argparse.Namespace) -> int:
    for name in PRESETS:
        print(name)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = configure(args.preset, args.set or [], getattr(args, "method", None))
    config.validate()
    if args.check:
        print(_check_here(config))
        return 0
    print(json.dumps(config.to_dict(), indent=2) if args.json else settings.describe(config))
    return 0


def _check_here(config: Config) -> str:
    """What `byol pretrain` checks before it allocates anything, on this machine, in one process:
    the device, the micro-batch, the memory of a training step and of the kNN monitor."""
    from byol.config.memory import (
        check_eval_memory,
        check_training_memory,
        device_memory,
        training_estimate,
    )
    from byol.distributed import check_batch
    from byol.errors import memory_text
    from byol.runtime import check_parallelism, resolve_device, resolve_precision

    check_parallelism(config.runtime.threads, config.runtime.num_workers)
    device = resolve_device(config.runtime.device)
    micro = check_batch(config.optim.batch_size, 1, config.optim.accumulation_steps)
    c = config
    precision = resolve_precision(
        device, c.runtime.precision, c.data.image_size, c.model.cifar_stem
    )
    check_training_memory(config, device, micro, precision)
    check_eval_memory(config, device, config.monitor.eval_batch_size)
    need = memory_text(training_estimate(config, micro, precision).total)
    available = device_memory(device)
    have = f" of the {memory_text(available)} of {device}" if available else f" on {device}"
    return f"fits: a training step needs about {need}{have} (micro-batches of {micro} images)."


def cmd_models(args: argparse.Namespace) -> int:
    import importlib.util

    from byol.backbones import BACKBONES, TIMM, TIMM_EXTRA, available_backbones

    names = available_backbones(args.pattern or "*")
    shown = names if args.pattern else [n for n in names if n in BACKBONES]
    for name in shown:
        print(name)
    if importlib.util.find_spec("timm") is None:
        print(f"timm models need timm, not installed: {TIMM_EXTRA}", file=sys.stderr)
    elif not args.pattern:
        count = sum(n.startswith(TIMM) for n in names)
        print(f"... and {count} timm models as timm:<name>; filter them: byol models 'vit*'")
    if not shown:
        print(f"no backbone matches {args.pattern!r}", file=sys.stderr)
        return 1
    return 0


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain an encoder with BYOL (or a baseline)")
    p.add_argument("--preset", choices=list(PRESETS), help=f"default: {DEFAULT_PRESET}")
    p.add_argument(
        "--method",
        choices=list(METHODS),
        help="byol (default), or a baseline: simclr, barlow (Barlow Twins), moco (MoCo v2); "
        "the same as --set method=NAME",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--run-dir", help="output folder (default: runs/<preset>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR|auto",
        help="continue the run in RUN_DIR from its newest valid checkpoint; 'auto': continue the "
        "run in --run-dir if it has one, else start it",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)


def add_catalog(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser(
        "config", help="print a preset's resolved settings, each with its help (--json: as saved)"
    )
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=list(PRESETS))
    p.add_argument("--method", choices=list(METHODS), help="the same as --set method=NAME")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="the config.json a run would save")
    p.add_argument(
        "--check",
        action="store_true",
        help="check what a run checks before it starts, on this machine: the device, the "
        "batch split, the memory it needs (one line)",
    )
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "models", help="list the backbones: torchvision's, and timm's when timm is installed"
    )
    p.add_argument(
        "pattern",
        nargs="?",
        help="shell-style filter, e.g. 'vit*', 'timm:convnext*', 'resnet*' (default: "
        "torchvision's and a count of timm's)",
    )
    p.set_defaults(func=cmd_models)
