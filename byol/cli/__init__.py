"""The `byol` command: pretrain, eval, export, embed, report, ablate, reproduce, presets, config,
models, shards.

byol pretrain                       # the CPU default: Fashion-MNIST
torchrun --nproc_per_node 8 -m byol pretrain --preset imagenet-paper   # docs/distributed.md

One module per group of commands, each adding its sub-commands to the parser:

    train.py      pretrain, presets, config, models
    evaluate.py   eval, ablate, reproduce
    outputs.py    export (embeddings, ONNX), embed, report
    shards.py     shards (a dataset as WebDataset tar shards)
"""

from __future__ import annotations

import argparse
import errno
import sys

from byol.errors import ByolError, RunInterrupted, allocation_failure, one_line

# What each command's memory scales with, named when it runs out of memory (set by its parser).
DEFAULT_MEMORY_HINT = "lower --set eval_batch_size (or data.image_size)"


def build_parser() -> argparse.ArgumentParser:
    # The command modules import torch: imported here, inside main's guard, so that a Ctrl-C
    # during that import (seconds on a cold start) ends in one line too.
    from byol.cli import evaluate, outputs, shards, train

    parser = argparse.ArgumentParser(prog="byol", description="BYOL self-supervised pretraining.")
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_pretrain(sub)
    evaluate.add_ablate(sub)
    evaluate.add_reproduce(sub)
    train.add_catalog(sub)
    evaluate.add_eval(sub)
    outputs.add_outputs(sub)
    shards.add_shards(sub)
    return parser


def _os_error(error: OSError) -> str:
    where = error.filename or "while writing"
    if error.errno == errno.ENOSPC:  # checkpoints say it themselves; this is for other outputs
        return f"no space left on the device ({where}); free some space, then resume with --resume."
    return f"{error.strerror or error} ({where}); check the path and its permissions."


def _runtime_error(error: BaseException, memory_hint: str) -> str | None:
    """One line for the failures a user's settings or machine cause deep inside torch: an
    allocation too large, and torch.compile failing; None for any other error (a bug: its
    traceback is the report)."""
    requested = allocation_failure(error)
    if requested is not None:
        asked = f" (an allocation of {requested})" if requested else ""
        return f"out of memory{asked}; {memory_hint}."
    if type(error).__module__.startswith(("torch._dynamo", "torch._inductor")):
        first = one_line(error).split("\\n")[0][:200]
        return f"torch.compile failed ({first}); run without it: --set compile=false."
    return None


def main(argv: list[str] | None = None) -> int:
    # A path that is not UTF-8 (legal on POSIX) is printed escaped, as stderr prints it, instead
    # of failing to encode under a strict UTF-8 locale.
    if callable(getattr(sys.stdout, "reconfigure", None)):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        parser = build_parser()
    except KeyboardInterrupt:
        print("byol: interrupted.", file=sys.stderr)
        return 130
    from byol.distributed import env_rank

    args = parser.parse_args(argv)
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
    except (RuntimeError, MemoryError) as error:
        line = _runtime_error(error, getattr(args, "memory_hint", DEFAULT_MEMORY_HINT))
        if line is None:
            raise
        print(f"byol: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("byol: interrupted.", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
