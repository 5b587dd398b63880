"""What comes out of trained encoders: ``byol export`` (embeddings and a nearest-neighbour
picture, or an ONNX encoder), ``byol embed`` (any folder of images), ``byol report`` and
``byol curves`` (several runs' learning curves)."""

from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        from byol.reporting.onnx_export import export_onnx

        path, difference = export_onnx(args.source, args.out, args.set or [])
        print(f"written: {path}")
        print(f"onnxruntime vs PyTorch on 5 images: max abs difference {difference:.2e}")
        return 0
    from byol.reporting.export import export

    written = export(
        args.source, args.dataset, args.split, args.queries_per_class, args.set or [], args.out
    )
    for path in written:
        print(f"written: {path}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from byol.reporting.embed import embed

    for path in embed(args.source, args.folder, args.out, args.set or []):
        print(f"written: {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from byol.reporting.html_report import write_report

    path = write_report(args.run_dir, args.out, args.points, args.set or [])
    print(f"written: {path}")
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from pathlib import Path

    from byol.reporting.learning_curves import curves_table, parse_recipe, plot_curves

    recipes = [parse_recipe(text) for text in args.recipe]
    print(curves_table(recipes, args.margin), end="")
    print(f"written: {plot_curves(recipes, args.margin, Path(args.out))}")
    return 0


def add_outputs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write embeddings (.npy) and a nearest-neighbour picture, or (--format onnx) the "
        "encoder as ONNX",
    )
    p.add_argument("source", metavar="RUN_DIR_OR_ENCODER")
    p.add_argument(
        "--format",
        choices=["embeddings", "onnx"],
        default="embeddings",
        help="onnx: encoder.onnx with a dynamic batch axis, checked with onnxruntime",
    )
    p.add_argument("--dataset", help="dataset to embed (default: the pretraining one)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--queries-per-class", type=int, default=2)
    p.add_argument("--out", help="output folder (default: RUN_DIR/export)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "embed", help="embed every image of a folder: embeddings.npy + files.txt (relative paths)"
    )
    p.add_argument("source", metavar="RUN_DIR_OR_ENCODER")
    p.add_argument(
        "folder",
        metavar="FOLDER",
        help="images, flat or in sub-folders; or tar shards or hf:NAME (their train split)",
    )
    p.add_argument("--out", help="output folder (default: RUN_DIR/embed/<folder name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. device=cpu")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("report", help="write one self-contained HTML page about a run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="output file (default: RUN_DIR/report.html)")
    p.add_argument(
        "--points", type=int, default=2000, help="test images in the embedding map (0: no map)"
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. device=cpu")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "curves",
        help="learning curves of several runs: kNN against steps and minutes, mean and spread "
        "over seeds, against raw pixels",
    )
    p.add_argument(
        "--recipe",
        action="append",
        required=True,
        metavar="LABEL=RUN_DIR[,RUN_DIR...]",
        help="one recipe's runs (its seeds); repeat for each recipe",
    )
    p.add_argument(
        "--margin", type=float, default=0.0, help="kNN points above raw pixels to look for"
    )
    p.add_argument("--out", default="curves.png", help="the picture (PNG)")
    p.set_defaults(func=cmd_curves)
