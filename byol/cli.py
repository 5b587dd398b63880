"""The `byol` command: pretrain, eval, export, report, ablate, presets, config.

byol pretrain                       # the CPU default: Fashion-MNIST
torchrun --nproc_per_node 8 -m byol pretrain --preset imagenet-paper   # docs/distributed.md
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from byol.config import METHODS, Config, apply_overrides
from byol.distributed import env_rank
from byol.errors import ByolError, RunInterrupted, one_line
from byol.experiments.variants import ABLATIONS
from byol.presets import PRESETS, preset

DEFAULT_PRESET = "fashion-mnist"


def _resolve_config(args: argparse.Namespace) -> tuple[Config, Path, bool]:
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
    else:
        config = preset(args.preset or DEFAULT_PRESET)
        run_dir = None
    method = getattr(args, "method", None)
    config = apply_overrides(config, ([f"method={method}"] if method else []) + (args.set or []))
    config.validate()
    if run_dir is None:  # a baseline gets its own default folder, next to BYOL's
        name = args.preset or DEFAULT_PRESET
        suffix = "" if config.method == "byol" else f"-{config.method}"
        run_dir = Path(args.run_dir or f"runs/{name}{suffix}")
        resume = args.resume == "auto" and has_checkpoint(run_dir)
    return config, run_dir, resume


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from byol.checkpoint import has_checkpoint
    from byol.training.loop import pretrain

    config, run_dir, resume = _resolve_config(args)
    if not resume and has_checkpoint(run_dir):
        raise ByolError(
            f"{run_dir} already holds a run; continue it with `byol pretrain --resume {run_dir}` "
            "or choose another folder with --run-dir."
        )
    result = pretrain(config, run_dir, resume=resume, quiet=args.quiet)
    if env_rank() != 0:  # under torchrun rank 0 alone reports
        return 0
    if result.already_finished:
        print(f"{run_dir} had already finished ({result.steps} steps): nothing to resume.")
    print(
        f"\nrun folder: {result.run_dir}  ({result.steps} steps, {result.wall_time_s:.0f} s, "
        f"{result.images_per_second:.0f} img/s, peak memory {result.peak_memory_mb:.0f} MB)"
    )
    print(f"encoder:    {result.run_dir / 'encoder.safetensors'}")
    rows = [
        (f"{METHODS[config.method]} encoder", result.knn_top1),
        ("random-init encoder", result.knn_top1_random_init),
        ("raw pixels", result.knn_top1_pixels),
    ]
    if result.knn_top1 is not None:
        print(f"kNN top-1 on the test set (k={config.knn_k}, T={config.knn_temperature}):")
        for name, value in rows:
            if value is not None:
                print(f"  {name:<22}{value:6.2f}%")
    if result.collapse is not None:
        print(f"collapse metric (1 = healthy, 0 = collapsed): {result.collapse:.3f}")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    for name in PRESETS:
        print(name)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    config = apply_overrides(preset(args.preset), args.set or [])
    config.validate()
    print(json.dumps(config.to_dict(), indent=2))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import time

    from byol.evaluation.protocols import Evaluation
    from byol.evaluation.results import heading, load_results, table
    from byol.run_folder import RESULTS_JSON, RESULTS_MD

    if args.protocol == "transfer" and not args.dataset:
        raise ByolError("transfer needs the target dataset: add --dataset NAME (or a folder).")
    ev = Evaluation(args.source, args.dataset, args.set or [])
    s = ev.settings
    frozen = "random-init" if args.random_init else "byol"
    trained = "supervised" if args.random_init else "byol"
    fractions = (s.label_fractions, s.finetune_epochs)
    steps = {
        "knn": [("kNN", ev.knn, frozen)],
        "linear": [("linear", ev.linear, frozen)],
        "finetune": [("fine-tune", lambda m: ev.finetune(m, *fractions), trained)],
        "transfer": [
            ("linear", ev.linear, frozen),
            (
                "fine-tune",
                lambda m: ev.finetune(m, s.transfer_fractions, s.transfer_epochs),
                trained,
            ),
        ],
    }
    steps["all"] = steps["knn"] + steps["linear"] + steps["finetune"]
    if args.protocol == "all" and not args.random_init:
        steps["all"] += [
            ("kNN", ev.knn, "random-init"),
            ("linear", ev.linear, "random-init"),
            ("fine-tune", lambda m: ev.finetune(m, *fractions), "supervised"),
        ]
    for name, protocol, method in steps[args.protocol]:
        started = time.perf_counter()
        print(f"{name} ({method}) on {ev.dataset}...", end=" ", file=sys.stderr, flush=True)
        protocol(method)
        print(f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    results = load_results(ev.out_dir)
    print(f"{heading(results, ev.dataset)}:\n{table(results, ev.dataset)}")
    print(f"written: {ev.out_dir / RESULTS_JSON}, {ev.out_dir / RESULTS_MD}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from byol.reporting.export import export

    written = export(
        args.source, args.dataset, args.split, args.queries_per_class, args.set or [], args.out
    )
    for path in written:
        print(f"written: {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from byol.reporting.html_report import write_report

    path = write_report(args.run_dir, args.out, args.points, args.set or [])
    print(f"written: {path}")
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from byol.experiments.ablate import run_ablation
    from byol.reporting.ablation_tables import PLOT_PNG, RESULTS_JSON, TABLE_MD

    out = Path(args.out) if args.out else None
    if args.name == "all":
        from byol.experiments.reproduce import run_all

        path = run_all(args.preset, args.set or [], out, args.quiet, args.jobs)
        print(path.read_text())
        print(f"written: {path}")
        return 0
    folder = run_ablation(args.name, args.preset, args.set or [], out, args.quiet, args.jobs)
    print((folder / TABLE_MD).read_text())
    for name in (TABLE_MD, PLOT_PNG, RESULTS_JSON):
        print(f"written: {folder / name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="byol", description="BYOL self-supervised pretraining.")
    sub = parser.add_subparsers(dest="command", required=True)

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
    p.set_defaults(func=_cmd_pretrain)

    _add_ablate_and_config(sub)
    _add_eval_export_report(sub)
    return parser


def _add_ablate_and_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate", help="rerun one of the paper's ablations on a preset: a table and a plot"
    )
    p.add_argument("name", choices=[*ABLATIONS, "all"], help="one table, or all of them")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="train this many runs side by side, the threads split between them",
    )
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=list(PRESETS))
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field of every run (e.g. train_subset=5000) or an evaluation "
        "setting (e.g. linear_epochs=20)",
    )
    p.add_argument("--out", help="output folder (default: runs/ablations/<preset>)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_ablate)

    p = sub.add_parser("presets", help="list the presets")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("config", help="print a preset's resolved config")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=list(PRESETS))
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_config)


def _add_eval_export_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate an encoder: knn, linear, finetune, transfer, all")
    p.add_argument("protocol", choices=["knn", "linear", "finetune", "transfer", "all"])
    p.add_argument("source", metavar="RUN_DIR_OR_ENCODER")
    p.add_argument("--dataset", help="evaluation dataset (default: the pretraining one)")
    p.add_argument(
        "--random-init",
        action="store_true",
        help="reference rows: the untrained encoder (knn, linear), training from scratch "
        "(finetune)",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("export", help="write embeddings (.npy) and a nearest-neighbour picture")
    p.add_argument("source", metavar="RUN_DIR_OR_ENCODER")
    p.add_argument("--dataset", help="dataset to embed (default: the pretraining one)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--queries-per-class", type=int, default=2)
    p.add_argument("--out", help="output folder (default: RUN_DIR/export)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("report", help="write one self-contained HTML page about a run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="output file (default: RUN_DIR/report.html)")
    p.add_argument(
        "--points", type=int, default=2000, help="test images in the embedding map (0: no map)"
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. device=cpu")
    p.set_defaults(func=_cmd_report)


def _os_error(error: OSError) -> str:
    where = error.filename or "while writing"
    if error.errno == errno.ENOSPC:  # checkpoints say it themselves; this is for other outputs
        return f"no space left on the device ({where}); free some space, then resume with --resume."
    return f"{error.strerror or error} ({where}); check the path and its permissions."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "pretrain" and env_rank() != 0:
        return 0  # launched under torchrun, evaluation and export run once, on rank 0
    try:
        return args.func(args)
    except RunInterrupted as error:
        if env_rank() == 0:  # every rank stops at the same step with the same message
            print(f"byol: {error}", file=sys.stderr)
        return 130
    except ByolError as error:
        print(f"byol: error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # a path the user gave: missing, a file, read-only, full disk
        print(f"byol: error: {_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("byol: interrupted.", file=sys.stderr)
        return 130
