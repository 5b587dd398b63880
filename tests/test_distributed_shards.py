"""`byol pretrain` on tar shards under torchrun, two gloo processes on this CPU: each rank reads
its own shards, the two ranks' images are disjoint, and together they are every image of the
epoch but the remainder the run states (the ranks' imbalance and the last partial batch).

Which samples each rank decodes is recorded by a ``sitecustomize`` module put on the ranks'
path: it wraps ``TarShards.decode`` to append the rank and the sample's shard and key to a file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from byol import distributed
from byol.data import TensorImageDataset
from byol.data.info import DatasetInfo
from byol.presets import preset
from byol.run_folder import CHECKPOINT
from byol.training.stream_plan import StreamPlan, pieces_by_rank

pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")

from byol.data.shard_writer import write_shards  # noqa: E402

IMAGES, SHARD_SIZE, BATCH = 128, 20, 16
RECORDER = """
import os

if os.environ.get("BYOL_TEST_READS"):
    from byol.data import shards

    decode = shards.TarShards.decode

    def recorded(self, record):
        with open(os.environ["BYOL_TEST_READS"], "a") as out:
            out.write(f"{os.environ.get('RANK', '-')} {shards.record_name(record)}\\n")
        return decode(self, record)

    shards.TarShards.decode = recorded
"""
SETTINGS = dict(
    backbone="resnet18-narrow",
    image_size=16,
    batch_size=BATCH,
    epochs=1,
    projector_hidden_dim=32,
    predictor_hidden_dim=32,
    projection_dim=16,
    threads=1,
    num_workers=0,
    precision="fp32",
    predictor_warmup_steps=0,
    schedule_epochs=0,
    train_subset=0,
    knn_bank_subset=0,
    knn_references=False,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ranks_read_their_own_shards(tmp_path):
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (IMAGES, 3, 20, 20), dtype=torch.uint8, generator=generator)
    source = TensorImageDataset(images, torch.arange(IMAGES) % 4)
    info = DatasetInfo("noise", ["a", "b", "c", "d"], (0.5,) * 3, (0.25,) * 3, False)
    write_shards(source, None, info, tmp_path / "shards", SHARD_SIZE)
    counts = [SHARD_SIZE] * (IMAGES // SHARD_SIZE) + [IMAGES % SHARD_SIZE]

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(RECORDER)
    reads = tmp_path / "reads.txt"
    repo = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ,
        PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{repo}",
        OMP_NUM_THREADS="1",
        BYOL_TEST_READS=str(reads),
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(free_port()), "-m", "byol", "pretrain", "--quiet"]
    command += ["--preset", "fashion-mnist", "--run-dir", str(tmp_path / "run")]
    for key, value in {**SETTINGS, "dataset": str(tmp_path / "shards")}.items():
        command += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    launched = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["world_size"] == 2

    samples: dict[str, list[str]] = defaultdict(list)
    for line in reads.read_text().splitlines():
        rank, name = line.split(" ", 1)
        samples[rank].append(name)
    assert set(samples) == {"0", "1"}  # decoded by the ranks only, none by the launcher

    config = preset("fashion-mnist").replace(**SETTINGS)
    plan = StreamPlan(counts, config, distributed.Ranks(0, 2))
    shard_of = {f"train-{i:06d}.tar": i for i in range(len(counts))}
    read_by = {
        rank: {shard_of[Path(name.rsplit(":", 1)[0]).name] for name in names}
        for rank, names in samples.items()
    }
    for rank, names in samples.items():
        assert len(names) == len(set(names)) == plan.steps_per_epoch * BATCH // 2  # each once
        assert read_by[rank] == set(pieces_by_rank(counts, 2)[int(rank)])  # its own shards
    assert not set(samples["0"]) & set(samples["1"]) and not read_by["0"] & read_by["1"]
    assert len(set(samples["0"]) | set(samples["1"])) == IMAGES - plan.left_over
    assert 0 < plan.left_over < SHARD_SIZE  # this layout leaves some out, less than a shard
