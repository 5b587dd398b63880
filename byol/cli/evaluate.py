"""``byol eval`` (the paper's protocols on a trained encoder) and ``byol ablate`` (its
ablations as runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from byol.cli.train import DEFAULT_PRESET
from byol.errors import ByolError
from byol.experiments.tables import ABLATIONS
from byol.presets import PRESETS


def cmd_eval(args: argparse.Namespace) -> int:
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


def cmd_ablate(args: argparse.Namespace) -> int:
    from byol.experiments.ablate import run_ablation
    from byol.reporting.ablation_tables import PLOT_PNG, RESULTS_JSON, TABLE_MD

    out = Path(args.out) if args.out else None
    if args.name == "all":
        from byol.experiments.reproduce import reproduce

        path = reproduce(args.set or [], out, args.quiet, args.jobs, preset_name=args.preset)
        print(path.read_text())
        print(f"written: {path}")
        return 0
    folder = run_ablation(args.name, args.preset, args.set or [], out, args.quiet, args.jobs)
    print((folder / TABLE_MD).read_text())
    for name in (TABLE_MD, PLOT_PNG, RESULTS_JSON):
        print(f"written: {folder / name}")
    return 0


def add_ablate(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(
        func=cmd_ablate,
        memory_hint="lower --set batch_size or image_size, or raise accumulation_steps",
    )


def cmd_reproduce(args: argparse.Namespace) -> int:
    from byol.experiments.reproduce import reproduce

    path = reproduce(args.set or [], Path(args.out) if args.out else None, args.quiet, args.jobs)
    print(path.read_text())
    print(f"written: {path}, {path.with_name('ablations.html')}")
    return 0


def add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="rerun every table of docs/ablations.md (3 seeds each) and write its report",
    )
    p.add_argument("--jobs", type=int, default=1, help="train this many runs side by side")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="added to every table")
    p.add_argument("--out", help="output folder (default: runs/reproduce)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(
        func=cmd_reproduce,
        memory_hint="lower --set batch_size or image_size, or raise accumulation_steps",
    )


def add_eval(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(
        func=cmd_eval,
        memory_hint="lower --set eval_batch_size (features), finetune_batch_size or "
        "linear_batch_size",
    )
