"""Hugging Face datasets (dataset=hf:NAME) from local data only: a save_to_disk folder and
parquet files read as the images they hold, in memory, row by row or streamed; a missing column
refused in one line; pretraining and `byol shards` on them."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

# datasets reads its cache place once, at import: never the user's home from a test.
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="byol-test-hf-"))
datasets = pytest.importorskip("datasets", reason="the hf extra (datasets) is not installed")

from byol.data import DatasetError, HFOptions, load_datasets  # noqa: E402
from byol.errors import one_line  # noqa: E402

OPTIONS = HFOptions(image_column="picture", label_column="kind")


def pictures(n: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(n)], [
        i % 3 for i in range(n)
    ]


def hf_split(n: int, seed: int):  # noqa: ANN201
    images, labels = pictures(n, seed)
    features = datasets.Features(
        {"picture": datasets.Image(), "kind": datasets.ClassLabel(names=["x", "y", "z"])}
    )
    rows = {"picture": [Image.fromarray(a) for a in images], "kind": labels}
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def local(tmp_path_factory):  # noqa: ANN201
    """The same two splits as a save_to_disk folder and as a folder of parquet files."""
    root = tmp_path_factory.mktemp("hf")
    splits = datasets.DatasetDict({"train": hf_split(24, 0), "test": hf_split(9, 1)})
    splits.save_to_disk(str(root / "disk"))
    (root / "parquet").mkdir()
    for name, split in splits.items():
        split.to_parquet(str(root / "parquet" / f"{name}-00000-of-00001.parquet"))
    return root


def expected(n: int, seed: int) -> list[tuple[bytes, int]]:
    images, labels = pictures(n, seed)
    return [
        (torch.from_numpy(a).permute(2, 0, 1).numpy().tobytes(), y)
        for a, y in zip(images, labels, strict=True)
    ]


def items(source) -> list[tuple[bytes, int]]:  # noqa: ANN001
    if source.streaming:
        return [(image.numpy().tobytes(), label) for image, label in source.stream()]
    return [(source[i][0].numpy().tobytes(), source[i][1]) for i in range(len(source))]


@pytest.mark.parametrize("form", ["disk", "parquet"])
@pytest.mark.parametrize("in_memory", [True, False])
def test_a_local_dataset_reads_as_the_images_it_holds(local, form, in_memory):
    train, test, info = load_datasets(f"hf:{local / form}", in_memory=in_memory, hf_options=OPTIONS)
    assert train.in_memory == in_memory and not train.streaming
    assert items(train) == expected(24, 0) and items(test) == expected(9, 1)
    assert info.classes == ["x", "y", "z"] and train.label_array().tolist() == [
        i % 3 for i in range(24)
    ]
    part = train.take(np.array([5, 2]))
    assert items(part) == [expected(24, 0)[5], expected(24, 0)[2]]


def test_a_streamed_dataset_yields_the_same_rows_in_order(local):
    options = HFOptions("train", "test", "picture", "kind", streaming=True)
    train, test, info = load_datasets(f"hf:{local / 'parquet'}", hf_options=options)
    assert train.streaming and items(train) == expected(24, 0) and items(test) == expected(9, 1)
    halves = [list(train.stream_part(p, 2)) for p in range(2)]
    assert len(halves[0]) + len(halves[1]) == 24 and info.classes == ["x", "y", "z"]


def test_a_missing_column_or_split_is_refused_in_one_line(local):
    with pytest.raises(DatasetError) as error:
        load_datasets(f"hf:{local / 'disk'}", hf_options=HFOptions(label_column="kind"))
    message = one_line(error.value)
    assert (
        "no column 'image'" in message and "picture, kind" in message and "image_column=" in message
    )
    with pytest.raises(DatasetError, match="no split 'validation'"):
        load_datasets(
            f"hf:{local / 'disk'}", hf_options=HFOptions("validation", "", "picture", "kind")
        )


def test_pretraining_on_a_hf_dataset_and_writing_it_as_shards(local, tmp_path):
    from byol.presets import preset
    from byol.training.loop import pretrain

    name = f"hf:{local / 'disk'}"
    config = preset("fashion-mnist").replace(
        dataset=name,
        image_column="picture",
        label_column="kind",
        backbone="resnet18-narrow",
        batch_size=8,
        epochs=1,
        num_workers=0,
        image_size=16,
        knn_bank_subset=0,
        knn_references=False,
        precision="fp32",
        train_subset=0,
        projector_hidden_dim=32,
        predictor_hidden_dim=32,
        projection_dim=16,
        predictor_warmup_steps=0,
    )
    result = pretrain(config, tmp_path / "run", quiet=True)
    assert result.steps == 3 and (tmp_path / "run" / "encoder.safetensors").is_file()
    pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")
    from byol.data.shard_writer import write_shards

    train, test, info = load_datasets(name, in_memory=False, hf_options=OPTIONS)
    write_shards(train, test, info, tmp_path / "shards", 10)
    back, back_test, _ = load_datasets(str(tmp_path / "shards"))
    assert sorted(items(back)) == sorted(expected(24, 0)) and sorted(items(back_test)) == sorted(
        expected(9, 1)
    )
