"""A folder's files are walked once and kept in an index beside the run: the index gives the same
samples as a walk, is read instead of walking while the folder is unchanged, and is walked again
when a file is added, removed or renamed."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from byol.data import ImageFolderDataset, folder_index, load_datasets
from byol.data.folder_index import images_under, index_path, walk


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 3), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_folder(root: Path) -> Path:
    names = ["a/1.png", "a/sub/2.png", "a-c/3.png", "b/4.jpg", "b/line\nbreak.png", "b/.hidden.png"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png_bytes(i * 30))
    (root / "b" / "notes.txt").write_text("not an image")
    an_hour_ago = time.time() - 3600  # the index trusts only times older than its walk
    for directory in (root, *(p for p in root.rglob("*") if p.is_dir())):
        os.utime(directory, (an_hour_ago, an_hour_ago))
    return root


def no_walking(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(folder: Path):  # noqa: ANN202
        raise AssertionError(f"walked {folder} although its index holds")

    monkeypatch.setattr(folder_index, "walk", refuse)


def test_a_walk_finds_the_images_in_the_order_paths_sort(tmp_path):
    root = make_folder(tmp_path / "images")
    files, directories = walk(root)
    expected = sorted(
        Path(d) / f
        for d, _, names in os.walk(root)
        for f in names
        if f.endswith((".png", ".jpg")) and not f.startswith(".")
    )
    assert [Path(f) for f in files] == expected and len(files) == 5
    assert (root / "a-c" / "3.png") == Path(files[2])  # a/... before a-c/..., as Paths sort
    assert set(directories) == {str(root), *(str(root / d) for d in ("a", "a/sub", "a-c", "b"))}


def test_the_index_is_read_while_the_folder_is_unchanged(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "images")
    walked = ImageFolderDataset(root, index_dir=tmp_path / "index")
    saved = index_path(tmp_path / "index", root)
    assert json.loads(saved.read_text())["format"] == folder_index.FORMAT
    no_walking(monkeypatch)
    again = ImageFolderDataset(root, index_dir=tmp_path / "index")
    assert again.samples == walked.samples and again.classes == ["a", "a-c", "b"]
    assert any("\n" in p.name for p, _ in again.samples)  # a line break in a name survives
    train, _, _ = load_datasets(str(root), in_memory=False, index_dir=tmp_path / "index")
    assert train.samples == walked.samples


@pytest.mark.parametrize("change", ["add", "remove", "rename", "new folder"])
def test_a_changed_folder_is_walked_again(tmp_path, change):
    root = make_folder(tmp_path / "images")
    index = tmp_path / "index"
    before = {p.relative_to(root).as_posix() for p in images_under(root, index)}
    if change == "add":
        (root / "a" / "sub" / "5.png").write_bytes(png_bytes(9))
        want = before | {"a/sub/5.png"}
    elif change == "remove":
        (root / "a" / "sub" / "2.png").unlink()
        want = before - {"a/sub/2.png"}
    elif change == "rename":
        (root / "b" / "4.jpg").rename(root / "b" / "6.jpg")
        want = before - {"b/4.jpg"} | {"b/6.jpg"}
    else:
        (root / "a-c" / "deeper").mkdir()
        (root / "a-c" / "deeper" / "7.png").write_bytes(png_bytes(7))
        want = before | {"a-c/deeper/7.png"}
    after = {p.relative_to(root).as_posix() for p in images_under(root, index)}
    assert after == want != before


def test_a_folder_changed_in_the_clock_tick_of_its_walk_is_walked_again(tmp_path):
    root = tmp_path / "fresh"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.png").write_bytes(png_bytes(1))  # its folder's time: now
    images_under(root, tmp_path / "index")
    tick = os.stat(root / "a").st_mtime_ns
    (root / "a" / "2.png").write_bytes(png_bytes(2))
    os.utime(root / "a", ns=(tick, tick))  # as a change within the same clock tick leaves it
    assert len(images_under(root, tmp_path / "index")) == 2


def test_a_corrupt_or_foreign_index_is_walked_again(tmp_path):
    root = make_folder(tmp_path / "images")
    other = make_folder(tmp_path / "other")
    index = tmp_path / "index"
    images_under(root, index)
    saved = index_path(index, root)
    saved.write_text("{not json")
    assert len(images_under(root, index)) == 5
    foreign = json.loads(saved.read_text())
    foreign["folder"] = str(other.resolve())  # an index copied from elsewhere
    saved.write_text(json.dumps(foreign))
    assert [p.parent.parent for p in images_under(root, index)][0] == root
