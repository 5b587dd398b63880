"""Images per second per CPU core that each data path delivers to pretraining (view pairs ready
for the step, no model): in memory, a folder of files, tar shards and a Hugging Face dataset, on
photo-size JPEGs, so that one can tell how many cores feed a GPU at a given rate.

    python benchmarks/data_paths.py --cache /tmp/byol-bench --photos 2000 --image-size 224 \\
        --workers 1 2 4 --epochs 1 --rounds 3

The photos are benchmarks/folder.py's: CIFAR-10 JPEG copy images ($BYOL_SHARED_DIR/datasets)
upscaled to random sides between ``--min-side`` and ``--max-side`` and saved as JPEG (quality 90),
made once under ``--cache``. From them, once each: the same JPEG bytes as tar shards (``byol
shards``' writer, ``--shard-size`` samples each) and as a Hugging Face ``save_to_disk`` dataset
(the ``hf`` extra; skipped without it), and, for the in-memory path, the photos resized to
``--memory-side`` px squares (a folder of same-size images is held in memory as one uint8 tensor,
its views made a batch at a time). Each path is built as ``byol pretrain`` builds it
(``training/run_context.py``) on the CPU device, and for each worker count ``--epochs`` whole
epochs of it are drawn (DataLoader workers start and stop with each, as in a run); the paths take
turns over ``--rounds``. ``--paths`` times only some of them (e.g. ``--paths folder shards``).

Per core is images per CPU-second: the CPU time of this process and its DataLoader workers
(counted once the workers have exited) over the images delivered, so a path that keeps 3 cores
busy at 300 images/s delivers 100 per core. The wall-clock rate is printed beside it.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from folder import photo_folder  # noqa: E402

from byol import distributed  # noqa: E402
from byol.data import load_datasets  # noqa: E402
from byol.presets import preset  # noqa: E402
from byol.training.run_context import _data  # noqa: E402  (the sources as pretraining builds them)

PATHS = ("in memory", "folder", "shards", "hf")


def same_size_folder(photos: Path, side: int) -> Path:
    """The photos resized to ``side`` px squares, in their class folders: held in memory."""
    folder = photos.with_name(f"{photos.name}-square{side}")
    if (folder / ".complete").exists():
        return folder
    for path in sorted(photos.rglob("*.jpg")):
        out = folder / path.parent.name / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(
                out, quality=90
            )
    (folder / ".complete").write_text("done\n")
    return folder


def shards_of(photos: Path, shard_size: int) -> Path | None:
    """The photos' own JPEG bytes as tar shards; None without the shards extra."""
    try:
        from byol.data.shard_writer import write_shards
    except ImportError:
        return None
    out = photos.with_name(f"{photos.name}-shards{shard_size}")
    if not (out / "index.json").exists():
        train, test, info = load_datasets(str(photos), in_memory=False)
        write_shards(train, test, info, out, shard_size)
    return out


def hf_of(photos: Path) -> Path | None:
    """The photos' JPEG bytes as a ``save_to_disk`` dataset; None without the hf extra."""
    try:
        import datasets
    except ImportError:
        return None
    out = photos.with_name(f"{photos.name}-hf")
    if (out / "state.json").exists():
        return out
    files = sorted(photos.rglob("*.jpg"))
    classes = sorted({f.parent.name for f in files})
    rows = {
        "image": [{"bytes": f.read_bytes(), "path": None} for f in files],
        "label": [classes.index(f.parent.name) for f in files],
    }
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)}
    )
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(out))
    return out


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have exited (the DataLoader workers)."""
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def deliver(epochs, count: int) -> tuple[int, float, float]:  # noqa: ANN001
    """(images, wall seconds, CPU seconds) of ``count`` whole epochs drawn one after another.
    Whole epochs, because DataLoader workers make batches ahead of the one taken: at an epoch's
    end they have made exactly its batches, and they exit, so their CPU time is counted."""
    images = 0
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    for epoch in range(count):
        for micro_batches in epochs.epoch(epoch, 0):
            images += sum(len(pair[0]) for pair in micro_batches)
        gc.collect()  # the finished loader's workers are joined
    return images, time.perf_counter() - start_wall, cpu_seconds() - start_cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example:\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cache", type=Path, required=True, help="where the data is made once")
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--min-side", type=int, default=256)
    parser.add_argument("--max-side", type=int, default=500)
    parser.add_argument("--memory-side", type=int, default=256, help="in-memory path's side")
    parser.add_argument("--shard-size", type=int, default=250, help="samples per tar shard")
    parser.add_argument("--image-size", type=int, default=224, help="the views' side")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--epochs", type=int, default=1, help="whole epochs per turn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--paths", nargs="+", choices=PATHS, default=list(PATHS), help="the paths to time"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    photos = photo_folder(args.cache, args.photos, (args.min_side, args.max_side))
    sources = {"in memory": str(same_size_folder(photos, args.memory_side))}
    sources["folder"] = str(photos)
    shards, hf = shards_of(photos, args.shard_size), hf_of(photos)
    if shards is not None:
        sources["shards"] = str(shards)
    if hf is not None:
        sources["hf"] = f"hf:{hf}"
    missing = {"shards": "the shards extra", "hf": "the hf extra"}
    for name, extra in missing.items():
        if name not in sources and name in args.paths:
            print(f"{name}: skipped ({extra} is not installed)")
    sources = {name: dataset for name, dataset in sources.items() if name in args.paths}

    base = preset("stl10").replace(
        image_size=args.image_size,
        batch_size=args.batch_size,
        threads=args.threads,
        train_subset=0,
        knn_bank_subset=0,
        precision="fp32",
        seed=0,
    )
    cpu, one = torch.device("cpu"), distributed.Ranks()
    turns = []  # (path, workers, epochs); the in-memory path has no workers
    for path, dataset in sources.items():
        for workers in [0] if path == "in memory" else args.workers:
            config = base.replace(dataset=dataset, num_workers=workers)
            _, _, epochs, _ = _data(config, one, cpu, "fp32", None)
            turns.append((path, workers, epochs))
    rates: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for path, workers, epochs in turns:
            images, wall, cpu_time = deliver(epochs, args.epochs)
            rates.setdefault((path, workers), []).append((images / wall, images / cpu_time))

    print(
        f"{args.photos} photos of {args.min_side}-{args.max_side} px, views at {args.image_size} "
        f"px, batch {args.batch_size}, {args.threads} torch thread(s) per process, median of "
        f"{args.rounds} rounds of {args.epochs} epoch(s) each (worker start-up included)\n"
    )
    print("| path | workers | images/s | images/s per CPU core | per core vs folder |")
    print("|---|---:|---:|---:|---:|")
    folder_rate = {
        w: statistics.median(r[1] for r in rates[("folder", w)])
        for w in args.workers
        if ("folder", w) in rates
    }
    for (path, workers), values in rates.items():
        wall, per_core = (statistics.median(v[i] for v in values) for i in (0, 1))
        versus = f"{per_core / folder_rate[workers]:.2f}x" if workers in folder_rate else "-"
        shown = "none (views batched)" if workers == 0 else str(workers)
        print(f"| {path} | {shown} | {wall:.0f} | {per_core:.0f} | {versus} |")


if __name__ == "__main__":
    main()
