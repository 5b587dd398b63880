"""Evaluation on streaming sources: `byol eval all` on tar shards written by `byol shards` from a
labelled folder scores kNN as on the folder itself (the same images, read in another order), and
runs the linear probe (both modes) and fine-tuning without random access, as it does on a streamed
Hugging Face dataset; a stream's subset yields exactly its chosen items on every pass, in a new
order each time, held in memory when it fits; a stream within train_images is scored whole, a
larger one refused in one line."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol.backbones import build_backbone
from byol.checkpoint import save_encoder
from byol.cli import main
from byol.data import StreamingSource, StreamSubset, load_datasets
from byol.errors import DatasetError
from byol.evaluation.protocols import Evaluation
from byol.presets import preset
from byol.run_folder import save_config

# datasets reads its cache place once, at import: never the user's home from a test.
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="byol-test-hf-"))
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SMALL = [
    "device=cpu",
    "precision=fp32",
    "eval_batch_size=100",
    "linear_epochs=2",
    "linear_lrs=0.1,1.0",
    "label_fractions=0.1,0.5",
    "finetune_epochs=2,1",
    "finetune_batch_size=40",
    "knn_ks=5,20",
]


def sets(items: list[str]) -> list[str]:
    return sum((["--set", item] for item in items), [])


def write_images(root: Path) -> None:
    """200 training and 60 test images in train/ and test/, one folder a class: real
    Fashion-MNIST where the Debian package is installed, else small images whose class is their
    colour, with noise."""
    if (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        train, test, _ = load_datasets("fashion-mnist")
        generator = torch.Generator().manual_seed(0)
        for split, dataset, count in (("train", train, 200), ("test", test, 60)):
            for index in torch.randperm(len(dataset), generator=generator)[:count].tolist():
                image, label = dataset[index]
                folder = root / split / f"c{label}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{index}.png")
        return
    rng = np.random.default_rng(0)
    colours = np.array([[220, 40, 40], [40, 200, 60], [50, 60, 210], [200, 200, 40]])
    for split, count in (("train", 200), ("test", 60)):
        for i in range(count):
            label = i % len(colours)
            noise = rng.integers(-40, 40, (20, 20, 3))
            pixels = np.clip(colours[label] + noise, 0, 255).astype(np.uint8)
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(run folder, labelled image folder, the same folder as tar shards of 30 samples)."""
    pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")
    root = tmp_path_factory.mktemp("streams")
    write_images(root / "folder")
    shards = root / "shards"
    assert main(["shards", str(root / "folder"), str(shards), "--shard-size", "30", "--quiet"]) == 0
    run = root / "run"
    run.mkdir()
    config = preset("fashion-mnist").replace(
        dataset=str(root / "folder"), backbone="resnet18-narrow", image_size=28
    )
    save_config(run, config)
    torch.manual_seed(1)
    encoder, _ = build_backbone(config.model.backbone, config.model.cifar_stem)
    model = config.model
    save_encoder(run / "encoder.safetensors", encoder, model.backbone, model.cifar_stem)
    return run, root / "folder", shards


def rows(run: Path, dataset: Path | str) -> dict:
    return json.loads((run / "results.json").read_text())["datasets"][str(dataset)]


def test_eval_all_on_shards_streams_them_and_scores_knn_as_on_the_folder(sources, capsys):
    run, folder, shards = sources
    ev = Evaluation(run, None, [*SMALL, f"dataset={shards}"])
    assert ev.train.streaming and ev.test.streaming  # never decoded into memory as a whole
    assert main(["eval", "all", str(run), *sets([*SMALL, f"dataset={shards}"])]) == 0
    assert main(["eval", "knn", str(run), *sets([*SMALL, f"dataset={folder}"])]) == 0
    streamed, folder_rows = rows(run, shards), rows(run, folder)
    assert set(streamed) == {"byol", "random-init", "supervised"}
    for key in ("knn5_top1", "knn20_top1", "knn20_top5"):
        assert streamed["byol"][key] == pytest.approx(folder_rows["byol"][key], abs=1e-6)
    assert 0 <= streamed["byol"]["linear_top1"] <= 100
    for method in ("byol", "supervised"):
        assert {"finetune_10pct_top1", "finetune_50pct_top1"} <= set(streamed[method])
    subsets = json.loads(next((run / "subsets").glob("shards-10pct-seed0.json")).read_text())
    counts = subsets["class_counts"]
    assert subsets["train_size"] == 200 and sum(counts) == 20 and max(counts) - min(counts) <= 1
    assert "| BYOL |" in capsys.readouterr().out


def test_the_paper_linear_mode_trains_on_crops_read_from_the_stream(sources):
    run, _, shards = sources
    argv = ["eval", "linear", str(run), *sets([*SMALL, f"dataset={shards}", "linear_mode=paper"])]
    assert main(argv) == 0
    values = rows(run, shards)["byol"]
    assert 0 <= values["linear_paper_top1"] <= 100 and set(values["linear_paper_val_top1"]) == {
        "0.1",
        "1.0",
    }


def test_a_stream_is_scored_whole_within_train_images_and_refused_beyond(sources):
    run, _, shards = sources
    whole = Evaluation(run, None, [*SMALL, f"dataset={shards}", "train_images=200"])
    assert not whole.narrowed and whole.train.streaming  # 200 images: all of them, no subset
    with pytest.raises(DatasetError) as refused:
        Evaluation(run, None, [*SMALL, f"dataset={shards}", "train_images=100"])
    message = str(refused.value)
    named = json.loads((shards / "index.json").read_text())["name"]  # the data, not a wrapper
    assert f"a subset of 100 items needs random access by index, but {named} is a stream" in message
    assert "set train_images=0 (byol ablate: eval_train_images=0)" in message
    assert "\n" not in message


class Numbered(StreamingSource):
    """A stream of 1x1 images whose pixel is the item's position, counting its reads."""

    def __init__(self, count: int) -> None:
        self.count, self.reads = count, [0]  # shared with the copies a transform makes

    def stream(self) -> Iterator[tuple[torch.Tensor, int]]:
        self.reads[0] += 1
        for i in range(self.count):
            yield torch.full((3, 1, 1), i, dtype=torch.uint8), i % 3


def positions(passes: list[list[tuple[torch.Tensor, int]]]) -> list[list[int]]:
    return [[int(image[0, 0, 0]) for image, _ in one] for one in passes]


@pytest.mark.parametrize("hold_bytes", [0, 10**6])
def test_a_stream_subset_yields_its_items_in_a_new_order_each_pass(hold_bytes):
    stream = Numbered(200)
    chosen = np.array([3, 8, 50, 51, 52, 120, 199, 0, 77, 140])
    subset = StreamSubset(stream, chosen, lambda image: image, seed=0, buffer=4)
    subset.hold_bytes = hold_bytes
    passes = positions([list(subset) for _ in range(3)])
    assert len(subset) == 10 and all(sorted(p) == sorted(chosen.tolist()) for p in passes)
    assert len({tuple(p) for p in passes}) == 3  # reshuffled on every pass
    assert stream.reads[0] == (3 if hold_bytes == 0 else 1)  # held: the stream is read once
    again = StreamSubset(Numbered(200), chosen, lambda image: image, seed=0, buffer=4)
    again.hold_bytes = hold_bytes
    assert positions([list(again) for _ in range(3)]) == passes  # seeded


def test_fine_tuning_on_a_streamed_hugging_face_dataset(sources, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the hf extra (datasets) is not installed")
    run, folder, _ = sources
    classes = sorted(p.name for p in (folder / "train").iterdir())
    for split in ("train", "test"):
        files = sorted((folder / split).rglob("*.png"))
        columns = {
            "image": [{"bytes": f.read_bytes(), "path": None} for f in files],
            "label": [classes.index(f.parent.name) for f in files],
        }
        features = datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)}
        )
        table = datasets.Dataset.from_dict(columns, features=features)
        table.to_parquet(str(tmp_path / f"{split}-00000-of-00001.parquet"))
    name = f"hf:{tmp_path}"
    overrides = [*SMALL, f"dataset={name}", "hf_streaming=true", "label_fractions=0.1"]
    overrides += ["finetune_epochs=1"]
    assert Evaluation(run, None, overrides).train.streaming
    assert main(["eval", "finetune", str(run), *sets(overrides)]) == 0
    assert "finetune_10pct_top1" in rows(run, name)["byol"]
