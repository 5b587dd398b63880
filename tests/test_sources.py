"""The source contract: every registered source honours it on tiny real files, subsets drawn
through it are the ones drawn before it existed, and a streaming source goes where a stream can
go (feature extraction, the kNN monitor, kNN evaluation) and is refused in one line where it
cannot (subsets by index, label subsets, pretraining)."""

from __future__ import annotations

import dataclasses
import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from byol import data
from byol.data import (
    SOURCES,
    DatasetError,
    DatasetInfo,
    ImageFolderDataset,
    Registered,
    StreamingSource,
    TensorImageDataset,
    indexable,
    labelled,
    load_datasets,
    subset,
    subset_indices,
)
from byol.errors import one_line
from byol.evaluation.features import extract_features
from byol.presets import preset
from byol.training.monitor import KnnMonitor

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
TOY_INFO = DatasetInfo("toy", ["a", "b", "c"], (0.5,) * 3, (0.25,) * 3, False)


class ListStream(StreamingSource):
    """A stream over tensors in memory: the smallest streaming source there is."""

    def __init__(self, images: torch.Tensor, labels: list[int], known_length: bool = True):
        self.images, self.labels, self.name = images, labels, "list-stream"
        self.num_samples = len(labels) if known_length else None

    def stream(self):
        return ((image, label) for image, label in zip(self.images, self.labels, strict=True))


def toy_images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)


def save_png(path: Path, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, value // 2)).save(path)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


# --------------------------------------------------------------------------- every source


class FakeCifar:
    """torchvision's CIFAR classes as load_cifar reads them: .data NHWC, .targets, .classes."""

    def __init__(self, root: str, download: bool, train: bool) -> None:
        n = 6 if train else 3
        self.data = toy_images(n, 4, int(train)).permute(0, 2, 3, 1).numpy()
        self.targets, self.classes = [i % 3 for i in range(n)], ["x", "y", "z"]


class FakeSTL10:
    """torchvision's STL10 as load_stl10 reads it: .data NCHW, .labels (-1 = unlabeled)."""

    def __init__(self, root: str, download: bool, split: str) -> None:
        labels = [0, 1, -1, -1, 1] if split == "train+unlabeled" else [1, 0]
        self.data = toy_images(len(labels), 6).numpy()
        self.labels, self.classes = np.array(labels), ["p", "q"]


def _fashion_mnist(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for prefix, count in (("train", 5), ("t10k", 2)):
        write_idx(tmp / f"{prefix}-images-idx3-ubyte.gz", images[:count])
        write_idx(tmp / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    return "fashion-mnist", str(tmp)


def _torchvision(name: str) -> Callable:
    def build(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
        import torchvision

        monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCifar)
        monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCifar)
        monkeypatch.setattr(torchvision.datasets, "STL10", FakeSTL10)
        return name, str(tmp)

    return build


def _class_folders(root: Path, splits: tuple[str, ...], size=(5, 4)) -> None:
    for split in splits:
        for c, name in enumerate(("ant", "bee")):
            for j in range(3):
                save_png(root / split / name / f"{j}.png", size, c * 100 + j)


def _cifar10_jpeg(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    _class_folders(tmp, ("train", "test"))  # an extracted copy: no checksum to fake
    return "cifar10-jpeg", str(tmp)


def _imagenet(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    _class_folders(tmp, ("train", "val"))
    return "imagenet", str(tmp)


def _flat_folder(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    for j in range(4):
        save_png(tmp / f"{j}.png", (3, 3), j * 60)
    return "folder", str(tmp)


def _lazy_path(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    for j, size in enumerate(((5, 4), (7, 3), (2, 6))):  # sizes differ: read from files
        save_png(tmp / "train" / ("ant", "bee")[j % 2] / f"{j}.png", size, j * 70)
    _class_folders(tmp, ("test",), (4, 4))
    return str(tmp), None


def _shards(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")
    from byol.data.shard_writer import write_shards

    _class_folders(tmp / "folder", ("train", "test"))
    train, test, info = load_datasets(str(tmp / "folder"), in_memory=False)
    write_shards(train, test, info, tmp / "shards", shard_size=4)
    return "shards", str(tmp / "shards")


BUILDERS = {
    "fashion-mnist": _fashion_mnist,
    "cifar10": _torchvision("cifar10"),
    "cifar100": _torchvision("cifar100"),
    "stl10": _torchvision("stl10"),
    "cifar10-jpeg": _cifar10_jpeg,
    "imagenet": _imagenet,
    "folder": _flat_folder,
    "shards": _shards,
    "a path": _lazy_path,
}


def test_every_registered_source_has_a_contract_test():
    assert set(SOURCES) == set(BUILDERS) - {"a path"}
    assert data.KNOWN_DATASETS == tuple(name for name in SOURCES if name != "folder")


def check_stream_contract(source: StreamingSource) -> None:
    assert source.streaming is True and source.transform is None and not source.in_memory
    items = list(source.stream())
    assert len(items) == source.num_samples == sum(source.pieces()) > 0
    for image, label in items:
        assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
        assert isinstance(label, int) and label >= -1
    assert source.labelled == any(label >= 0 for _, label in items)
    again = list(source.stream())  # the stored order, every time
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(items, again, strict=True))
    by_piece = [source.decode(r) for i in range(len(source.pieces())) for r in source.read_piece(i)]
    assert [label for _, label in by_piece] == [label for _, label in items]
    parts = [list(source.stream_part(p, 2)) for p in range(2)]
    assert sum(map(len, parts)) == len(items) and all(parts)
    brighter = source.with_transform(lambda t: t.float() + 1)
    assert source.transform is None and torch.equal(next(iter(brighter))[0], items[0][0] + 1.0)


def check_contract(source: data.IndexableSource) -> None:
    if source.streaming:
        check_stream_contract(source)
        return
    assert source.streaming is False and source.transform is None
    n = len(source)
    assert n == source.num_samples > 0
    items = [source[i] for i in range(n)]
    for image, label in items:
        assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
        assert isinstance(label, int) and label >= -1
    labels = source.label_array()
    assert labels is not None and labels.dtype == np.int64
    assert labels.tolist() == [label for _, label in items]
    picked = np.array([n - 1, 0])
    part = source.take(picked)
    assert type(part) is type(source) and part.in_memory == source.in_memory and len(part) == 2
    for j, i in enumerate(picked):
        assert torch.equal(part[j][0], items[i][0]) and part[j][1] == items[i][1]
    if source.in_memory:
        assert torch.equal(source.images_tensor(), torch.stack([image for image, _ in items]))
    else:
        with pytest.raises(DatasetError, match="item by item"):
            source.images_tensor()
    files = source.files()
    assert files is None or (len(files) == n and all(p.is_file() for p in files))
    brighter = source.with_transform(lambda t: t.float() + 1)
    assert source.transform is None and torch.equal(brighter[0][0], items[0][0].float() + 1)


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_every_source_honours_the_contract(kind, in_memory, tmp_path, monkeypatch):
    name, data_dir = BUILDERS[kind](tmp_path, monkeypatch)
    train, test, info = load_datasets(name, data_dir, in_memory=in_memory)
    for split in (train, test):
        if split is not None:
            check_contract(split)
    entry = SOURCES.get(name)
    if entry is not None and entry.stats is not None:  # known_stats says what loading gives
        assert (info.mean, info.std) == entry.stats == data.known_stats(name)
    if kind == "a path":  # the sizes differ: read from files whatever in_memory says
        assert not train.in_memory and len(train.files()) == 3
    else:
        folder_backed = kind in ("cifar10-jpeg", "imagenet", "folder")
        streamed = kind == "shards"  # never held in memory
        assert train.in_memory == (not streamed and (in_memory or not folder_backed))


@pytest.mark.skipif(
    not (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_honours_the_contract_and_subsets_match_its_labels():
    train, test, _ = load_datasets("fashion-mnist")
    labels = train.labels.numpy()
    small = subset(train, 1000, seed=0)
    chosen = subset_indices(labels, len(labels), 1000, 0)
    assert torch.equal(small.images, train.images[torch.from_numpy(chosen)])
    check_contract(test.take(np.arange(0, 10000, 997)))


def test_stl10_unlabelled_items_are_left_out_by_labelled(tmp_path, monkeypatch):
    train, _, _ = load_datasets(*BUILDERS["stl10"](tmp_path, monkeypatch))
    assert train.label_array().tolist() == [0, 1, -1, -1, 1]
    kept = labelled(train)
    assert kept.label_array().tolist() == [0, 1, 1]
    assert torch.equal(kept.images_tensor(), train.images_tensor()[[0, 1, 4]])


# --------------------------------------------------------------------------- subsets


def marked(labels: list[int]) -> TensorImageDataset:
    """Image i holds the value i, so a subset shows which items it took."""
    images = torch.arange(len(labels)).view(-1, 1, 1, 1).repeat(1, 3, 1, 1).to(torch.uint8)
    return TensorImageDataset(images, torch.tensor(labels))


def ids(dataset: TensorImageDataset) -> list[int]:
    return dataset.images[:, 0, 0, 0].tolist()


def test_subsets_through_the_contract_are_the_ones_drawn_before_it(tmp_path):
    """The indices below were drawn by the isinstance-based code this contract replaced."""
    balanced = marked([0] * 50 + [1] * 30 + [2] * 4 + [3] * 20)
    drawn = "3 6 15 23 25 27 30 37 49 55 58 61 63 64 66 67 74 80 81 82 83 85 89 90 92 93 94 98 99"
    assert ids(subset(balanced, 30, 1)) == [int(i) for i in drawn.split()] + [102]
    assert ids(subset(balanced, 10, 0)) == [18, 23, 55, 57, 78, 80, 81, 82, 89, 96]
    assert ids(subset(balanced, 9, 2)) == [6, 40, 52, 61, 80, 81, 87, 91, 98]
    assert ids(subset(marked([-1] * 20), 7, 5)) == [0, 8, 9, 12, 13, 18, 19]
    partly = labelled(marked([0, -1, 1, -1, -1, 2, 0, 1, -1, 2, 2, 0, -1, 1]))
    assert ids(partly) == [0, 2, 5, 6, 7, 9, 10, 11, 13]
    assert ids(subset(partly, 6, 4)) == [0, 2, 6, 9, 10, 13]
    for c in "abc":
        for j in range(5):
            save_png(tmp_path / c / f"{j}.png", (3, 3), j)
    folder = subset(ImageFolderDataset(tmp_path, transform=torch.clone), 6, 7)
    assert isinstance(folder, ImageFolderDataset) and folder.transform is torch.clone
    names = [p.relative_to(tmp_path).as_posix() for p in folder.files()]
    assert names == ["a/0.png", "a/2.png", "b/0.png", "b/1.png", "c/2.png", "c/4.png"]


def test_another_map_style_dataset_is_subset_as_a_torch_subset_was():
    images = toy_images(12)
    plain = torch.utils.data.TensorDataset(images, torch.arange(12))
    small = subset(plain, 5, seed=3)
    expected = np.sort(np.random.default_rng(3).choice(12, 5, replace=False))  # labels unknown
    assert [int(small[i][1]) for i in range(5)] == expected.tolist()
    assert labelled(plain) is plain and indexable(plain, "x").label_array() is None


# --------------------------------------------------------------------------- streams


def items_of(dataset, **loader) -> list[int]:
    """Which marked images a DataLoader over ``dataset`` yields, in the order it yields them."""
    return [int(image[0, 0, 0]) for image, _ in DataLoader(dataset, batch_size=None, **loader)]


def test_a_stream_is_read_in_order_and_split_once_across_ranks_and_workers():
    stream = ListStream(marked(list(range(11))).images, [0, -1, 1, -1, 2, 2, -1, 0, 1, -1, 1])
    assert items_of(stream) == list(range(11))
    assert [label for _, label in stream][:3] == [0, -1, 1]
    ranks = [stream.shard(rank, 3) for rank in range(3)]
    assert [items_of(rank) for rank in ranks] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert [rank.num_samples for rank in ranks] == [4, 4, 3]
    # Two workers of rank 1 together yield its items once each.
    assert sorted(items_of(ranks[1], num_workers=2)) == [1, 4, 7, 10]
    kept = labelled(stream)
    assert items_of(kept) == [0, 2, 4, 5, 7, 8, 10] and kept.num_samples is None
    halves = [items_of(kept.shard(rank, 2)) for rank in range(2)]
    assert sorted(halves[0] + halves[1]) == [0, 2, 4, 5, 7, 8, 10]
    shifted = kept.with_transform(lambda t: t.float() + 1)
    assert next(iter(shifted))[0].dtype == torch.float32 and kept.transform is None
    with pytest.raises(ValueError, match="shard index"):
        stream.shard(3, 3)


def assert_one_line_refusal(error: pytest.ExceptionInfo, *words: str) -> None:
    message = str(error.value)
    assert isinstance(error.value, DatasetError) and one_line(error.value) == message
    assert "\n" not in message and "streaming" in message
    assert all(word in message for word in words), message


def test_a_stream_cannot_be_subset_by_index():
    stream = ListStream(toy_images(6), [0, 1, 2, 0, 1, 2])
    with pytest.raises(DatasetError) as error:
        subset(stream, 3)
    assert_one_line_refusal(error, "list-stream", "a subset of 3 items", "random access")
    with pytest.raises(DatasetError) as error:
        indexable(stream, "the thing", "do that instead")
    assert_one_line_refusal(error, "the thing", "do that instead")


def to_float(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255


def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.AdaptiveAvgPool2d(1))


def test_features_of_a_stream_are_those_of_the_same_images_in_memory():
    images, labels = toy_images(40), [i % 4 for i in range(40)]
    held = TensorImageDataset(images, torch.tensor(labels), to_float)
    want_x, want_y = extract_features(encoder(), held, torch.device("cpu"), 16)
    stream = ListStream(images, labels).with_transform(to_float)
    x, y = extract_features(encoder(), stream, torch.device("cpu"), 16)
    assert torch.equal(y, want_y) and torch.allclose(x, want_x, atol=1e-6)
    # Through two workers each item comes once; the batches interleave.
    x2, y2 = extract_features(encoder(), stream, torch.device("cpu"), 16, num_workers=2)
    order = [int(i) for i in x2[:, 0].argsort()]
    assert torch.allclose(x2[order], x[x[:, 0].argsort()], atol=1e-6)
    assert sorted(y2.tolist()) == sorted(labels)


def test_the_knn_monitor_scores_a_partly_labelled_stream_as_the_same_images_in_memory():
    images = toy_images(90, seed=1)
    labels = [-1 if i % 5 == 0 else i % 3 for i in range(90)]
    config = preset("fashion-mnist").replace(image_size=8, knn_k=5)
    config = config.replace(knn_bank_subset=0, eval_batch_size=32)
    cpu = torch.device("cpu")
    held = KnnMonitor(
        config,
        TensorImageDataset(images[:60], torch.tensor(labels[:60])),
        TensorImageDataset(images[60:], torch.tensor([i % 3 for i in range(30)])),
        TOY_INFO,
        cpu,
        "fp32",
    )
    streamed = KnnMonitor(
        config,
        ListStream(images[:60], labels[:60], known_length=False),
        ListStream(images[60:], [i % 3 for i in range(30)]),
        TOY_INFO,
        cpu,
        "fp32",
    )
    assert streamed.score(encoder()) == pytest.approx(held.score(encoder()), abs=1e-9)
    assert streamed.score_pixels() == pytest.approx(held.score_pixels(), abs=1e-9)
    bank = config.replace(knn_bank_subset=20)
    with pytest.raises(DatasetError) as error:
        KnnMonitor(bank, ListStream(images[:60], labels[:60]), held.queries, TOY_INFO, cpu, "fp32")
    assert_one_line_refusal(error, "knn_bank_subset=20", "set knn_bank_subset=0")


# --------------------------------------------------------------------------- registered streams


def register_toys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sources of the same images, one streaming and one in memory: each one line."""
    images = toy_images(48, 16, seed=2)
    labels = [i % 3 for i in range(48)]

    def streamed(request: data.LoadRequest):
        info = dataclasses.replace(TOY_INFO, name=request.name)
        return ListStream(images[:36], labels[:36]), ListStream(images[36:], labels[36:]), info

    def held(request: data.LoadRequest):
        train = TensorImageDataset(images[:36], torch.tensor(labels[:36]))
        test = TensorImageDataset(images[36:], torch.tensor(labels[36:]))
        return train, test, dataclasses.replace(TOY_INFO, name=request.name)

    monkeypatch.setitem(SOURCES, "toy-stream", Registered(streamed))
    monkeypatch.setitem(SOURCES, "toy-tensors", Registered(held))


def test_evaluation_scores_a_stream_as_the_same_images_held_in_memory(tmp_path, monkeypatch):
    from byol.backbones import build_backbone
    from byol.checkpoint import save_encoder
    from byol.evaluation.protocols import Evaluation
    from byol.run_folder import save_config

    register_toys(monkeypatch)
    config = preset("fashion-mnist").replace(
        dataset="toy-stream", backbone="resnet18-narrow", image_size=16
    )
    save_config(tmp_path, config)
    net, _ = build_backbone(config.model.backbone, config.model.cifar_stem)
    save_encoder(
        tmp_path / "encoder.safetensors", net, config.model.backbone, config.model.cifar_stem
    )
    settings = ["device=cpu", "precision=fp32", "eval_batch_size=16", "knn_ks=5"]
    streamed = Evaluation(tmp_path, "TOY_STREAM", settings)
    assert streamed.train.streaming and streamed.dataset == "TOY_STREAM"
    held = Evaluation(tmp_path, "toy-tensors", settings)
    assert streamed.knn("byol") == held.knn("byol")
    # Label subsets of a stream are positions in its stored order: the same images as by index.
    assert streamed.linear("byol")["linear_top1"] == held.linear("byol")["linear_top1"]


def test_pretraining_refuses_a_stream_in_one_line(tmp_path, monkeypatch):
    from byol.training.loop import pretrain

    register_toys(monkeypatch)
    changes = dict(dataset="toy-stream", backbone="resnet18-narrow", image_size=16, batch_size=8)
    config = preset("fashion-mnist").replace(**changes, knn_bank_subset=0)
    with pytest.raises(DatasetError) as error:
        pretrain(config, tmp_path / "run", quiet=True)
    assert_one_line_refusal(error, "pretraining")
