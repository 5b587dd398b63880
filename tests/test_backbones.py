"""timm backbones (a tiny ResNet, a tiny ViT) through pretraining, evaluation, export and embed;
ViT parameter groups; `byol models`; loggers; the one-line errors when an extra is missing."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from byol.cli import main
from byol.config import Config, apply_overrides
from byol.data import load_datasets
from byol.errors import ConfigError
from byol.presets import preset
from byol.run_folder import ENCODER, VIEWS
from byol.training.loop import pretrain

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
# Tiny versions of two timm families, so that each run takes a second or two.
TINY = {
    "resnet": ("timm:resnet18", "channels=(8,16,32,64)"),
    "vit": ("timm:vit_tiny_patch16_224", "patch_size=7,embed_dim=32,depth=2,num_heads=2"),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Real Fashion-MNIST images as a folder: 96 train and 30 test PNGs of three classes."""
    root = tmp_path_factory.mktemp("fashion3")
    train, test, info = load_datasets("fashion-mnist")
    for split, dataset, count in (("train", train, 32), ("test", test, 10)):
        labels = dataset.labels if hasattr(dataset, "labels") else None
        for label in range(3):
            indices = (torch.as_tensor(labels) == label).nonzero().flatten()[:count].tolist()
            for index in indices:
                image = dataset[index][0]
                target = root / split / info.classes[label].replace("/", "-")
                target.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image[0].numpy(), mode="L").save(target / f"{index}.png")
    return root


def tiny_config(folder: Path, kind: str, **changes) -> Config:
    backbone, kwargs = TINY[kind]
    settings = dict(
        dataset=str(folder),
        backbone=backbone,
        backbone_kwargs=kwargs,
        batch_size=32,
        epochs=1,
        warmup_epochs=0.3,
        projector_hidden_dim=64,
        predictor_hidden_dim=64,
        projection_dim=32,
        num_workers=0,
        log_every_steps=1,
        knn_bank_subset=0,
        knn_references=False,
        precision="fp32",
        predictor_warmup_steps=1,
        schedule_epochs=0,
        threads=2,
    )
    return preset("fashion-mnist").replace(**{**settings, **changes})


@pytest.fixture(scope="module")
def vit_run(folder, tmp_path_factory) -> Path:
    pytest.importorskip("timm", reason="timm backbones need the timm extra")
    run_dir = tmp_path_factory.mktemp("vit") / "run"
    pretrain(tiny_config(folder, "vit", optimizer="adamw", base_lr=1e-3), run_dir, quiet=True)
    return run_dir


@needs_fashion_mnist
@pytest.mark.parametrize("kind, method", [("resnet", "byol"), ("vit", "simclr")])
def test_tiny_timm_backbones_pretrain(folder, tmp_path, kind, method):
    pytest.importorskip("timm", reason="timm backbones need the timm extra")
    config = tiny_config(folder, kind, method=method)
    result = pretrain(config, tmp_path / "run", quiet=True)
    assert result.steps == 3 and 0 <= result.knn_top1 <= 100
    assert (tmp_path / "run" / VIEWS).is_file()


@needs_fashion_mnist
def test_vit_run_trains_evaluates_and_loads_into_timm(vit_run, folder):
    import timm

    from byol.checkpoint import encoder_metadata, load_encoder, loading_lines

    summary = json.loads((vit_run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["knn_top1"] is not None
    meta = encoder_metadata(vit_run / ENCODER)
    assert json.loads(meta["timm_kwargs"])["img_size"] == 28
    ours, _ = load_encoder(vit_run / ENCODER)
    # The two lines pretrain prints, run as a user would: timm's own model, our weights.
    scope: dict = {}
    exec("\n".join(loading_lines(vit_run / ENCODER, meta)), scope)
    theirs = scope["model"].eval()
    assert isinstance(theirs, timm.models.vision_transformer.VisionTransformer)
    weights = load_file(str(vit_run / ENCODER))
    assert all(torch.equal(theirs.state_dict()[k], v) for k, v in weights.items())
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(theirs(x), ours.eval()(x))
    assert main(["eval", "knn", str(vit_run)]) == 0


@needs_fashion_mnist
def test_onnx_export_matches_pytorch(vit_run, capsys):
    pytest.importorskip("onnxruntime", reason="ONNX export needs the onnx extra")
    assert main(["export", str(vit_run), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    difference = float(out.split("max abs difference")[1])
    assert difference < 1e-4 and (vit_run / "export" / "encoder.onnx").is_file()


@needs_fashion_mnist
def test_embed_a_folder_with_relative_names(vit_run, folder, tmp_path, capsys):
    images = tmp_path / "mine"
    (images / "nested").mkdir(parents=True)
    for i, source in enumerate(sorted((folder / "test").rglob("*.png"))[:3]):
        Image.open(source).save(images / ("nested" if i else "") / f"{i}.png")
    (images / "broken.png").write_bytes(b"not an image")
    assert main(["embed", str(vit_run), str(images), "--out", str(tmp_path / "out")]) == 0
    embeddings = np.load(tmp_path / "out" / "embeddings.npy")
    files = (tmp_path / "out" / "files.txt").read_text().splitlines()
    assert files == ["0.png", "nested/1.png", "nested/2.png"] and embeddings.shape == (3, 32)
    manifest = json.loads((tmp_path / "out" / "embed.json").read_text())
    assert manifest["unreadable_skipped"] == [str(images / "broken.png")]
    try:
        import pyarrow.parquet as pq
    except ImportError:  # Parquet is written only where pyarrow is installed
        return
    table = pq.read_table(tmp_path / "out" / "embeddings.parquet").to_pydict()
    assert table["file"] == files and np.allclose(table["embedding"], embeddings)


def test_vit_parameter_groups_leave_out_tokens_embeddings_norms_and_biases():
    timm = pytest.importorskip("timm", reason="timm backbones need the timm extra")
    from byol.training.optim import parameter_groups

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=28, patch_size=7)
    names = {id(p): n for n, p in vit.named_parameters()}
    decayed, excluded = (
        {names[id(p)] for p in g["params"]} for g in parameter_groups(vit, 0.05) if g["params"]
    )
    assert {"pos_embed", "cls_token", "norm.weight", "blocks.0.attn.qkv.bias"} <= excluded
    assert {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight"} <= decayed
    assert all(p.ndim > 1 for n, p in vit.named_parameters() if n in decayed)


def test_batchnorm_with_activation_is_refused_for_cpu_sync_batchnorm():
    layers = pytest.importorskip("timm.layers", reason="timm backbones need the timm extra")
    from byol.sync_batchnorm import convert_sync_batchnorm

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), layers.BatchNormAct2d(4))
    with pytest.raises(ConfigError, match="sync_batchnorm=false"):
        convert_sync_batchnorm(model, torch.device("cpu"))


def test_models_lists_torchvision_and_filters_timm(capsys):
    assert main(["models"]) == 0
    assert "resnet18" in capsys.readouterr().out.split()
    pytest.importorskip("timm", reason="timm backbones need the timm extra")
    assert main(["models", "vit_tiny*"]) == 0
    listed = capsys.readouterr().out.split()
    assert "timm:vit_tiny_patch16_224" in listed and "resnet18" not in listed


def test_missing_timm_is_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError, match=r"byol\[timm\]"):
        apply_overrides(Config(), ["backbone=timm:resnet18"]).validate()
    assert main(["pretrain", "--set", "backbone=timm:resnet18"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'byol[timm]'" in err[0]


@pytest.mark.parametrize(
    "item, words",
    [
        ("backbone=timm:no_such_model", ["no_such_model", "byol models"]),
        ("backbone_kwargs=patch_size=4", ["timm backbones", "resnet50"]),
        ("loggers=tensorboard,neptune", ["loggers", "mlflow", "wandb"]),
    ],
)
def test_backbone_and_logger_settings_are_checked(item, words):
    if "timm:" in item:
        pytest.importorskip("timm", reason="timm backbones need the timm extra")
    with pytest.raises(ConfigError) as error:
        apply_overrides(Config(), [item]).validate()
    assert all(word in str(error.value) for word in words), str(error.value)


def test_printed_lines_load_a_torchvision_encoder(tmp_path):
    from byol.backbones import build_backbone
    from byol.checkpoint import encoder_metadata, load_encoder, loading_lines, save_encoder

    torch.manual_seed(0)
    encoder, _ = build_backbone("resnet18")
    save_encoder(tmp_path / ENCODER, encoder, "resnet18", cifar_stem=False)
    scope: dict = {}
    exec("\n".join(loading_lines(tmp_path / ENCODER, encoder_metadata(tmp_path / ENCODER))), scope)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(scope["model"].eval()(x), load_encoder(tmp_path / ENCODER)[0].eval()(x))


def test_kwargs_that_would_load_weights_are_refused():
    pytest.importorskip("timm", reason="timm backbones need the timm extra")
    from byol.backbones import timm_model

    for kwargs in ({"checkpoint_path": "/tmp/evil.pth"}, {"pretrained": True}):
        with pytest.raises(ConfigError, match="may not set"):
            timm_model("timm:resnet18", kwargs)


@pytest.mark.parametrize(("name", "divisor"), [("resnet18-narrow", 8), ("resnet18-half", 2)])
def test_reduced_width_resnets_are_resnet18_with_fewer_channels(name, divisor):
    from torchvision.models import resnet18

    from byol.backbones import build_backbone, torchvision_model

    full = resnet18(weights=None).state_dict()
    reduced = torchvision_model(name).state_dict()
    assert reduced.keys() == full.keys()  # torchvision's key names: loads where ResNet-18's do
    for key, tensor in full.items():
        if tensor.dim() == 0:  # num_batches_tracked
            continue
        expected = list(tensor.shape)  # out, in (channels or features), then the kernel
        if not key.startswith("fc."):
            expected[0] //= divisor
        if tensor.dim() > 1 and key != "conv1.weight":  # conv1 still reads RGB
            expected[1] //= divisor
        assert list(reduced[key].shape) == expected, key
    encoder, dim = build_backbone(name, cifar_stem=True)
    assert dim == 512 // divisor
    assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, dim)
