"""End to end on real Fashion-MNIST images: pretrain, checkpoint, resume, kNN, export."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from byol.backbones import build_backbone
from byol.checkpoint import encoder_metadata, load_encoder, save_encoder
from byol.data import load_datasets
from byol.evaluation.knn import knn_accuracy
from byol.presets import preset
from byol.reporting.learning_curves import read_curve
from byol.run_folder import CHECKPOINT, ENCODER, read_metrics
from byol.training.loop import pretrain
from byol.training.schedules import learning_rate, target_tau

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory) -> Path:
    """A real Fashion-MNIST subset as an image folder: 512 train and 200 test PNGs by class."""
    root = tmp_path_factory.mktemp("fashion")
    train, test, info = load_datasets("fashion-mnist")
    for split, dataset, count in (("train", train, 512), ("test", test, 200)):
        generator = torch.Generator().manual_seed(0)
        for index in torch.randperm(len(dataset), generator=generator)[:count].tolist():
            image, label = dataset[index]
            folder = root / split / info.classes[label].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{index}.png")
    return root


def small_config(folder: Path, **changes):
    config = preset("fashion-mnist")
    settings = dict(
        dataset=str(folder),
        backbone="resnet18-narrow",  # 1/8-width ResNet-18: behaviour, not accuracy
        batch_size=64,
        epochs=2,
        warmup_epochs=0.5,
        projector_hidden_dim=128,
        predictor_hidden_dim=128,
        projection_dim=64,
        num_workers=0,
        log_every_steps=2,
        knn_bank_subset=0,
        knn_references=False,
        precision="fp32",
        predictor_warmup_steps=3,  # the preset's 50 would outlast these runs; 3 crosses the switch
        schedule_epochs=0,  # schedules end with the run, as the paper's do
    )
    return config.replace(**{**settings, **changes})


def encoder_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / ENCODER))


@needs_fashion_mnist
@pytest.mark.parametrize("views", ["batched", "per-image"])
def test_pretrain_resume_matches_uninterrupted_run(fashion_folder, tmp_path, views):
    config = small_config(fashion_folder, view_path=views)
    full = pretrain(config, tmp_path / "full", quiet=True)
    assert full.steps == 2 * (512 // 64)

    # Stop after the first step (a deadline that has passed), then resume to the end.
    stopped = pretrain(config.replace(max_minutes=1e-9), tmp_path / "cut", quiet=True)
    assert stopped.steps == 1
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["stopped_early"]
    resumed = pretrain(config, tmp_path / "cut", resume=True, quiet=True)
    assert resumed.steps == full.steps

    a, b = encoder_weights(tmp_path / "full"), encoder_weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    largest = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert largest < 1e-4, f"resumed run differs from the uninterrupted one by {largest}"

    # metrics.jsonl of the resumed run holds each step once, in order
    steps = [r["step"] for r in read_metrics(tmp_path / "cut") if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == full.steps


@needs_fashion_mnist
def test_run_folder_contents_and_knn(fashion_folder, tmp_path):
    config = small_config(fashion_folder, knn_references=True, knn_bank_subset=200)
    result = pretrain(config, tmp_path, quiet=True)

    records = read_metrics(tmp_path)
    step_records = [r for r in records if "loss" in r]
    for key in ("step", "epoch", "loss", "lr", "tau", "collapse"):
        assert all(key in r for r in step_records)
    # Where the time went: the share spent waiting for views, in every record and the summary.
    assert all(0.0 < r["data_share"] < 1.0 for r in step_records)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 < summary["data_wait_s"] < summary["wall_time_s"]
    total = result.steps
    for r in step_records:  # the tau used by the step that ended at r["step"]
        assert r["tau"] == pytest.approx(target_tau(r["step"] - 1, total, config.schedule.tau_base))
        assert r["lr"] == pytest.approx(learning_rate(r["step"] - 1, total, 4, 0.25))
    taus = [r["tau"] for r in step_records]
    assert taus == sorted(taus) and taus[-1] == pytest.approx(1.0, abs=1e-3)
    epoch_records = [r for r in records if "knn_top1" in r and not r.get("final")]
    assert [r["epoch"] for r in epoch_records] == [1]  # the last epoch is scored by the final kNN
    assert all(0.0 <= r["collapse"] <= 1.5 for r in records if "collapse" in r)
    final = records[-1]
    assert final["final"] and final["knn_top1"] == pytest.approx(result.knn_top1)
    # 10 balanced classes: chance is 10%; even 16 steps of a 1/8-width ResNet do far better
    assert result.knn_top1 > 25 and result.knn_top1_random_init > 20 and result.knn_top1_pixels > 40
    # The epochs' 200-image bank (of 512) is scored at the end too, so a curve ends on it.
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 25 < summary["knn_top1_epoch_bank"] and 40 < summary["knn_top1_pixels_epoch_bank"]
    assert read_curve(tmp_path).knn[-1] == summary["knn_top1_epoch_bank"]

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["optim"]["batch_size"] == 64 and saved["data"]["dataset"] == str(fashion_folder)
    assert (tmp_path / CHECKPOINT).is_file()
    assert list((tmp_path / "tensorboard").iterdir())

    # The exported encoder loads back into its architecture and gives the run's features.
    assert encoder_metadata(tmp_path / ENCODER)["architecture"] == config.model.backbone
    loaded, _ = load_encoder(tmp_path / ENCODER)
    trained = build_backbone(config.model.backbone)[0]
    trained.load_state_dict(encoder_weights(tmp_path))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(trained.eval()(x), loaded.eval()(x))


def test_exported_resnet18_loads_into_the_plain_torchvision_model(tmp_path):
    """What pretrain writes (save_encoder) loads into torchvision.models.resnet18, fc aside."""
    import torchvision

    torch.manual_seed(0)
    encoder, _ = build_backbone("resnet18")
    with torch.no_grad():  # not the initial weights: every tensor must travel
        for name, tensor in encoder.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif tensor.is_floating_point():
                tensor.normal_(0.0, 0.05)
    save_encoder(tmp_path / ENCODER, encoder, "resnet18", cifar_stem=False)
    assert encoder_metadata(tmp_path / ENCODER)["architecture"] == "resnet18"
    plain = torchvision.models.resnet18()
    missing = plain.load_state_dict(encoder_weights(tmp_path), strict=False).missing_keys
    assert missing == ["fc.weight", "fc.bias"]
    loaded, _ = load_encoder(tmp_path / ENCODER)
    plain.fc = torch.nn.Identity()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), loaded.eval()(x))
        assert torch.allclose(encoder.eval()(x), loaded(x))


def test_knn_of_a_perfect_feature_map_is_100_percent():
    labels = torch.arange(10).repeat(30)
    features = torch.nn.functional.one_hot(labels, 10).float() + 0.01 * torch.randn(300, 10)
    assert knn_accuracy(features, labels, features[:50], labels[:50], k=20) == 100.0


def test_knn_weights_votes_by_similarity():
    # Query at angle 0; two class-1 points far away, one class-0 point very close.
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    bank_labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.05]])
    assert knn_accuracy(bank, bank_labels, query, torch.tensor([0]), k=3, temperature=0.1) == 100.0
    # with a huge temperature the votes become a plain majority: class 1 wins
    assert knn_accuracy(bank, bank_labels, query, torch.tensor([1]), k=3, temperature=1e6) == 100.0


@needs_fashion_mnist
def test_sigterm_saves_a_checkpoint_and_resume_finishes(fashion_folder, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    settings = [
        f"dataset={fashion_folder}",
        "backbone=resnet18-narrow",  # 1/8-width ResNet-18: behaviour, not accuracy
        "batch_size=32",
        "epochs=3",
        "projector_hidden_dim=64",
        "predictor_hidden_dim=64",
        "num_workers=0",
        "log_every_steps=1",
        "knn_references=false",
        "precision=fp32",
    ]
    command = [sys.executable, "-m", "byol", "pretrain", "--quiet", "--run-dir", str(run_dir)]
    for item in settings:
        command += ["--set", item]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the run never logged a step"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "SIGTERM" in stderr and f"--resume {run_dir}" in stderr
    assert "Traceback" not in stderr
    stopped_at = torch.load(run_dir / CHECKPOINT, weights_only=True)["step"]
    assert 2 <= stopped_at < 3 * (512 // 32)

    resumed = subprocess.run(
        [sys.executable, "-m", "byol", "pretrain", "--quiet", "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "kNN top-1" in resumed.stdout
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 3 * (512 // 32)


@needs_fashion_mnist
def test_a_second_signal_stops_at_once_and_names_the_checkpoint_to_resume_from(
    fashion_folder, tmp_path, monkeypatch
):
    """A second Ctrl-C arrives as KeyboardInterrupt in the middle of a step: the run stops with
    the step of its last checkpoint and the resume command, and resuming finishes the run."""
    import byol.training.loop as loop
    from byol.errors import RunInterrupted

    real_step, calls = loop.accumulated_step, []

    def interrupted_on_the_fifth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "accumulated_step", interrupted_on_the_fifth)
    config = small_config(fashion_folder, epochs=1, checkpoint_every_steps=2)
    with pytest.raises(RunInterrupted) as stopped:
        pretrain(config, tmp_path, quiet=True)
    message = str(stopped.value)
    assert "after the last checkpoint (step 4)" in message
    assert f"--resume {tmp_path}" in message and "\n" not in message
    monkeypatch.setattr(loop, "accumulated_step", real_step)
    result = pretrain(config, tmp_path, resume=True, quiet=True)
    assert result.steps == 512 // 64


@needs_fashion_mnist
def test_schedules_can_span_more_epochs_than_the_run(fashion_folder, tmp_path):
    config = small_config(fashion_folder, epochs=1, schedule_epochs=4, log_every_steps=1)
    result = pretrain(config, tmp_path, quiet=True)
    schedule, warmup = 4 * result.steps, round(0.5 * result.steps)
    records = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, result.steps + 1))
    for r in records:  # the step that ended at r["step"] used the schedules at r["step"] - 1
        assert r["lr"] == pytest.approx(learning_rate(r["step"] - 1, schedule, warmup, 0.25))
        assert r["tau"] == pytest.approx(
            target_tau(r["step"] - 1, schedule, config.schedule.tau_base)
        )
    assert records[-1]["lr"] > 0.2 and records[-1]["tau"] < 0.99  # stopped before they decayed


@needs_fashion_mnist
def test_predictor_warmup_trains_the_predictor_alone_then_everything(fashion_folder, tmp_path):
    from byol.training.train_state import build_model

    config = small_config(fashion_folder, epochs=1, knn_every_epochs=0, knn_final=False)
    torch.manual_seed(config.seed)  # the weights every run below starts from
    initial = {
        k: v.detach().clone() for k, v in build_model(config).online_encoder.named_parameters()
    }

    pretrain(config.replace(predictor_warmup_steps=8), tmp_path / "all", quiet=True)
    frozen = encoder_weights(tmp_path / "all")
    for name, weight in initial.items():  # parameters only: BN running statistics still update
        torch.testing.assert_close(frozen[name], weight, rtol=0, atol=0, msg=name)

    pretrain(config.replace(predictor_warmup_steps=3), tmp_path / "some", quiet=True)
    trained = encoder_weights(tmp_path / "some")
    assert any(not torch.equal(trained[name], weight) for name, weight in initial.items())

    # The baselines and the predictor ablation have no predictor to warm up: the option is inert.
    assert not hasattr(build_model(config.replace(method="simclr")), "predictor")
    no_predictor = build_model(config.replace(use_predictor=False))
    assert no_predictor.predictor_warmup_steps == 0
