"""Streaming epochs from tar shards: every image once per epoch over all ranks and workers (but
the left-over, which is said), a seeded order, and a run stopped mid-epoch that resumes on the
same images in the same order as an uninterrupted run, down to the trained weights."""

from __future__ import annotations

import io
import itertools
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol import distributed
from byol.data import load_datasets
from byol.presets import preset

pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")

from byol.training.stream_epochs import StreamEpochs  # noqa: E402
from byol.training.stream_plan import chunk_schedule, pieces_by_rank  # noqa: E402

IMAGES = 70


def marked_png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def marked_shards(
    root: Path, shard_size: int = 9, broken: tuple[int, ...] = (), test: int = 0
) -> Path:
    """Shards of IMAGES 4x4 PNGs, image i all of value i, label i % 3 (not a PNG for i in
    ``broken``), and ``test`` more in a test shard; counted from their headers (no index)."""
    out = root / "shards"
    out.mkdir()
    ranges = [
        (f"train-{s // shard_size:03d}", s, min(s + shard_size, IMAGES))
        for s in range(0, IMAGES, shard_size)
    ]
    for name, start, stop in ranges + ([("test-000", IMAGES, IMAGES + test)] if test else []):
        with tarfile.open(out / f"{name}.tar", "w") as tar:
            for i in range(start, stop):
                image = b"not a png" if i in broken else marked_png(i)
                for suffix, data in (("png", image), ("cls", str(i % 3).encode())):
                    member = tarfile.TarInfo(f"{i:04d}.{suffix}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
    return out


class RawViews:
    """Both views the image itself, so a batch shows which images it holds."""

    def many(self, images: list[torch.Tensor], generators: list[torch.Generator]) -> tuple:
        stacked = torch.stack(images)
        return stacked, stacked


def epochs_of(shards: Path, rank: int = 0, world_size: int = 1, **changes) -> StreamEpochs:
    source, _, info = load_datasets(str(shards))
    settings = dict(batch_size=8, num_workers=2, shuffle_buffer=5, train_subset=0, image_size=8)
    config = preset("fashion-mnist").replace(**{**settings, **changes})
    epochs = StreamEpochs(
        source, config, info, torch.device("cpu"), distributed.Ranks(rank, world_size)
    )
    epochs.views = RawViews()
    return epochs


def seen(steps) -> list[list[int]]:  # noqa: ANN001
    """The images of each step, in order."""
    return [[int(v) for pair in step for v in pair[0][:, 0, 0, 0]] for step in steps]


def test_the_schedule_takes_every_position_once_in_a_round_robin():
    lengths = [5, 0, 12, 3]
    full = chunk_schedule(lengths, 4, 0, sum(lengths))
    assert full[:3] == [(0, 0, 4), (2, 0, 4), (3, 0, 3)] and full[-1] == (2, 8, 12)
    for part, length in enumerate(lengths):
        positions = [p for q, a, b in full if q == part for p in range(a, b)]
        assert positions == list(range(length))
    flat = [(q, p) for q, a, b in full for p in range(a, b)]
    for skip, total in ((0, 20), (6, 20), (7, 11), (19, 20)):
        cut = chunk_schedule(lengths, 4, skip, total)
        assert [(q, p) for q, a, b in cut for p in range(a, b)] == flat[skip:total]


def test_pieces_are_balanced_across_ranks_by_count():
    counts = [9, 9, 9, 9, 9, 9, 9, 7]
    ranks = pieces_by_rank(counts, 3)
    assert sorted(i for r in ranks for i in r) == list(range(8))
    held = [sum(counts[i] for i in r) for r in ranks]
    assert max(held) - min(held) <= max(counts)


def test_every_image_is_seen_once_per_epoch_over_ranks_and_workers(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    shards = marked_shards(tmp_path)  # 8 shards: seven of 9 images, one of 7
    runs = [epochs_of(shards, rank, 2) for rank in range(2)]
    steps = runs[0].plan.steps_per_epoch
    assert steps == runs[1].plan.steps_per_epoch == 8  # 35 and 35 images per rank, 4 a step
    per_rank = [sum(seen(run.epoch(0, 0)), []) for run in runs]
    everything = per_rank[0] + per_rank[1]
    assert len(everything) == len(set(everything)) == steps * 8 == IMAGES - runs[0].plan.left_over
    assert "6 of the 70 images are left out of each epoch" in caplog.text
    # Each rank keeps its shards; another epoch is another order of them.
    source = runs[0].source
    held = [
        {int(source.decode(r)[0][0, 0, 0]) for i in pieces for r in source.read_piece(i)}
        for pieces in runs[0].plan.by_rank
    ]
    assert not held[0] & held[1] and len(held[0] | held[1]) == IMAGES
    again = [sum(seen(run.epoch(1, 0)), []) for run in runs]
    assert again[0] != per_rank[0]
    assert all(set(per_rank[r]) <= held[r] and set(again[r]) <= held[r] for r in range(2))
    assert [sum(seen(epochs_of(shards, rank, 2).epoch(0, 0)), []) for rank in range(2)] == per_rank


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stopped_epoch_resumes_on_the_same_images_in_the_same_order(tmp_path, workers):
    shards = marked_shards(tmp_path, broken=(5, 40))
    full = seen(epochs_of(shards, num_workers=workers).epoch(3, 0))
    assert len(full) == 8 and len({i for step in full for i in step}) > 50
    stopped = epochs_of(shards, num_workers=workers)
    first = seen(itertools.islice(stopped.epoch(3, 0), 3))  # killed after three steps
    resumed = epochs_of(shards, num_workers=workers)
    rest = seen(resumed.epoch(3, 3))
    assert first + rest == full
    assert all(len(step) == 8 for step in full)
    assert {5, 40}.isdisjoint(i for step in full for i in step)  # replaced by readable ones
    names = sorted(resumed.info.unreadable)
    assert [name.rsplit(":", 1)[1] for name in names] == ["0005.png", "0040.png"]


def small_config(shards: Path, **changes):
    settings = dict(
        dataset=str(shards),
        backbone="resnet18-narrow",
        batch_size=8,
        epochs=2,
        warmup_epochs=0.5,
        projector_hidden_dim=32,
        predictor_hidden_dim=32,
        projection_dim=16,
        num_workers=2,
        log_every_steps=1,
        knn_bank_subset=0,
        knn_references=False,
        precision="fp32",
        image_size=16,
        predictor_warmup_steps=0,
        schedule_epochs=0,
        shuffle_buffer=5,
        train_subset=0,
    )
    return preset("fashion-mnist").replace(**{**settings, **changes})


def test_pretraining_on_shards_stopped_and_resumed_matches_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    from byol.cli import main
    from byol.evaluation.protocols import Evaluation
    from byol.training.loop import pretrain

    shards = marked_shards(tmp_path, shard_size=10, test=12)
    config = small_config(shards, epochs=1)
    full = pretrain(config, tmp_path / "full", quiet=True)
    assert full.steps == IMAGES // 8 and full.knn_top1 is not None
    stopped = pretrain(config.replace(max_minutes=1e-9), tmp_path / "cut", quiet=True)
    assert stopped.steps == 1
    resumed = pretrain(config, tmp_path / "cut", resume=True, quiet=True)
    assert resumed.steps == full.steps
    a, b = (load_file(str(tmp_path / run / "encoder.safetensors")) for run in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["unreadable_images"] == []

    # Evaluation reads the shards as it reads the same images in a folder.
    folder = tmp_path / "folder"
    for split, images in (("train", range(IMAGES)), ("test", range(IMAGES, IMAGES + 12))):
        for i in images:
            (folder / split / str(i % 3)).mkdir(parents=True, exist_ok=True)
            (folder / split / str(i % 3) / f"{i:04d}.png").write_bytes(marked_png(i))
    settings = ["device=cpu", "knn_k=5"]
    from_shards = Evaluation(tmp_path / "full", str(shards), settings).knn("byol")
    assert from_shards == Evaluation(tmp_path / "full", str(folder), settings).knn("byol")
    out = tmp_path / "embedded"
    assert main(["embed", str(tmp_path / "full"), str(shards), "--out", str(out)]) == 0
    names = (out / "files.txt").read_text().split()
    assert len(names) == IMAGES and names[0].endswith("train-000.tar:0000")
    assert np.load(out / "embeddings.npy").shape[0] == IMAGES


def _two_ranks_on_shards(rank: int, shards: Path, out: Path) -> None:
    from byol.training.loop import pretrain

    config = small_config(shards, epochs=1, num_workers=0, threads=1)
    with distributed.process_group(torch.device("cpu")):
        pretrain(config, out / "whole", quiet=True)
        pretrain(config.replace(max_minutes=1e-9), out / "cut", quiet=True)
        pretrain(config, out / "cut", resume=True, quiet=True)


def test_two_processes_read_their_own_shards_and_resume_as_one_run(tmp_path):
    from safetensors.torch import load_file
    from test_distributed import run_ranks

    shards = marked_shards(tmp_path, shard_size=5)  # 14 shards: 7 a rank
    run_ranks(_two_ranks_on_shards, shards, tmp_path)
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 8  # 35 images a rank, 4 a step
    a, b = (load_file(str(tmp_path / run / "encoder.safetensors")) for run in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
