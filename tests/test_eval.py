"""Evaluation protocols on synthetic features and on a few hundred real Fashion-MNIST images."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol.backbones import build_backbone
from byol.checkpoint import load_encoder, save_encoder
from byol.cli import main
from byol.data import load_datasets, subset_indices
from byol.evaluation.knn import knn_evaluate
from byol.evaluation.probes import Transformed, finetune, linear_fast, linear_paper
from byol.evaluation.protocols import Evaluation
from byol.presets import preset
from byol.run_folder import save_config

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
SMALL = [
    "device=cpu",
    "precision=fp32",
    "eval_batch_size=200",
    "linear_epochs=3",
    "linear_lrs=0.1,1.0",
    "label_fractions=0.1,0.5",
    "finetune_epochs=1,1",
    "finetune_batch_size=50",
]


# --------------------------------------------------------------------------- synthetic


def blobs(n: int, classes: int = 5, dim: int = 16, seed: int = 0):
    """Gaussian clusters around fixed centres; ``seed`` draws the noise only."""
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * 3
    noise = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed + 1))
    return centres[labels] + noise, labels


def test_knn_of_a_perfect_feature_map_is_100_percent():
    labels = torch.arange(300) % 10
    features = torch.nn.functional.one_hot(labels, 10).float() + 0.01 * torch.rand(300, 10)
    scores = knn_evaluate(features, labels, features[:100], labels[:100], (20, 200), 0.1)
    assert scores == {
        "knn20_top1": 100.0,
        "knn20_top5": 100.0,
        "knn200_top1": 100.0,
        "knn200_top5": 100.0,
    }


def test_subset_indices_are_class_balanced_and_identical_across_calls():
    labels = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 140])
    first = subset_indices(labels, len(labels), 100, seed=0)
    assert np.array_equal(first, subset_indices(labels, len(labels), 100, seed=0))
    assert (np.bincount(labels[first], minlength=10) == 10).all()
    assert not np.array_equal(first, subset_indices(labels, len(labels), 100, seed=1))


def test_linear_head_never_sees_test_labels():
    train_x, train_y = blobs(400)
    test_x, test_y = blobs(200, seed=1)
    val = np.arange(0, 400, 10)
    args = dict(lrs=(0.01, 0.1, 1.0), epochs=3, batch_size=64)
    honest = linear_fast(train_x, train_y, test_x, test_y, val, **args)
    shuffled = test_y[torch.randperm(len(test_y), generator=torch.Generator().manual_seed(0))]
    cheated = linear_fast(train_x, train_y, test_x, shuffled, val, **args)
    assert honest.lr == cheated.lr and honest.val_top1 == cheated.val_top1
    assert torch.equal(honest.head.weight, cheated.head.weight)
    assert honest.top1 > 90 and cheated.top1 < 50  # only the final score reads test labels


# --------------------------------------------------------------------------- real images


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder whose 'pretrained' encoder is a seed-1 ResNet-18, evaluated on an image
    folder of 300 training and 100 test Fashion-MNIST images at 32 px."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    root = tmp_path_factory.mktemp("eval")
    train, test, info = load_datasets("fashion-mnist")
    for split, dataset, count in (("train", train, 300), ("test", test, 100)):
        for index in torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[
            :count
        ].tolist():
            image, label = dataset[index]
            folder = root / "data" / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{index}.png")
    run = root / "run"
    run.mkdir()
    config = preset("fashion-mnist").replace(dataset=str(root / "data"), backbone="resnet18-narrow")
    save_config(run, config)
    torch.manual_seed(1)  # not the seed-0 random-init reference
    encoder, _ = build_backbone(config.model.backbone, config.model.cifar_stem)
    save_encoder(
        run / "encoder.safetensors", encoder, config.model.backbone, config.model.cifar_stem
    )
    return run


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@needs_fashion_mnist
def test_label_subsets_are_balanced_saved_and_reused(run_dir):
    first = Evaluation(run_dir, None, SMALL).indices("10pct", 0.1, 0)
    files = sorted(p.name for p in (run_dir / "subsets").iterdir())
    assert any(f.endswith("10pct-seed0.npy") for f in files)
    meta = json.loads((run_dir / "subsets" / files[0].replace(".npy", ".json")).read_text())
    assert meta["indices"] == first.tolist() and len(first) == 30
    counts = meta["class_counts"]
    assert max(counts) - min(counts) <= 1
    assert np.array_equal(first, Evaluation(run_dir, None, SMALL).indices("10pct", 0.1, 0))


@needs_fashion_mnist
def test_finetuning_moves_encoder_weights_linear_evaluation_does_not(run_dir):
    ev = Evaluation(run_dir, None, SMALL)
    encoder = ev.encoder("byol")
    before = state(encoder)
    train_f, train_l = ev.features("byol", "train")
    test_f, test_l = ev.features("byol", "test")
    linear_paper(
        encoder,
        ev.training_views,
        train_f,
        train_l,
        test_f,
        test_l,
        np.arange(0, 300, 10),
        (0.1,),
        ev.device,
        epochs=1,
        batch_size=100,
    )
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())

    subset = Transformed(ev.train, ev.train_transform, np.arange(100))
    test = Transformed(ev.test, ev.eval_transform)
    result = finetune(encoder, subset, test, 10, ev.device, epochs=1, batch_size=50)
    after = result.model[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if "weight" in k)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # a copy


@needs_fashion_mnist
def test_eval_all_writes_results_and_table(run_dir, capsys):
    assert main(["eval", "all", str(run_dir), *sum((["--set", s] for s in SMALL), [])]) == 0
    printed = capsys.readouterr().out
    results = json.loads((run_dir / "results.json").read_text())
    rows = results["datasets"][str(run_dir.parent / "data")]
    assert set(rows) == {"byol", "random-init", "supervised"}
    for method in ("byol", "random-init"):
        assert {"knn20_top1", "knn200_top5", "linear_top1", "linear_lr"} <= set(rows[method])
    for method in ("byol", "supervised"):
        assert {"finetune_10pct_top1", "finetune_50pct_top5"} <= set(rows[method])
    assert 0 <= rows["byol"]["linear_top1"] <= 100
    table = (run_dir / "results.md").read_text()
    assert "| BYOL |" in table and "10% labels top-1" in table and "| BYOL |" in printed
    cache = run_dir / "features"
    assert {p.name.split("-")[0] for p in cache.glob("*.pt")} == {"byol", "random"}
    stamp = {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    assert main(["eval", "knn", str(run_dir), *sum((["--set", s] for s in SMALL), [])]) == 0
    assert stamp == {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")}  # cache reused


@needs_fashion_mnist
def test_export_writes_embeddings_and_a_picture(run_dir):
    out = run_dir / "exported"
    argv = ["export", str(run_dir), "--queries-per-class", "1", "--out", str(out)]
    assert main([*argv, "--set", "device=cpu"]) == 0
    embeddings = np.load(next(out.glob("*-test-embeddings.npy")))
    labels = np.load(next(out.glob("*-test-labels.npy")))
    assert embeddings.shape == (100, 64) and labels.shape == (100,)  # the narrow ResNet: 64-d
    sources = json.loads(next(out.glob("*-test-sources.json")).read_text())
    assert sources["source"][0].endswith(".png")
    with Image.open(next(out.glob("*-neighbours.png"))) as picture:
        assert picture.size[0] > 300


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "knn", str(tmp_path / "missing")]) == 2
    assert main(["eval", "transfer", str(tmp_path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("byol: error:") for line in errors)


def colour_folder(root: Path, per_class: tuple[int, int] = (40, 20)) -> Path:
    """Four classes of 32 px RGB images told apart by their colour alone."""
    generator = torch.Generator().manual_seed(0)
    colours = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])
    for split, count in zip(("train", "test"), per_class, strict=True):
        for c, colour in enumerate(colours):
            (root / split / f"colour{c}").mkdir(parents=True)
            for i in range(count):
                noise = torch.randint(-30, 30, (32, 32, 3), generator=generator)
                pixels = (colour + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels, mode="RGB").save(root / split / f"colour{c}" / f"{i}.png")
    return root


@needs_fashion_mnist
def test_transfer_from_grayscale_to_colour_with_the_paper_linear_mode(run_dir, tmp_path):
    target = str(colour_folder(tmp_path / "colours"))
    settings = [*SMALL, "linear_mode=paper", "linear_epochs=1", "transfer_fractions=0.5"]
    settings.append("transfer_epochs=1")
    argv = ["eval", "transfer", str(run_dir), "--dataset", target]
    assert main([*argv, *sum((["--set", s] for s in settings), [])]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    byol = results["datasets"][target]["byol"]
    assert {"linear_paper_top1", "finetune_50pct_top1"} <= set(byol)
    assert byol["linear_paper_top1"] > 50  # colour is linearly separable even at random init
    assert f"transfer to {target}" in (run_dir / "results.md").read_text()


def test_unknown_setting_names_the_valid_ones(tmp_path, capsys):
    (tmp_path / "encoder.safetensors").write_bytes(b"")
    assert main(["eval", "knn", str(tmp_path), "--set", "linear_lr=0.1"]) == 2
    assert "evaluation settings are" in capsys.readouterr().err


def test_auto_precision_is_bf16_only_where_the_cpu_has_native_bf16(tmp_path, monkeypatch):
    import byol.runtime as runtime

    native = tmp_path / "native"
    native.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512vl\n")
    emulated = tmp_path / "emulated"
    emulated.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512bw avx512vl\n")
    assert runtime.cpu_has_native_bf16(native)
    assert not runtime.cpu_has_native_bf16(emulated)
    assert not runtime.cpu_has_native_bf16(tmp_path / "absent")  # not Linux: no guess

    cpu, read_flags = torch.device("cpu"), runtime.cpu_has_native_bf16
    for flags_file, expected in ((native, "bf16"), (emulated, "fp32")):
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda f=flags_file: read_flags(f))
        assert runtime.device_precision(cpu, "auto") == expected
        assert runtime.device_precision(cpu, "fp32") == "fp32"  # an explicit choice stands


def test_last_stage_input_side_matches_the_torchvision_resnet():
    from byol.backbones import last_stage_input_side, torchvision_model

    seen = []
    for cifar_stem in (False, True):
        net = torchvision_model("resnet18", cifar_stem).eval()
        net.layer4.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        for size in (4, 8, 15, 16, 17, 28, 32, 33, 96):
            with torch.no_grad():
                net(torch.zeros(1, 3, size, size))
            side = seen.pop().shape[-1]
            assert side == last_stage_input_side(size, cifar_stem), (size, cifar_stem)


def test_auto_keeps_fp32_training_where_bf16_gradients_break_on_cpu(monkeypatch):
    import byol.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    cpu = torch.device("cpu")

    def resolved(config):  # the one rule training, the kNN monitor and `byol eval` share
        return runtime.resolve_precision(
            cpu, config.runtime.precision, config.data.image_size, config.model.cifar_stem
        )

    fashion = preset("fashion-mnist")
    assert resolved(fashion) == "bf16"  # 28 px: layer4 sees 2x2
    tiny = fashion.replace(image_size=16)
    assert resolved(tiny) == "fp32"  # 16 px: layer4 sees 1x1
    assert resolved(tiny.replace(cifar_stem=True)) == "bf16"
    assert resolved(tiny.replace(precision="bf16")) == "bf16"


def test_pixel_knn_of_grey_images_scores_as_the_three_channel_pixels_do():
    from byol.data import DatasetInfo
    from byol.data.images import TensorImageDataset
    from byol.evaluation.knn import knn_accuracy
    from byol.training.monitor import KnnMonitor, _grey, _pixels

    generator = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (300, 1, 8, 8), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 3, (300,), generator=generator)
    config = preset("fashion-mnist").replace(image_size=8, knn_k=20)
    info = DatasetInfo("grey", ["a", "b", "c"], (0.3,) * 3, (0.2,) * 3, True)
    train = TensorImageDataset(grey[:200].repeat(1, 3, 1, 1), labels[:200])
    test = TensorImageDataset(grey[200:].repeat(1, 3, 1, 1), labels[200:])
    monitor = KnnMonitor(config, train, test, info, torch.device("cpu"), "fp32")

    (bank, bank_labels), (queries, query_labels) = map(
        _pixels, (monitor.full_bank, monitor.queries)
    )
    assert _grey(bank) and bank.shape[1] == 3
    all_channels = knn_accuracy(bank.flatten(1), bank_labels, queries.flatten(1), query_labels, 20)
    assert monitor.score_pixels() == pytest.approx(all_channels, abs=1e-6)
    assert not _grey(torch.rand(4, 3, 8, 8))


def test_eval_set_dataset_evaluates_that_dataset(run_dir, tmp_path, capsys):
    target = str(colour_folder(tmp_path / "colours"))
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["eval", "knn", str(copy), "--set", f"dataset={target}", "--set", "knn_ks=5"]) == 0
    results = json.loads((copy / "results.json").read_text())
    assert target in results["datasets"]  # not the pretraining dataset
    assert f"transfer to {target}" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["results_not_json", "results_a_list"])
def test_corrupt_results_are_set_aside_and_written_afresh(run_dir, tmp_path, capsys, damage):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("results.*"))
    text = "{not json" if damage == "results_not_json" else "[1, 2]"
    (copy / "results.json").write_text(text)
    assert main(["eval", "knn", str(copy), "--set", "knn_ks=5"]) == 0
    assert (copy / "results.json.unreadable").read_text() == text  # the old one, kept
    tables = json.loads((copy / "results.json").read_text())["datasets"]
    assert [list(rows["byol"]) for rows in tables.values()] == [["knn5_top1", "knn5_top5"]]
    assert "Traceback" not in capsys.readouterr().err


def test_a_corrupt_label_subset_ends_in_one_line(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("results.*"))
    assert main(["eval", "knn", str(copy), "--set", "knn_ks=5"]) == 0
    folder = copy / "subsets"
    folder.mkdir(exist_ok=True)
    (folder / "data-1pct-seed0.npy").write_bytes(b"\x93NUMPY")  # cut short
    (folder / "data-1pct-seed0.json").write_text('{"train_size": 300}')
    capsys.readouterr()
    assert main(["eval", "finetune", str(copy), "--set", "finetune_epochs=1,1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "delete" in err, err


def test_an_encoder_with_nan_weights_is_not_scored(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("results.*", "features"))
    encoder, _ = load_encoder(copy / "encoder.safetensors")
    with torch.no_grad():
        encoder.conv1.weight[0, 0, 0, 0] = float("nan")
    save_encoder(copy / "encoder.safetensors", encoder, "resnet18-narrow", False)
    assert main(["eval", "knn", str(copy), "--set", "knn_ks=5"]) == 2
    assert "inf or NaN weights" in capsys.readouterr().err
    assert not (copy / "results.json").exists()


@needs_fashion_mnist
def test_train_images_narrows_to_a_balanced_subset_and_pixels_are_an_encoder(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("results.*", "features"))
    ev = Evaluation(copy, None, [*SMALL, "train_images=50", "knn_ks=5"])
    counts = np.bincount(ev.train_labels(), minlength=ev.num_classes)
    assert counts.sum() == 50 and counts.max() - counts.min() <= 1
    # Raw pixels: the identity map of each eval view, never cached at the size of the images.
    pixels, labels = ev.features("pixels", "test")
    image, label = ev.test.with_transform(ev.eval_transform)[7]
    assert torch.allclose(pixels[7], image.flatten()) and labels[7] == label
    assert 0 <= ev.knn("pixels")["knn5_top1"] <= 100
    assert not list((copy / "features").glob("pixels-*"))
    # Numbers on a subset of the training images are not the protocol's: not in results.json.
    assert ev.knn("byol")["knn5_top1"] >= 0 and not (copy / "results.json").exists()
