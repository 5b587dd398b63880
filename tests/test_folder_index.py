"""A folder's files are walked once and kept in an index beside the run: the index gives the same
samples as a walk, is read instead of walking while the folder is unchanged, and is walked again
when a file is added, removed or renamed."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
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
    with np.load(saved, allow_pickle=False) as arrays:  # plain arrays, no pickle
        assert arrays["format"].tobytes().decode() == folder_index.FORMAT
        assert int(arrays["count"]) == 5
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


def saved_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as out:
        np.savez(out, **arrays)


def test_a_foreign_index_is_walked_again(tmp_path):
    root = make_folder(tmp_path / "images")
    other = make_folder(tmp_path / "other")
    index = tmp_path / "index"
    images_under(other, index)
    index_path(index, other).rename(index_path(index, root))  # an index copied from elsewhere
    assert [p.parent.parent for p in images_under(root, index)][0] == root


class Unpickled:
    """Appends to ``CALLS`` when unpickled: a pickle in an index must never run."""

    CALLS: list[str] = []

    def __reduce__(self):  # noqa: ANN204
        return (Unpickled.CALLS.append, ("unpickled",))


def cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"{not an index")


def climbing(path: Path) -> None:  # a name that leads out of the folder
    arrays = saved_arrays(path)
    names = arrays["names"].tobytes().replace(b"a/1.png", b"../../etc/x.png")
    save_arrays(path, {**arrays, "names": np.frombuffer(names, np.uint8)})


def miscounted(path: Path) -> None:
    save_arrays(path, {**saved_arrays(path), "count": np.array(7, np.int64)})


def untimed(path: Path) -> None:  # fewer directory times than directories
    save_arrays(path, {**saved_arrays(path), "mtimes": saved_arrays(path)["mtimes"][:2]})


def retyped(path: Path) -> None:
    save_arrays(path, {**saved_arrays(path), "mtimes": saved_arrays(path)["mtimes"] * 1.0})


def pickled(path: Path) -> None:
    arrays = {**saved_arrays(path), "names": np.array([Unpickled()], dtype=object)}
    with open(path, "wb") as out:
        np.savez(out, **arrays)  # np.savez pickles object arrays: allow_pickle=True by default


@pytest.mark.parametrize(
    "tamper",
    [cut, garbage, climbing, miscounted, untimed, retyped, pickled],
    ids=lambda f: f.__name__,
)
def test_a_cut_or_tampered_index_is_walked_again_with_one_warning(tmp_path, caplog, tamper):
    root = make_folder(tmp_path / "images")
    index = tmp_path / "index"
    want = images_under(root, index)
    saved = index_path(index, root)
    tamper(saved)
    with caplog.at_level(logging.WARNING, logger="byol.data.folder_index"):
        assert images_under(root, index) == want  # walked again: every file inside the folder
    assert not Unpickled.CALLS
    [record] = [r for r in caplog.records if r.name == "byol.data.folder_index"]
    assert f"the folder index {saved} cannot be used (" in record.getMessage()
    assert f"walking {root} again" in record.getMessage() and "\n" not in record.getMessage()
    assert saved_arrays(saved)["count"] == 5  # and written again


def test_an_index_of_the_older_json_format_is_replaced(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "images")
    index = tmp_path / "index"
    old = index_path(index, root).with_suffix(".json")
    old.parent.mkdir()
    names = "\0".join(p.relative_to(root).as_posix() for p in images_under(root))
    old.write_text(
        json.dumps({"format": "byol-folder-index/1", "folder": str(root), "files": names})
    )
    assert len(images_under(root, index)) == 5
    assert not old.exists() and index_path(index, root).is_file()
    no_walking(monkeypatch)
    assert len(images_under(root, index)) == 5


def test_an_empty_folder_and_odd_names_are_kept_as_they_are(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    odd = tmp_path / "odd"
    names = ["\u00e9t\u00e9/\u65e5.png", "x/" + os.fsdecode(b"\xff\xfe.png")]  # not UTF-8 too
    for name in names:
        (odd / name).parent.mkdir(parents=True, exist_ok=True)
        (odd / name).write_bytes(png_bytes(1))
    an_hour_ago = time.time() - 3600
    for directory in (empty, odd, *(p for p in odd.rglob("*") if p.is_dir())):
        os.utime(directory, (an_hour_ago, an_hour_ago))
    index = tmp_path / "index"
    want = (images_under(empty, index), images_under(odd, index))
    no_walking(monkeypatch)
    assert (images_under(empty, index), images_under(odd, index)) == want
    assert want[0] == [] and sorted(p.relative_to(odd).as_posix() for p in want[1]) == sorted(names)
