"""``byol shards SRC OUT``: any dataset the package reads, written as WebDataset tar shards with
an index of sample counts, to stream from after (``--set dataset=OUT``)."""

from __future__ import annotations

import argparse


def cmd_shards(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from byol.data import HFOptions, load_datasets
    from byol.data.shard_writer import write_shards
    from byol.files import expand_home

    lazy = not args.decode  # files are copied as they are, never decoded
    columns = HFOptions(args.hf_split, args.hf_test_split, args.image_column, args.label_column)
    train, test, info = load_datasets(
        args.source, args.data_dir, args.download, in_memory=not lazy, hf_options=columns
    )
    bars: dict[str, tqdm] = {}

    def progress(split: str, done: int) -> None:
        if split not in bars:
            bars[split] = tqdm(desc=split, unit="img", unit_scale=True, disable=args.quiet)
        bars[split].update(done - bars[split].n)

    out = expand_home(args.out)
    written = write_shards(train, test, info, out, args.shard_size, args.seed, progress)
    for bar in bars.values():
        bar.close()
    for split in written:
        print(f"{split.split}: {split.samples} samples in {len(split.shards)} shards")
    print(f"written: {out} (index.json lists the shards; read them with --set dataset={out})")
    return 0


def add_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "shards",
        help="write a dataset as WebDataset tar shards with an index of sample counts",
    )
    p.add_argument("source", metavar="SRC", help="a dataset name or folder (as --set dataset=)")
    p.add_argument("out", metavar="OUT", help="an empty folder for the shards")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument("--data-dir", help="where SRC lies, as --set data_dir= (default: its place)")
    p.add_argument("--download", action="store_true", help="fetch a torchvision dataset first")
    p.add_argument("--seed", type=int, default=0, help="seeds the order the samples are written in")
    p.add_argument(
        "--decode",
        action="store_true",
        help="decode a folder's images into memory first (default: copy each file's bytes)",
    )
    p.add_argument("--hf-split", default="train", help="hf:NAME: the split to train on")
    p.add_argument("--hf-test-split", default="test", help="hf:NAME: the test split ('' = none)")
    p.add_argument("--image-column", default="image", help="hf:NAME: the column of images")
    p.add_argument("--label-column", default="label", help="hf:NAME: labels ('' = none)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_shards)
