"""Files from other people: a checkpoint must never run code, a checkpoint or encoder of another
architecture or method is refused naming the mismatch, and archives cannot write outside the
folder they are extracted to. The malicious files here are real: unpickled naively, they would
create a file (shown in the first test)."""

from __future__ import annotations

import hashlib
import io
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from byol.checkpoint import (
    _MAGIC,
    _TRAILER,
    load_checkpoint,
    load_encoder,
    load_model_state,
    save_checkpoint,
)
from byol.cli import main
from byol.data import cifar10_jpeg
from byol.errors import CheckpointError
from byol.presets import preset
from byol.run_folder import CHECKPOINT, save_config
from byol.training.loop import pretrain
from byol.training.optim import build_optimizer
from byol.training.train_state import build_model


class CreatesFile:
    """Unpickling this calls ``open(path, "w")``: the file appearing is the proof code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def malicious_raw_pickle(marker: Path) -> bytes:
    return pickle.dumps({"format": 2, "model": CreatesFile(marker)})


def malicious_torch_file(marker: Path) -> bytes:
    """torch.save's zip format with a code-running object inside, plus a valid byol checksum
    trailer (a checksum proves integrity, not trust: anyone can compute one)."""
    buffer = io.BytesIO()
    torch.save({"format": 2, "model": CreatesFile(marker), "step": 1}, buffer)
    payload = buffer.getvalue()
    trailer = _TRAILER.pack(_MAGIC, len(payload), hashlib.sha256(payload).digest())
    return payload + trailer


def test_the_crafted_pickles_really_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-by-pickle"
    pickle.loads(malicious_raw_pickle(marker))
    assert marker.exists()  # so the refusals below are not vacuous
    marker.unlink()
    # The torch file's pickle, unpickled by plain pickle (it holds no tensors), on our own crafted
    # bytes in tmp_path: proves the payload would run code, without an unsafe torch.load.
    with zipfile.ZipFile(io.BytesIO(malicious_torch_file(marker))) as archive:
        member = next(name for name in archive.namelist() if name.endswith("data.pkl"))
        pickle.loads(archive.read(member))
    assert marker.exists()


@pytest.mark.parametrize("make", [malicious_raw_pickle, malicious_torch_file])
def test_a_code_running_checkpoint_is_refused_and_runs_nothing(tmp_path: Path, make) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / CHECKPOINT
    path.write_bytes(make(marker))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert not marker.exists()
    message = str(error.value)
    assert "was refused (loading it could run code)" in message and str(path) in message
    assert "\n" not in message
    if make is malicious_torch_file:  # torch's unpickler names the import it blocked
        assert "(it names io.open)" in message


def test_resume_from_a_code_running_checkpoint_is_one_line_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    save_config(run, preset("fashion-mnist"))
    marker = tmp_path / "pwned"
    (run / CHECKPOINT).write_bytes(malicious_torch_file(marker))
    assert main(["pretrain", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("byol: error: no usable checkpoint") and "could run code" in err
    assert len(err.splitlines()) == 1 and not marker.exists()


# --------------------------------------------------------------------------- other architectures


def tiny(backbone: str = "resnet18", **changes):
    config = preset("fashion-mnist")
    sizes = dict(projector_hidden_dim=32, predictor_hidden_dim=32, projection_dim=16)
    return config.replace(backbone=backbone, **{**sizes, **changes})


def checkpoint_of(config, method: str = "byol", claimed=None) -> dict:
    """The state pretrain saves, built from real modules (untrained: enough for shapes)."""
    model = build_model(config)
    optimizer = build_optimizer(model, "lars", 0.1, 1e-6, 0.9, 1e-3)
    claimed = claimed or config
    return dict(
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        step=1,
        config=claimed.to_dict(),
        method=method,
    )


def noise_run(tmp_path: Path, config):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
    config = config.replace(
        dataset=str(images),
        image_size=16,
        batch_size=8,
        num_workers=0,
        threads=1,
        precision="fp32",  # 16 px in bf16 meets oneDNN's NaN weight gradient (test_baselines TINY)
    )
    return config, tmp_path / "run"


def test_checkpoint_of_another_architecture_is_refused_naming_it(tmp_path: Path) -> None:
    config, run = noise_run(tmp_path, tiny("resnet34"))
    other = config.replace(backbone="resnet18")
    save_checkpoint(run / CHECKPOINT, checkpoint_of(other))
    with pytest.raises(CheckpointError) as error:
        pretrain(config, run, resume=True, quiet=True)
    assert "backbone: 'resnet18' -> 'resnet34'" in str(error.value)


def test_weights_that_do_not_match_their_claimed_config_are_refused(tmp_path: Path) -> None:
    # The config inside says resnet34 (matching the run), the tensors are a resnet18's.
    config, run = noise_run(tmp_path, tiny("resnet34"))
    weights_of = config.replace(backbone="resnet18")
    save_checkpoint(run / CHECKPOINT, checkpoint_of(weights_of, claimed=config))
    with pytest.raises(CheckpointError) as error:
        pretrain(config, run, resume=True, quiet=True)
    message = str(error.value)
    assert "model weights of another architecture" in message
    assert "missing online_encoder.layer1.2.conv1.weight" in message, message


def test_head_sizes_mismatch_names_the_tensor_shapes() -> None:
    model = build_model(tiny())
    other = build_model(tiny(projector_hidden_dim=64)).state_dict()
    with pytest.raises(CheckpointError) as error:
        load_model_state(model, other, Path("x.pt"))
    assert "is (64, 512), expected (32, 512)" in str(error.value)


def test_checkpoint_of_another_method_is_refused(tmp_path: Path) -> None:
    config, run = noise_run(tmp_path, tiny())
    save_checkpoint(run / CHECKPOINT, checkpoint_of(config, method="simclr"))
    with pytest.raises(CheckpointError, match="written by a simclr run, not byol"):
        pretrain(config, run, resume=True, quiet=True)


def test_encoder_file_of_another_architecture_or_not_safetensors(tmp_path: Path) -> None:
    import torchvision

    weights = torchvision.models.resnet18().state_dict()
    weights = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    meta = {"format": "byol-encoder", "architecture": "resnet34", "cifar_stem": "false"}
    save_file(weights, str(tmp_path / "lying.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="resnet34 encoder weights of another architecture"):
        load_encoder(tmp_path / "lying.safetensors")
    save_file(weights, str(tmp_path / "odd.safetensors"), metadata={**meta, "architecture": "x"})
    with pytest.raises(CheckpointError, match="naming a known backbone"):
        load_encoder(tmp_path / "odd.safetensors")
    (tmp_path / "pickle.safetensors").write_bytes(malicious_raw_pickle(tmp_path / "pwned"))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_encoder(tmp_path / "pickle.safetensors")
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------- archives


def crafted_tar(path: Path, member: tarfile.TarInfo, payload: bytes = b"evil") -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("cifar10-jpeg/readme.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if member.isfile():
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
        else:
            tar.addfile(member)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    "name, kind, target, ends",
    [
        ("../evil", tarfile.REGTYPE, "", "refused"),
        ("cifar10-jpeg/../../evil", tarfile.REGTYPE, "", "refused"),
        ("cifar10-jpeg/link", tarfile.SYMTYPE, "../../evil", "refused"),
        ("cifar10-jpeg/abslink", tarfile.SYMTYPE, "ABSOLUTE", "refused"),
        ("cifar10-jpeg/hard", tarfile.LNKTYPE, "../evil", "refused"),
        ("cifar10-jpeg/dev", tarfile.CHRTYPE, "", "refused"),
        # A leading "/" is stripped: the file lands inside the destination, not at the path.
        ("ABSOLUTE", tarfile.REGTYPE, "", "contained"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "symlink-out",
        "symlink-absolute",
        "hardlink-out",
        "device",
        "absolute-name",
    ],
)
def test_archive_members_cannot_write_outside(tmp_path: Path, name, kind, target, ends) -> None:
    dest = tmp_path / "a" / "b"
    dest.mkdir(parents=True)
    evil = tmp_path / "evil"
    name, target = (x.replace("ABSOLUTE", str(evil)) for x in (name, target))
    tarball = crafted_tar(tmp_path / "crafted.tar", _member(name, kind, target))
    with tarfile.open(tarball) as tar:
        if ends == "refused":
            with pytest.raises(tarfile.FilterError):
                cifar10_jpeg._extract_with_data_filter(tar, dest)
        else:
            cifar10_jpeg._extract_with_data_filter(tar, dest)
            assert (dest / str(evil).lstrip("/")).read_bytes() == b"evil"
    outside = [
        p for p in tmp_path.rglob("*") if dest not in p.parents and p not in (dest, dest.parent)
    ]
    assert outside == [tarball], outside  # nothing was written beside the archive


# --- checkpoints with a valid checksum but contents that were altered -----------------------------
def _first(state: dict, suffix: str) -> str:
    return next(k for k in state["model"] if k.endswith(suffix))


def _momentum_reshaped(state: dict) -> None:
    buffers = state["optimizer"]["state"]
    first = next(iter(buffers))
    buffers[first]["momentum_buffer"] = torch.zeros(1)


def _replace_weight(make):  # noqa: ANN001, ANN202
    def craft(state: dict) -> None:
        key = _first(state, "conv1.weight")
        state["model"][key] = make(state["model"][key])

    return craft


def _momentum(make):  # noqa: ANN001, ANN202
    def craft(state: dict) -> None:
        entries = next(iter(state["optimizer"]["state"].values()))
        entries["momentum_buffer"] = make(entries["momentum_buffer"])

    return craft


def _group(change):  # noqa: ANN001, ANN202
    def craft(state: dict) -> None:
        change(state["optimizer"]["param_groups"][0])

    return craft


CRAFTED = {
    "weight_on_the_meta_device": _replace_weight(lambda t: torch.empty_like(t, device="meta")),
    "weight_sparse": _replace_weight(lambda t: t.to_sparse()),
    "weight_in_float64": _replace_weight(lambda t: t.double()),
    "momentum_as_text": _momentum(lambda t: "0.9"),
    "momentum_sparse": _momentum(lambda t: t.to_sparse()),
    "momentum_on_the_meta_device": _momentum(lambda t: torch.empty_like(t, device="meta")),
    "momentum_in_float16": _momentum(lambda t: t.half()),
    "lr_as_text": _group(lambda g: g.update(lr="0.1")),
    "momentum_setting_as_text": _group(lambda g: g.update(momentum="0.9")),
    "momentum_setting_missing": _group(lambda g: g.pop("momentum")),
    "weight_decay_a_list": _group(lambda g: g.update(weight_decay=[0.0])),
    "group_a_list": lambda s: s["optimizer"].update(param_groups=[[1, 2]]),
    "state_of_no_parameter": lambda s: s["optimizer"]["state"].update({10**6: {}}),
    "state_entries_a_list": lambda s: s["optimizer"]["state"].update(
        {next(iter(s["optimizer"]["state"])): [1]}
    ),
    "step_is_text": lambda s: s.update(step="5"),
    "step_is_a_list": lambda s: s.update(step=[1]),
    "step_negative": lambda s: s.update(step=-3),
    "step_beyond_the_run": lambda s: s.update(step=10**12),
    "optimizer_state_none": lambda s: s.update(optimizer=None),
    "momentum_of_another_shape": _momentum_reshaped,
    "counter_as_float": lambda s: s["model"].update(
        {_first(s, "num_batches_tracked"): torch.tensor(1.5)}
    ),
    "weight_as_a_list": lambda s: s["model"].update({_first(s, "conv1.weight"): [0.0]}),
}


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A run stopped after its first step (so --resume loads its checkpoint)."""
    root = tmp_path_factory.mktemp("stopped")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(32):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i:02d}.png")
    items = [
        f"dataset={images}",
        "backbone=resnet18-narrow",
        "image_size=16",
        "batch_size=8",
        "epochs=1",
        "projector_hidden_dim=32",
        "predictor_hidden_dim=32",
        "projection_dim=16",
        "num_workers=0",
        "threads=1",
        "precision=fp32",
        "knn_references=false",
        "predictor_warmup_steps=0",
        "max_minutes=1e-9",
    ]
    argv = ["pretrain", "--quiet", "--run-dir", str(root / "run")]
    assert main(argv + [a for item in items for a in ("--set", item)]) == 0
    return root / "run"


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_checkpoint_with_altered_contents_is_refused_in_one_line(
    stopped_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, case: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    (run / "checkpoint-previous.pt").unlink(missing_ok=True)  # no fallback: the altered file only
    state = load_checkpoint(run / CHECKPOINT)
    state.pop("format")
    CRAFTED[case](state)
    save_checkpoint(run / CHECKPOINT, state, keep_previous=False)  # a valid checksum
    summary = (run / "summary.json").read_bytes()
    assert main(["pretrain", "--quiet", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("byol: error: "), err
    assert "Traceback" not in err and str(run) in err, err
    assert (run / "summary.json").read_bytes() == summary  # nothing trained, nothing written
