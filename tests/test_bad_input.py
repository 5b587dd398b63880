"""Bad input, one parametrised case each: odd and broken image files in a folder, broken folders,
broken configuration. Every case ends in one of four ways, named in its parameters:

- ``decoded``: the file is a real image in an unusual format and becomes a uint8 RGB tensor;
- ``skipped``: the file is unreadable; the folder loads without it, the file is listed in
  ``info.unreadable``, and with ``strict_images=true`` the run stops naming it;
- ``ignored``: not an image file by its name; never looked at;
- ``error``: the command stops with one line ``byol: error: ...`` naming cause and fix (exit 2).

Real files are written to disk and read by the real code; nothing under test is mocked.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from byol.cli import main
from byol.data import ImageFolderDataset, TensorImageDataset, load_datasets
from byol.errors import DatasetError, one_line

SIZE = 32  # every good image: 32x32 noise, so a folder of them is held in memory


def noise(size: tuple[int, int] = (SIZE, SIZE), seed: int = 0) -> Image.Image:
    array = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array)


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def truncated(fmt: str, seed: int) -> bytes:
    """An image file cut to two thirds, as a killed download leaves it: the header is whole."""
    data = encoded(noise(seed=seed), fmt)
    return data[: len(data) * 2 // 3]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels: a decompression bomb's first bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def corrupt_png() -> bytes:
    data = bytearray(encoded(noise(seed=7), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 20 : start + 60] = bytes(40)  # zeros in the middle of the compressed pixels
    return bytes(data)


def palette_with_transparency() -> Image.Image:
    img = Image.new("P", (SIZE, SIZE), 1)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.info["transparency"] = 0
    return img


# name -> (file name, bytes of the file (or None: a broken symlink), how it ends, check)
# A check gets the decoded image of the odd file.
Check = Callable[[torch.Tensor], bool]
FILE_CASES: dict[str, tuple[str, Callable[[], bytes | None], str, Check | None]] = {
    "truncated_jpeg": ("t.jpg", lambda: truncated("JPEG", 3), "skipped", None),
    "truncated_png": ("t.png", lambda: truncated("PNG", 4), "skipped", None),
    "corrupt_jpeg": ("c.jpg", lambda: b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "skipped", None),
    "corrupt_png_data": ("c.png", corrupt_png, "skipped", None),
    "zero_bytes": ("empty.png", lambda: b"", "skipped", None),
    "text_named_jpg": ("page.jpg", lambda: b"<html>404 not found</html>", "skipped", None),
    "decompression_bomb": ("bomb.png", lambda: png_header_only(40000, 40000), "skipped", None),
    "broken_symlink": ("gone.png", lambda: None, "skipped", None),
    "text_file": ("notes.txt", lambda: b"labels: cats", "ignored", None),
    "hidden_file": (".DS_Store.png", lambda: b"\x00\x01", "ignored", None),
    "cmyk_jpeg": (
        "cmyk.jpg",
        lambda: encoded(Image.new("CMYK", (SIZE, SIZE), (0, 255, 255, 0)), "JPEG"),
        "decoded",
        lambda x: x[0, 16, 16] > 200 and x[1, 16, 16] < 60 and x[2, 16, 16] < 60,  # red
    ),
    "rgba_png": (
        "rgba.png",
        lambda: encoded(Image.new("RGBA", (SIZE, SIZE), (10, 20, 30, 0)), "PNG"),
        "decoded",
        lambda x: x[:, 0, 0].tolist() == [10, 20, 30],
    ),
    "palette_png": (
        "palette.png",
        lambda: encoded(palette_with_transparency(), "PNG"),
        "decoded",
        lambda x: x[:, 0, 0].tolist() == [0, 255, 0],
    ),
    "sixteen_bit_png": (
        "deep.png",
        lambda: encoded(Image.fromarray(np.full((SIZE, SIZE), 40000, dtype=np.uint16)), "PNG"),
        "decoded",
        lambda x: x.unique().tolist() == [40000 >> 8],  # rescaled, not clipped at 255
    ),
    "grayscale_png": (
        "gray.png",
        lambda: encoded(Image.new("L", (SIZE, SIZE), 77), "PNG"),
        "decoded",
        lambda x: x.unique().tolist() == [77],
    ),
    "bilevel_png": (
        "bits.png",
        lambda: encoded(Image.new("1", (SIZE, SIZE), 1), "PNG"),
        "decoded",
        lambda x: x.unique().tolist() == [255],
    ),
    "huge_jpeg": (
        "huge.jpg",
        lambda: encoded(Image.new("RGB", (4000, 3000), (0, 0, 200)), "JPEG"),
        "decoded",
        lambda x: tuple(x.shape) == (3, 3000, 4000) and x[2, 1500, 2000] > 190,
    ),
}


def good_folder(root: Path) -> Path:
    """Two classes of two readable 32x32 images each."""
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for j in range(2):
            noise(seed=10 * ord(c) + j).save(root / c / f"good{j}.png")
    return root


def add_file(folder: Path, name: str, content: bytes | None) -> Path:
    path = folder / name
    if content is None:
        path.symlink_to(folder / "does-not-exist.png")
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_odd_file_in_an_image_folder(case: str, tmp_path: Path) -> None:
    name, make, ends, check = FILE_CASES[case]
    root = good_folder(tmp_path / "images")
    odd = add_file(root / "a", name, make())
    train, test, info = load_datasets(str(root))
    assert test is None and info.classes == ["a", "b"]
    paths = [str(p) for p, _ in getattr(train, "samples", [])]
    if ends == "decoded":
        assert len(train) == 5 and info.unreadable == []
        # a folder of one size is held in memory in file order; the huge image keeps it lazy
        index = sorted([str(p) for p in (root / "a").iterdir()]).index(str(odd))
        if isinstance(train, ImageFolderDataset):
            index = paths.index(str(odd))
        image, label = train[index]
        assert image.dtype == torch.uint8 and image.shape[0] == 3 and label == 0
        assert check(image), f"{case}: unexpected pixels {image[:, :2, :2].tolist()}"
    elif ends == "skipped":
        assert len(train) == 4 and info.unreadable == [str(odd)]
        assert isinstance(train, TensorImageDataset)  # the rest still loads into memory
        # strict: the run stops and the message names the file and the way out
        with pytest.raises(DatasetError) as error:
            load_datasets(str(root), strict=True)
        assert str(odd) in str(error.value) and "strict_images=false" in str(error.value)
    else:
        assert ends == "ignored"
        assert len(train) == 4 and info.unreadable == []


def test_unreadable_file_met_while_training_is_replaced_or_stops_a_strict_run(
    tmp_path: Path,
) -> None:
    """A lazily decoded folder meets a truncated file only in __getitem__ (mid-epoch)."""
    root = good_folder(tmp_path / "images")
    bad = add_file(root / "a", "good0x.jpg", truncated("JPEG", 3))
    lazy = ImageFolderDataset(root)
    index = [p for p, _ in lazy.samples].index(bad)
    image, label = lazy[index]  # the next file in the listing stands in, the same every time
    assert torch.equal(image, lazy[index + 1][0]) and label == lazy.samples[index + 1][1]
    assert [p for p, _ in lazy.unreadable] == [bad]
    strict = ImageFolderDataset(root, strict=True)
    with pytest.raises(DatasetError, match="good0x.jpg"):
        strict[index]
    # In a DataLoader worker the error comes back wrapped in the worker's traceback; the CLI
    # prints the original sentence only.
    loader = DataLoader(strict, batch_size=5, num_workers=1)
    with pytest.raises(DatasetError) as error:
        next(iter(loader))
    assert "Traceback" in str(error.value)
    message = one_line(error.value)
    assert message.startswith(f"{bad} cannot be read as an image") and "\n" not in message


def test_unreadable_files_are_counted_and_the_first_few_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = good_folder(tmp_path / "images")
    bad = [add_file(root / "b", f"broken{i}.png", b"nope") for i in range(7)]
    with caplog.at_level("WARNING"):
        train, _, info = load_datasets(str(root))
    assert len(train) == 4 and sorted(info.unreadable) == sorted(map(str, bad))
    lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("skipped 7 unreadable image files of 11: ")
    assert sum(str(p) in lines[0] for p in bad) == 5 and "and 2 more" in lines[0]


# --------------------------------------------------------------------------- through the CLI

# name -> (what to build; returns the --set items and the run folder), words the one-line error
# must contain. Every case ends in "error".


def _folder_case(build: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda tmp: [f"dataset={build(tmp)}"]


def _empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _only_text(tmp: Path) -> Path:
    (tmp / "docs" / "cls").mkdir(parents=True)
    (tmp / "docs" / "cls" / "README.md").write_text("no images")
    return tmp / "docs"


def _all_unreadable(tmp: Path) -> Path:
    (tmp / "bad" / "cls").mkdir(parents=True)
    for i in range(3):
        (tmp / "bad" / "cls" / f"{i}.jpg").write_bytes(b"")
    return tmp / "bad"


def _a_file(tmp: Path) -> Path:
    (tmp / "one.png").write_bytes(encoded(noise(), "PNG"))
    return tmp / "one.png"


def _single_image(tmp: Path) -> Path:
    (tmp / "single" / "cls").mkdir(parents=True)
    noise().save(tmp / "single" / "cls" / "only.png")
    return tmp / "single"


def _strict_with_a_bad_file(tmp: Path) -> list[str]:
    root = good_folder(tmp / "images")
    (root / "b" / "cut.png").write_bytes(truncated("PNG", 4))
    return [f"dataset={root}", "strict_images=true"]


def _unknown_test_class(tmp: Path) -> Path:
    good_folder(tmp / "split" / "train")
    (tmp / "split" / "test" / "zebra").mkdir(parents=True)
    noise().save(tmp / "split" / "test" / "zebra" / "z.png")
    return tmp / "split"


def _strict_with_a_bad_file_named_across_lines(tmp: Path) -> list[str]:
    root = good_folder(tmp / "images")
    (root / "b" / "cut\nhere.png").write_bytes(truncated("PNG", 4))
    return [f"dataset={root}", "strict_images=true"]


def _unlabelled_test_split(tmp: Path) -> Path:
    good_folder(tmp / "split" / "train")
    (tmp / "split" / "test").mkdir(parents=True)
    noise().save(tmp / "split" / "test" / "t.png")  # flat: no class folder
    return tmp / "split"


CLI_CASES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    "empty_folder": (_folder_case(_empty), ["holds no images", ".jpg"]),
    "folder_without_images": (_folder_case(_only_text), ["holds no images"]),
    "every_image_unreadable": (_folder_case(_all_unreadable), ["No image", "can be read"]),
    "missing_path": (lambda tmp: [f"dataset={tmp / 'nowhere'}"], ["neither a known name"]),
    "path_is_a_file": (_folder_case(_a_file), ["is a file, not a folder"]),
    "single_image": (_folder_case(_single_image), ["1 images", "batch_size"]),
    "strict_stops_at_bad_file": (_strict_with_a_bad_file, ["cut.png", "strict_images=false"]),
    "strict_stops_at_bad_file_with_newline": (
        _strict_with_a_bad_file_named_across_lines,
        ["cut\\nhere.png"],
    ),
    "test_split_unknown_class": (_folder_case(_unknown_test_class), ["zebra"]),
    "test_split_unlabelled": (_folder_case(_unlabelled_test_split), ["without class", "sort"]),
    "unknown_key": (lambda tmp: ["learning_rate=0.1"], ["unknown config key", "base_lr"]),
    "wrong_type": (lambda tmp: ["batch_size=big"], ["batch_size='big'", "int"]),
    "tuple_wrong_length": (lambda tmp: ["crop_scale=0.5"], ["crop_scale", "2 comma-separated"]),
    "not_key_value": (lambda tmp: ["epochs"], ["key=value"]),
    "batch_of_one": (lambda tmp: ["batch_size=1"], ["batch_size=1", ">= 2"]),
    "negative_epochs": (lambda tmp: ["epochs=-3"], ["epochs=-3", ">= 1"]),
    "unknown_backbone": (lambda tmp: ["backbone=vgg16"], ["backbone", "resnet18"]),
}


def _settings_fast(tmp: Path) -> list[str]:
    """Small enough that a case which wrongly got as far as training would finish quickly."""
    return ["batch_size=2", "epochs=1", "num_workers=0", "knn_references=false", "threads=1"]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, words: list[str]) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("byol: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_input_on_the_command_line(case: str, tmp_path: Path, capsys) -> None:
    build, words = CLI_CASES[case]
    items = _settings_fast(tmp_path) + build(tmp_path)
    argv = ["pretrain", "--quiet", "--run-dir", str(tmp_path / "run")]
    for item in items:
        argv += ["--set", item]
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, words)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# name -> (config.json text, words)
CONFIG_FILE_CASES: dict[str, tuple[str, list[str]]] = {
    "unknown_key_in_file": (json.dumps({"epochs": 2, "lerning_rate": 1}), ["lerning_rate"]),
    "wrong_type_in_file": (json.dumps({"batch_size": "big"}), ["batch_size='big'", "int"]),
    "bool_for_int_in_file": (json.dumps({"epochs": True}), ["epochs=True", "int"]),
    "list_for_float_in_file": (json.dumps({"base_lr": [1, 2]}), ["base_lr", "float"]),
    "not_json": ("{epochs: 2", ["not a readable JSON config"]),
    "json_not_an_object": ("[1, 2]", ["not an object"]),
}


@pytest.mark.parametrize("case", list(CONFIG_FILE_CASES))
def test_bad_config_file_on_resume(case: str, tmp_path: Path, capsys) -> None:
    text, words = CONFIG_FILE_CASES[case]
    (tmp_path / "config.json").write_text(text)
    code, err = run_cli(["pretrain", "--resume", str(tmp_path)], capsys)
    assert_one_line_error(code, err, [str(tmp_path / "config.json"), *words])


# --- operating-system hazards inside an image folder ---------------------------------------------
def test_a_symlink_loop_is_followed_once_and_a_fifo_is_not_read(tmp_path: Path) -> None:
    from byol.data import ImageFolderDataset

    cls = tmp_path / "folder" / "cls"
    cls.mkdir(parents=True)
    for i in range(3):
        noise(seed=i).save(cls / f"{i}.png")
    (cls / "loop").symlink_to(tmp_path / "folder")  # a link back to a parent
    os.mkfifo(cls / "pipe.png")  # opening it to read would wait forever
    dataset = ImageFolderDataset(tmp_path / "folder")
    assert sorted(p.name for p, _ in dataset.samples) == ["0.png", "1.png", "2.png"]
    assert all(dataset[i][0].shape[0] == 3 for i in range(len(dataset)))


def test_exif_orientation_is_applied_as_a_viewer_would(tmp_path: Path) -> None:
    from byol.data.decode import ORIENTATION, decode_image, header_size

    image = Image.new("RGB", (4, 2), (255, 0, 0))
    image.putpixel((0, 0), (0, 0, 255))  # top-left blue
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored on its side: turn 90 degrees clockwise to view
    image.save(tmp_path / "turned.jpg", exif=exif, quality=100, subsampling=0)  # 4:4:4
    decoded = decode_image(tmp_path / "turned.jpg")
    assert tuple(decoded.shape) == (3, 4, 2) and header_size(tmp_path / "turned.jpg") == (2, 4)
    assert decoded[2, 0, -1] > 200 and decoded[0, 0, -1] < 60  # blue moved to the top right


def test_a_file_name_that_is_not_utf8_is_written_as_an_escape(tmp_path: Path) -> None:
    from byol.run_folder import write_text

    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: a lone surrogate in Python
    write_text(tmp_path / "report.html", f"<p>unreadable: {name}</p>")
    assert (tmp_path / "report.html").read_text() == "<p>unreadable: caf\\udce9.png</p>"


def _hostile_folder(root: Path) -> tuple[Path, set[str]]:
    """Every file of FILE_CASES at once beside good images: the folder a careless export makes.
    Returns the folder and the files that must be reported unreadable."""
    good_folder(root)
    skipped = set()
    for name, make, ends, _ in FILE_CASES.values():
        path = add_file(root / "a", name, make())
        if ends == "skipped":
            skipped.add(str(path))
    return root, skipped


def _train_on_hostile_folder(tmp_path: Path, capsys, extra: list[str]) -> None:
    folder, skipped = _hostile_folder(tmp_path / "hostile")
    items = [
        f"dataset={folder}",
        "backbone=resnet18-narrow",
        "image_size=16",
        "batch_size=4",
        "projector_hidden_dim=32",
        "predictor_hidden_dim=32",
        "knn_references=false",
        "threads=1",
        "predictor_warmup_steps=0",
        *extra,
    ]
    argv = ["pretrain", "--quiet", "--run-dir", str(tmp_path / "run")]
    for item in items:
        argv += ["--set", item]
    code, err = run_cli(argv, capsys)
    assert code == 0 and "Traceback" not in err, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["unreadable_images"]) == skipped


def test_a_folder_of_every_hostile_file_trains_and_names_the_unreadable(
    tmp_path: Path, capsys
) -> None:
    _train_on_hostile_folder(tmp_path, capsys, ["epochs=1", "num_workers=0"])


@pytest.mark.slow
def test_a_folder_of_every_hostile_file_trains_per_image_in_workers(tmp_path: Path, capsys) -> None:
    _train_on_hostile_folder(tmp_path, capsys, ["epochs=2", "num_workers=2", "views=per-image"])
