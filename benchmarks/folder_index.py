"""Indexing a folder of a million image files: the walk, the dataset built on it, the index kept
beside a run written, read back alone and read back into a dataset (checked not to walk again),
the memory the dataset's list of files takes per million files and each step's peak resident
memory.

    python benchmarks/folder_index.py --root /tmp/byol-million --files 1000000

The files are made once under ``--root`` (on local disk, never in the repository): ``--classes``
class folders of tiny PNGs, every file the same few bytes, since indexing reads no image. Each
measurement runs in a fresh process (``--only``), so that no earlier one warms Python's caches;
the page cache stays warm from making the files unless ``--drop-caches`` (root only) empties it
before each. Making a million files takes minutes and about 4 GB of inodes and blocks.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from byol.data import ImageFolderDataset, folder_index  # noqa: E402
from byol.data.folder_index import RACY_NS, image_names, walk  # noqa: E402

STEPS = ("walk", "dataset", "index write", "index names", "index read", "memory")


def make_folder(root: Path, files: int, classes: int) -> Path:
    """``files`` PNGs in ``classes`` folders under root/train, once per argument pair."""
    folder = root / f"folder-{files}-{classes}" / "train"
    done = folder.parent / ".complete"
    if done.exists():
        return folder
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (120, 60, 30)).save(buffer, format="PNG")
    data = buffer.getvalue()
    per_class = -(-files // classes)
    started = time.perf_counter()
    for c in range(classes):
        directory = folder / f"class{c:04d}"
        directory.mkdir(parents=True, exist_ok=True)
        for i in range(c * per_class, min((c + 1) * per_class, files)):
            with open(directory / f"{i:07d}.png", "wb") as out:
                out.write(data)
    done.write_text(f"{files}\n")
    print(f"made {files} files in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    # A directory changed this close to a walk is walked again (folder_index.RACY_NS): wait, so
    # that the index written below is one a later run trusts, as it would be for a user's folder.
    time.sleep(RACY_NS / 1e9 + 0.1)
    return folder


def measure(step: str, folder: Path, index_dir: Path) -> dict:
    """One measurement, in this process."""
    started = time.perf_counter()
    if step == "walk":
        count = len(walk(folder)[0])
    elif step == "dataset":  # what load_datasets(in_memory=False) does before reading images
        count = len(ImageFolderDataset(folder))
    elif step == "index write":  # the first load of a run: a walk, its index saved
        count = len(image_names(folder, index_dir))
        result = {"step": step, "files": count, "seconds": time.perf_counter() - started}
        size = folder_index.index_path(index_dir, folder).stat().st_size
        return {**result, "max_rss": max_rss(), "index_bytes": size}
    elif step in ("index names", "index read"):  # the kept index alone; a resume or an eval
        walks = []
        walk_folder = folder_index.walk
        folder_index.walk = lambda path: walks.append(path) or walk_folder(path)
        if step == "index names":
            count = len(image_names(folder, index_dir))
        else:
            count = len(ImageFolderDataset(folder, index_dir=index_dir))
        result = {"step": step, "files": count, "seconds": time.perf_counter() - started}
        return {**result, "walks": len(walks), "max_rss": max_rss()}
    else:  # the list of (path, label) pairs a dataset holds, traced apart from the timings
        tracemalloc.start()
        dataset = ImageFolderDataset(folder)
        held, peak = tracemalloc.get_traced_memory()
        count = len(dataset)
        return {"step": step, "files": count, "held_bytes": held, "peak_bytes": peak}
    seconds = time.perf_counter() - started
    return {"step": step, "files": count, "seconds": seconds, "max_rss": max_rss()}


def max_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="where the folder is made once")
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--drop-caches", action="store_true", help="cold page cache (root only)")
    parser.add_argument("--only", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--index-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = make_folder(args.root, args.files, args.classes)
    if args.only:
        print(json.dumps(measure(args.only, folder, args.index_dir)))
        return
    results = []
    with tempfile.TemporaryDirectory() as index_dir:
        for step in STEPS:
            if args.drop_caches:
                drop_caches()
            command = [sys.executable, __file__, "--root", str(args.root), "--only", step]
            command += ["--files", str(args.files), "--classes", str(args.classes)]
            command += ["--index-dir", index_dir]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    per_million = 1e6 / args.files
    print(f"{args.files} files in {args.classes} folders under {folder}, {os.cpu_count()} CPUs")
    for r in results:
        if "seconds" in r:
            seconds, rss = r["seconds"], r["max_rss"] / 2**20
            print(
                f"  {r['step']:12s} {seconds:7.2f} s ({seconds * per_million:.1f} s per million), "
                f"process peak {rss:.0f} MiB (torch loaded)"
            )
            if "index_bytes" in r:
                print(f"  {'':12s} the index file: {r['index_bytes'] / 2**20:.1f} MiB")
        else:
            print(
                f"  {r['step']:12s} {r['held_bytes'] / 2**20:7.1f} MiB held, "
                f"{r['peak_bytes'] / 2**20:.1f} MiB peak "
                f"({r['held_bytes'] * per_million / 2**20:.0f} MiB per million files)"
            )
    if any(r.get("walks") for r in results):
        sys.exit("reading the index walked the folder again: the kept index was not used")
    print("  a second load (a resume, an eval) read the kept index: the folder was not walked")


if __name__ == "__main__":
    main()
