"""Tar shards in and out: `byol shards` writes any source as shards with an index of counts, the
shards read back as the same images and labels (a folder of shards, a brace pattern, with or
without the index), and bad shards end in one line or are skipped and counted."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol.cli import main
from byol.data import DatasetError, TensorImageDataset, load_datasets
from byol.data.info import DatasetInfo
from byol.errors import ByolError, one_line

pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")

from byol.data.shard_writer import write_shards  # noqa: E402


def image_folder(root: Path, train: int = 24, test: int = 9, classes: int = 3) -> Path:
    """A labelled folder of tiny PNGs of random sizes, train/ and test/, one folder a class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            height, width = (int(s) for s in rng.integers(6, 14, 2))
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{split}{i:03d}.png")
    return root


def items(source) -> list[tuple[bytes, int]]:  # noqa: ANN001
    if source.streaming:
        return sorted((image.numpy().tobytes(), label) for image, label in source.stream())
    return sorted((source[i][0].numpy().tobytes(), source[i][1]) for i in range(len(source)))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def tar_of(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_folder_written_as_shards_reads_back_as_the_same_images(tmp_path):
    folder = image_folder(tmp_path / "folder")
    assert main(["shards", str(folder), str(tmp_path / "out"), "--shard-size", "5", "--quiet"]) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [s["samples"] for s in index["splits"]["train"]] == [5, 5, 5, 5, 4]
    assert [s["samples"] for s in index["splits"]["test"]] == [5, 4]
    assert index["classes"] == ["class0", "class1", "class2"]
    train, test, info = load_datasets(str(tmp_path / "out"))
    want_train, want_test, want_info = load_datasets(str(folder), in_memory=False)
    assert train.streaming and train.num_samples == 24 and test.num_samples == 9
    assert items(train) == items(want_train) and items(test) == items(want_test)
    assert (info.classes, info.mean, info.std) == (
        want_info.classes,
        want_info.mean,
        want_info.std,
    )
    # PNG files are stored as their own bytes, not re-encoded.
    with tarfile.open(tmp_path / "out" / "train-000000.tar") as tar:
        names = tar.getnames()
        first = tar.extractfile(names[1]).read()
    assert {n.rsplit(".", 1)[1] for n in names} == {"cls", "png"}
    assert first in {p.read_bytes() for p in (folder / "train").rglob("*.png")}


def test_a_pattern_and_a_folder_without_index_count_the_shards_from_their_headers(tmp_path):
    image_folder(tmp_path / "folder")
    main(["shards", str(tmp_path / "folder"), str(tmp_path / "out"), "--shard-size=7", "--quiet"])
    pattern = str(tmp_path / "out" / "train-{000000..000002}.tar")
    part, _, _ = load_datasets(pattern)
    assert part.pieces() == [7, 7, 7] and len(items(part)) == 21
    (tmp_path / "out" / "index.json").unlink()
    train, test, info = load_datasets(str(tmp_path / "out"))
    assert train.pieces() == [7, 7, 7, 3] and test.pieces() == [7, 2]
    assert info.classes == ["0", "1", "2"] and train.labelled
    assert items(train) == items(load_datasets(str(tmp_path / "folder"), in_memory=False)[0])


def test_an_in_memory_grayscale_set_is_written_as_one_channel_pngs(tmp_path):
    images = torch.randint(0, 256, (10, 1, 5, 5), dtype=torch.uint8).repeat(1, 3, 1, 1)
    source = TensorImageDataset(images, torch.arange(10) % 2)
    info = DatasetInfo("gray", ["a", "b"], (0.5,) * 3, (0.2,) * 3, True)
    write_shards(source, None, info, tmp_path / "out", 4)
    train, test, read_info = load_datasets(str(tmp_path / "out"))
    assert test is None and read_info.grayscale and read_info.mean == (0.5,) * 3
    assert items(train) == items(source)
    with tarfile.open(tmp_path / "out" / "train-000000.tar") as tar:
        data = tar.extractfile(sorted(tar.getnames())[1]).read()
    assert Image.open(io.BytesIO(data)).mode == "L"


def test_bad_samples_are_skipped_and_counted_and_a_strict_run_names_them(tmp_path, caplog):
    good = png(np.full((4, 4, 3), 7, np.uint8))
    (tmp_path / "shards").mkdir()
    tar_of(
        tmp_path / "shards" / "train-0.tar",
        [
            ("a.jpg", b"not a jpeg"),  # does not decode
            ("a.cls", b"1"),
            ("b.cls", b"2"),  # no image
            ("c.png", good),
            ("c.cls", b"cat"),  # a label that is not an integer
            ("d.png", good),
            ("d.cls", b"0"),
        ],
    )
    train, _, info = load_datasets(str(tmp_path / "shards"))
    kept = list(train.stream())
    assert [label for _, label in kept] == [0] and torch.equal(kept[0][0], torch.full((3, 4, 4), 7))
    assert len(train.unreadable) == 3 and len(info.unreadable) == 3
    assert "no image member" in caplog.text and "is not an integer" in caplog.text
    with pytest.raises(DatasetError, match=r"train-0.tar:a.* cannot be read .*strict_images"):
        load_datasets(str(tmp_path / "shards"), strict=True)  # met by the statistics


def test_a_truncated_shard_ends_in_one_line_or_is_cut_short(tmp_path, caplog):
    folder = image_folder(tmp_path / "folder", train=8, test=0)
    main(["shards", str(folder), str(tmp_path / "out"), "--shard-size", "8", "--quiet"])
    shard = tmp_path / "out" / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    train, _, _ = load_datasets(str(tmp_path / "out"))  # counts from the index
    assert 0 < len(list(train.stream())) < 8 and "cannot be read after" in caplog.text
    (tmp_path / "out" / "index.json").unlink()  # counted from the headers: refused
    with pytest.raises(DatasetError) as error:
        load_datasets(str(tmp_path / "out"))
    assert "train-000000.tar cannot be read" in one_line(error.value)


def test_patterns_that_name_nothing_are_refused_in_one_line(tmp_path):
    with pytest.raises(ByolError, match="does not exist .*check the pattern"):
        load_datasets(str(tmp_path / "train-{0..3}.tar"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "index.json").write_text("{}")
    with pytest.raises(DatasetError, match="is not a shard index"):
        load_datasets(str(tmp_path / "empty"))
