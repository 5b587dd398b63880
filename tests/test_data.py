"""Tests for byol.data: real files on disk, real decoding, no mocks of the code under test."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol import data
from byol.data import (
    DatasetInfo,
    ImageFolderDataset,
    TensorImageDataset,
    cifar10_jpeg,
    images,
    load_datasets,
    subset,
)
from byol.data.idx import read_idx
from byol.errors import ByolError

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# The copy beside the repository, when this machine has it; the package itself never looks there.
CIFAR_JPEG = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an uint8 array as an IDX file by hand (gzipped when the name ends in .gz)."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def save(path: Path, img: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def rgb(size: tuple[int, int], color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", size, color)


def assert_image(image: torch.Tensor, height: int, width: int) -> None:
    assert isinstance(image, torch.Tensor)
    assert image.dtype == torch.uint8
    assert tuple(image.shape) == (3, height, width)


# --------------------------------------------------------------------------- IDX / Fashion-MNIST


def test_read_idx_parses_hand_written_files(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte", array)
    write_idx(tmp_path / "a-idx3-ubyte.gz", array)
    raw = (tmp_path / "a-idx3-ubyte").read_bytes()
    assert raw[:8] == bytes([0, 0, 8, 3, 0, 0, 0, 2])  # magic, then first dimension
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        parsed = read_idx(tmp_path / name)
        assert parsed.dtype == np.uint8
        np.testing.assert_array_equal(parsed, array)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    write_idx(tmp_path / "l-idx1-ubyte", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "l-idx1-ubyte"), labels)


def test_read_idx_rejects_bad_magic_and_truncated_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


@pytest.mark.skipif(
    not (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST absent: `apt-get install dataset-fashion-mnist` puts it in "
    "/usr/share/datasets/fashion-mnist",
)
def test_fashion_mnist_from_debian_package() -> None:
    train, test, info = load_datasets("fashion-mnist")
    assert isinstance(train, TensorImageDataset) and isinstance(test, TensorImageDataset)
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape == (60000, 3, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 3, 28, 28)
    assert train.labels.dtype == torch.int64
    for ds in (train, test):
        assert int(ds.labels.min()) == 0 and int(ds.labels.max()) == 9
        assert torch.bincount(ds.labels).tolist() == [len(ds) // 10] * 10
    # Grayscale repeated: the three channels are identical.
    assert torch.equal(train.images[:100, 0], train.images[:100, 2])
    image, label = train[0]
    assert_image(image, 28, 28)
    assert isinstance(label, int) and label == 9  # the first training image is an ankle boot
    assert train.transform is None and test.transform is None
    assert info == DatasetInfo(
        "fashion-mnist",
        data.FASHION_MNIST_CLASSES,
        (0.2860,) * 3,
        (0.3530,) * 3,
        True,
    )
    assert len(info.classes) == 10


def test_fashion_mnist_torchvision_raw_layout(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", images)  # un-gzipped, as torchvision leaves it
    write_idx(raw / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 9]))
    write_idx(raw / "t10k-images-idx3-ubyte.gz", images[:2])
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([5, 6]))
    train, test, info = load_datasets("fashion-mnist", data_dir=str(tmp_path))
    assert train.images.shape == (5, 3, 28, 28)
    assert torch.equal(train.images[:, 1], torch.from_numpy(images))
    assert train.labels.tolist() == [0, 1, 2, 3, 9]
    assert test.labels.tolist() == [5, 6]
    assert info.grayscale


def test_fashion_mnist_missing_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_datasets("fashion-mnist", data_dir=str(tmp_path))
    message = str(err.value)
    assert str(tmp_path) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=true" in message
    assert isinstance(err.value, ByolError)  # the CLI prints it as one line


def test_torchvision_set_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download=true"):
        load_datasets("cifar10", data_dir=str(tmp_path))


# --------------------------------------------------------------------------- image folders


def mixed_mode_folder(root: Path) -> dict[str, tuple[int, int, int]]:
    """A labelled folder of one image per PIL mode; returns relative path -> (label, H, W)."""
    palette = Image.new("P", (7, 5))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.info["transparency"] = 0
    pixels16 = np.array([[0, 32768, 65535]] * 2, dtype=np.uint16)
    made = {
        "cat/gray.png": (Image.new("L", (10, 6), 100), {}),
        "cat/alpha.png": (Image.new("RGBA", (8, 9), (10, 20, 30, 0)), {}),
        "cat/sub/deeper/palette.png": (palette, {}),
        "dog/cmyk.jpg": (Image.new("CMYK", (12, 4), (0, 255, 255, 0)), {}),
        "dog/sixteen.png": (Image.fromarray(pixels16), {}),
        "dog/plain.JPEG": (rgb((16, 16), (200, 100, 50)), {}),
        "dog/bitmap.bmp": (rgb((3, 5), (1, 2, 3)), {}),
    }
    out = {}
    for rel, (img, kwargs) in made.items():
        save(root / rel, img, **kwargs)
        label = 0 if rel.startswith("cat") else 1
        out[rel] = (label, img.size[1], img.size[0])
    (root / "dog" / "notes.txt").write_text("not an image")
    save(root / "dog" / ".hidden.png", rgb((2, 2), (0, 0, 0)))
    save(root / ".thumbs" / "x.png", rgb((2, 2), (0, 0, 0)))
    return out


def test_image_folder_decodes_every_mode_to_uint8_rgb(tmp_path: Path) -> None:
    expected = mixed_mode_folder(tmp_path)
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"]
    assert len(ds) == len(expected)
    by_name = {p.relative_to(tmp_path).as_posix(): label for p, label in ds.samples}
    assert by_name == {rel: label for rel, (label, _, _) in expected.items()}
    for i, (path, _) in enumerate(ds.samples):
        image, label = ds[i]
        want_label, height, width = expected[path.relative_to(tmp_path).as_posix()]
        assert_image(image, height, width)
        assert label == want_label
    pixels = {p.name: ds[i][0] for i, (p, _) in enumerate(ds.samples)}
    assert pixels["gray.png"].unique().tolist() == [100]
    assert pixels["alpha.png"][:, 0, 0].tolist() == [10, 20, 30]
    assert pixels["palette.png"][:, 0, 0].tolist() == [255, 0, 0]
    # 16-bit values are rescaled, not clipped at 255 as PIL's convert("RGB") would.
    assert pixels["sixteen.png"][0, 0].tolist() == [0, 128, 255]
    cmyk = pixels["cmyk.jpg"][:, 2, 6].tolist()  # CMYK (0, 255, 255, 0) is red
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60
    assert pixels["plain.JPEG"][:, 8, 8].tolist() == pytest.approx([200, 100, 50], abs=4)


def test_image_folder_transform_is_applied(tmp_path: Path) -> None:
    save(tmp_path / "a" / "x.png", rgb((4, 4), (10, 10, 10)))
    ds = ImageFolderDataset(tmp_path, transform=lambda t: t.float() / 255)
    image, label = ds[0]
    assert image.dtype == torch.float32 and label == 0


def test_load_folder_of_mixed_sizes_stays_lazy(tmp_path: Path) -> None:
    expected = mixed_mode_folder(tmp_path)
    train, test, info = load_datasets(str(tmp_path))
    assert isinstance(train, ImageFolderDataset)  # sizes differ, so not held in memory
    assert test is None
    assert len(train) == len(expected)
    assert info.name == tmp_path.name
    assert info.classes == ["cat", "dog"]
    assert not info.grayscale
    assert all(0.0 <= m <= 1.0 for m in info.mean) and all(0.0 < s <= 0.5 for s in info.std)


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    save(tmp_path / "a.png", Image.new("L", (6, 6), 0))
    save(tmp_path / "b.png", Image.new("L", (6, 6), 255))
    save(tmp_path / "more" / "c.png", Image.new("L", (6, 6), 255))
    train, test, info = load_datasets("folder", data_dir=str(tmp_path))
    assert test is None
    assert info.classes == [] and info.grayscale
    assert isinstance(train, TensorImageDataset)  # one size, tiny: held in memory
    assert train.labels.tolist() == [-1, -1, -1]
    image, label = train[0]
    assert_image(image, 6, 6)
    assert label == -1
    assert info.mean == pytest.approx((2 / 3,) * 3, abs=1e-3)
    assert info.std == pytest.approx((float(np.std([0, 1, 1])),) * 3, abs=1e-3)
    lazy, _, _ = load_datasets(str(tmp_path), in_memory=False)
    assert isinstance(lazy, ImageFolderDataset)
    assert [label for _, label in lazy.samples] == [-1, -1, -1]
    assert all(torch.equal(lazy[i][0], train[i][0]) for i in range(3))


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_train_test_split_folders(tmp_path: Path, test_name: str) -> None:
    for i, cls in enumerate(["ant", "bee", "cow"]):
        for j in range(3):
            save(tmp_path / "train" / cls / f"{j}.png", rgb((5, 4), (i * 80, j, 0)))
    # The test split lacks "bee": "cow" must keep its training label 2.
    save(tmp_path / test_name / "ant" / "0.png", rgb((5, 4), (0, 0, 0)))
    save(tmp_path / test_name / "cow" / "0.png", rgb((5, 4), (160, 0, 0)))
    train, test, info = load_datasets(str(tmp_path))
    assert info.classes == ["ant", "bee", "cow"]
    assert isinstance(train, TensorImageDataset) and isinstance(test, TensorImageDataset)
    assert train.images.shape == (9, 3, 4, 5)
    assert sorted(train.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert test.labels.tolist() == [0, 2]
    assert test[1][0][0, 0, 0] == 160


def test_test_split_with_unknown_class_is_an_error(tmp_path: Path) -> None:
    save(tmp_path / "train" / "ant" / "0.png", rgb((2, 2), (0, 0, 0)))
    save(tmp_path / "test" / "zebra" / "0.png", rgb((2, 2), (0, 0, 0)))
    with pytest.raises(ValueError, match="zebra"):
        load_datasets(str(tmp_path))


def test_missing_path_and_empty_folder_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        load_datasets(str(missing))
    assert str(missing) in str(err.value) and "known name" in str(err.value)
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_datasets("folder")
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    (empty / "cls" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError) as err:
        load_datasets(str(empty))
    message = str(err.value)
    assert str(empty) in message and ".jpg" in message and ".png" in message
    assert isinstance(err.value, ByolError)


def test_undecodable_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    ds = ImageFolderDataset(tmp_path)
    with pytest.raises(ValueError, match="broken.png"):
        ds[0]


# --------------------------------------------------------------------------- subset


def test_tensor_dataset_items_and_validation() -> None:
    images = torch.arange(2 * 3 * 2 * 2, dtype=torch.uint8).reshape(2, 3, 2, 2)
    ds = TensorImageDataset(images, torch.tensor([4, -1]))
    image, label = ds[1]
    assert torch.equal(image, images[1]) and label == -1 and isinstance(label, int)
    ds.transform = lambda t: t.sum()
    assert ds[0][0] == images[0].sum()
    with pytest.raises(ValueError):
        TensorImageDataset(images, torch.tensor([1, 2, 3]))


def test_subset_is_deterministic_and_class_balanced() -> None:
    # Unbalanced classes: 50 of class 0, 30 of class 1, 4 of class 2.
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 4)
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).repeat(1, 3, 2, 2)
    ds = TensorImageDataset(images, labels, transform=torch.clone)
    a, b, c = subset(ds, 30, seed=1), subset(ds, 30, seed=1), subset(ds, 30, seed=2)
    assert isinstance(a, TensorImageDataset) and a.transform is torch.clone
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert torch.bincount(a.labels).tolist() == [13, 13, 4]  # class 2 has only 4
    assert torch.bincount(subset(ds, 9).labels).tolist() == [3, 3, 3]
    counts = torch.bincount(subset(ds, 10).labels).tolist()
    assert sorted(counts) == [3, 3, 4]
    # Items keep their image/label pairing.
    assert all(int(a.images[i, 0, 0, 0]) < 50 for i in range(len(a)) if a.labels[i] == 0)
    assert len(subset(ds, 1000)) == len(ds)
    assert len(subset(ds, 0)) == 0
    with pytest.raises(ValueError):
        subset(ds, -1)


def test_subset_of_unlabelled_and_folder_datasets(tmp_path: Path) -> None:
    ds = TensorImageDataset(torch.zeros(20, 3, 1, 1, dtype=torch.uint8), torch.full((20,), -1))
    assert len(subset(ds, 7)) == 7
    for cls in ("a", "b"):
        for j in range(4):
            save(tmp_path / cls / f"{j}.png", rgb((3, 3), (j, 0, 0)))
    folder = ImageFolderDataset(tmp_path, transform=torch.clone)
    small = subset(folder, 4, seed=3)
    assert isinstance(small, ImageFolderDataset) and small.transform is torch.clone
    assert small.classes == ["a", "b"] and len(folder) == 8
    assert sorted(label for _, label in small.samples) == [0, 0, 1, 1]
    assert small.samples == subset(folder, 4, seed=3).samples
    assert_image(small[0][0], 3, 3)


# --------------------------------------------------------------------------- cifar10-jpeg


def fake_cifar_tarball(path: Path, extra: tarfile.TarInfo | None = None) -> str:
    """A tiny tarball with the cifar10-jpeg layout; returns its sha256."""
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", 3), ("test", 1)):
            for c, cls in enumerate(("cat", "dog")):
                for j in range(n):
                    buf = io.BytesIO()
                    rgb((32, 32), (c * 200, j * 50, 0)).save(buf, format="JPEG")
                    info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{cls}/{j:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x" * extra.size))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cifar10_jpeg_extracts_once_and_caches_tensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = tmp_path / "cifar10-jpeg.tar.gz"
    monkeypatch.setattr(cifar10_jpeg, "CIFAR10_JPEG_SHA256", fake_cifar_tarball(tarball))
    monkeypatch.setenv("BYOL_DATA_DIR", str(tmp_path / "cache"))
    train, test, info = load_datasets("cifar10-jpeg", data_dir=str(tarball))
    assert isinstance(train, TensorImageDataset)
    assert train.images.shape == (6, 3, 32, 32) and test.images.shape == (2, 3, 32, 32)
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1] and test.labels.tolist() == [0, 1]
    assert info.classes == ["cat", "dog"] and info.mean == (0.4914, 0.4822, 0.4465)
    cache = tmp_path / "cache" / "cifar10-jpeg"
    assert (cache / "train" / "dog" / "0002.jpg").is_file()
    assert (cache / "train-uint8.pt").is_file() and (cache / "test-uint8.pt").is_file()
    assert [p.name for p in cache.parent.iterdir()] == ["cifar10-jpeg"]  # no temp folder left

    # The second call reads the cached tensors: no image is decoded, the tarball is not needed.
    def no_decoding(path: Path) -> None:
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(images, "decode_image", no_decoding)
    tarball.unlink()
    train2, test2, info2 = load_datasets("cifar10-jpeg")
    assert torch.equal(train2.images, train.images) and torch.equal(test2.labels, test.labels)
    assert info2 == info
    monkeypatch.undo()
    monkeypatch.setenv("BYOL_DATA_DIR", str(tmp_path / "cache"))
    lazy, lazy_test, _ = load_datasets("cifar10-jpeg", in_memory=False)
    assert isinstance(lazy, ImageFolderDataset) and len(lazy_test) == 2
    assert torch.equal(lazy[4][0], train.images[4])


def test_cifar10_jpeg_bad_checksum_and_unsafe_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BYOL_DATA_DIR", str(tmp_path / "cache"))
    tarball = tmp_path / "cifar10-jpeg.tar.gz"
    fake_cifar_tarball(tarball)
    with pytest.raises(ValueError, match="sha256"):
        load_datasets("cifar10-jpeg", data_dir=str(tarball))
    evil = tarfile.TarInfo("../escaped.txt")
    evil.size = 1
    monkeypatch.setattr(cifar10_jpeg, "CIFAR10_JPEG_SHA256", fake_cifar_tarball(tarball, evil))
    with pytest.raises(ValueError, match="escaped"):
        load_datasets("cifar10-jpeg", data_dir=str(tarball))
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "cache" / "cifar10-jpeg").exists()  # never half-extracted
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing")):
        load_datasets("cifar10-jpeg", data_dir=str(tmp_path / "nothing"))


@pytest.mark.slow
@pytest.mark.skipif(
    not CIFAR_JPEG.is_file(), reason=f"CIFAR-10 JPEG tarball absent (looked at {CIFAR_JPEG})"
)
def test_cifar10_jpeg_real_tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYOL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BYOL_SHARED_DIR", str(CIFAR_JPEG.parents[1]))  # where the copy lies
    train, test, info = load_datasets("cifar10-jpeg")
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert info.classes[0] == "airplane" and len(info.classes) == 10
    mean = (train.images[::10].float() / 255).mean((0, 2, 3))
    assert mean.tolist() == pytest.approx(info.mean, abs=0.02)
    start = time.monotonic()
    train2, _, _ = load_datasets("cifar10-jpeg")
    assert time.monotonic() - start < 10
    assert torch.equal(train2.images, train.images)
