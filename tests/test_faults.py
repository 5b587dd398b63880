"""Faults during a run: a killed process, a corrupt newest checkpoint, a full disk, a diverging
loss. Tiny real runs (ResNet-18 at 16 px on a folder of noise images) in-process or as
`python -m byol` subprocesses; nothing under test is mocked. The only stand-in is the full disk:
``os.write`` fails with ENOSPC for checkpoint files, as a real full file system makes it fail."""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from byol import distributed, run_folder
from byol.checkpoint import (
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from byol.cli import main
from byol.errors import CheckpointError
from byol.run_folder import CHECKPOINT, PREVIOUS_CHECKPOINT

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 4  # 64 images, batch 16


def noise_folder(root: Path, count: int = 64, size: int = 16) -> Path:
    """A flat (unlabelled) folder of random images: no test split, so no kNN at the end."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:03d}.png")
    return root


def tiny_settings(folder: Path, epochs: int = 3, every: int = 2) -> list[str]:
    items = [
        f"dataset={folder}",
        "backbone=resnet18-narrow",  # 1/8-width ResNet-18: behaviour, not accuracy
        "image_size=16",
        "batch_size=16",
        f"epochs={epochs}",
        "warmup_epochs=0.5",
        "projector_hidden_dim=32",
        "predictor_hidden_dim=32",
        "projection_dim=16",
        "num_workers=0",
        "log_every_steps=1",
        f"checkpoint_every_steps={every}",
        "knn_references=false",
        "threads=1",
        "precision=fp32",  # the same arithmetic whatever the CPU (auto picks bf16 where native)
        "predictor_warmup_steps=0",  # every step trains the encoder, as the checks below assume
    ]
    return [arg for item in items for arg in ("--set", item)]


def pretrain_argv(run_dir: Path, settings: list[str]) -> list[str]:
    return ["pretrain", "--quiet", "--resume", "auto", "--run-dir", str(run_dir), *settings]


def logged_steps(run_dir: Path) -> dict[int, float]:
    """step -> loss of the step records in metrics.jsonl (a line cut by a kill is ignored)."""
    path = run_dir / "metrics.jsonl"
    steps = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "loss" in record:
            steps[record["step"]] = record["loss"]
    return steps


def largest_difference(a: Path, b: Path) -> float:
    x, y = load_file(str(a / "encoder.safetensors")), load_file(str(b / "encoder.safetensors"))
    assert x.keys() == y.keys()
    return max((x[k].double() - y[k].double()).abs().max().item() for k in x)


# --------------------------------------------------------------------------- checkpoint files


def small_state(value: float, megabytes: int = 1) -> dict:
    return {"model": {"w": torch.full((megabytes * 2**18,), value)}, "step": int(value)}


def test_checksum_catches_a_flipped_byte_and_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, small_state(3.0))
    assert load_checkpoint(path)["step"] == 3
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01  # one bit inside the tensor data: still a valid zip
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_checkpoint(path)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    path.write_bytes(good[:-1])  # the trailer cut short: the payload is no longer recognised
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_the_replaced_checkpoint_is_kept_and_is_the_fallback(tmp_path: Path) -> None:
    for step in (1.0, 2.0, 3.0):
        save_checkpoint(tmp_path / CHECKPOINT, small_state(step))
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 3
    assert load_checkpoint(tmp_path / PREVIOUS_CHECKPOINT)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIOUS_CHECKPOINT, CHECKPOINT]

    newest = tmp_path / CHECKPOINT
    newest.write_bytes(newest.read_bytes()[:-100])
    state, source, passed_over = load_latest_checkpoint(tmp_path)
    assert state["step"] == 2 and source.name == PREVIOUS_CHECKPOINT
    assert len(passed_over) == 1 and CHECKPOINT in passed_over[0]
    # The bad file is set aside: the next save must not turn it into the fallback.
    assert (tmp_path / f"{CHECKPOINT}.rejected").exists() and not newest.exists()

    (tmp_path / PREVIOUS_CHECKPOINT).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        load_latest_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_latest_checkpoint(tmp_path / "empty")


class DiskFull:
    """``os.write`` that fills the disk: writes to checkpoint temporaries after ``allowed``
    bytes fail with ENOSPC; every other write passes through."""

    def __init__(self, allowed: int) -> None:
        self.allowed, self.real = allowed, os.write

    def __call__(self, fd: int, data: bytes) -> int:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if f".{CHECKPOINT}." in name and name.endswith(".tmp"):
            if self.allowed <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.allowed -= len(data)
        return self.real(fd, data)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
def test_full_disk_mid_write_leaves_both_checkpoints_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path / CHECKPOINT, small_state(1.0))
    save_checkpoint(tmp_path / CHECKPOINT, small_state(2.0))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(os, "write", DiskFull(allowed=4 * 2**20))  # fails inside the 10 MB
    with pytest.raises(CheckpointError) as error:
        save_checkpoint(tmp_path / CHECKPOINT, small_state(3.0, megabytes=10))
    monkeypatch.undo()
    message = str(error.value)
    assert "no space left on the device" in message and "left intact" in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary left
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 2


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
def test_full_disk_during_a_run_stops_with_one_line_and_resume_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder, run = noise_folder(tmp_path / "images"), tmp_path / "run"
    settings = tiny_settings(folder, epochs=1, every=1)
    # Room for two checkpoints (as large as one written after a first step), not three.
    probe = tmp_path / "probe"
    assert main(pretrain_argv(probe, [*settings, "--set", "max_minutes=1e-9"])) == 0
    checkpoint_bytes = (probe / CHECKPOINT).stat().st_size
    monkeypatch.setattr(os, "write", DiskFull(allowed=int(2.5 * checkpoint_bytes)))
    assert main(pretrain_argv(run, settings)) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("byol: error: could not write"), err
    assert "no space left" in err and f"byol pretrain --resume {run}" in err
    assert load_checkpoint(run / CHECKPOINT)["step"] == 2
    assert not list(run.glob(".*.tmp"))
    assert main(pretrain_argv(run, settings)) == 0  # space is back: the run finishes
    assert json.loads((run / "summary.json").read_text())["steps"] == STEPS_PER_EPOCH


def test_diverging_loss_stops_naming_step_and_cause_and_keeps_the_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder, run = noise_folder(tmp_path / "images"), tmp_path / "run"
    # Plain SGD at an absurd learning rate: steps 1 (lr 0 in warm-up) and 2 compute finite
    # losses; the weights step 2 leaves behind make the loss of step 3 NaN.
    settings = tiny_settings(folder, epochs=2, every=1)
    settings += ["--set", "optimizer=sgd", "--set", "base_lr=1e12", "--set", "warmup_epochs=0.5"]
    assert main(pretrain_argv(run, settings)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "the loss became nan at step 3 (lr 6.25e+10, precision fp32)" in err, err
    assert "the last good checkpoint (step 2) was kept" in err, err
    assert f"--resume {run} --set base_lr=" in err and "precision=fp32" in err
    assert json.loads((run / "diverged.json").read_text())["last_good_step"] == 2
    assert sorted(logged_steps(run)) == [1, 2]
    state = load_checkpoint(run / CHECKPOINT)
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (run / "encoder.safetensors").exists()


def test_resume_auto_starts_continues_and_refuses_a_changed_config(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    folder, run = noise_folder(tmp_path / "images"), tmp_path / "run"
    settings = tiny_settings(folder, epochs=1, every=2)
    settings_cut = settings + ["--set", "max_minutes=1e-9"]  # stops cleanly after one step
    assert main(pretrain_argv(run, settings_cut)) == 0
    assert load_checkpoint(run / CHECKPOINT)["step"] == 1
    capsys.readouterr()
    changed = settings + ["--set", "batch_size=8"]
    assert main(pretrain_argv(run, changed)) == 2
    err = capsys.readouterr().err
    assert "config differs" in err and "batch_size: 16 -> 8" in err
    # A corrupt newest checkpoint: resume falls back to the previous one, saying so.
    save_checkpoint(run / CHECKPOINT, load_checkpoint(run / CHECKPOINT))
    (run / CHECKPOINT).write_bytes(b"\0" * 100)
    with caplog.at_level("WARNING"):
        assert main(pretrain_argv(run, settings)) == 0
    assert f"Resuming from {run / PREVIOUS_CHECKPOINT} instead" in caplog.text
    assert sorted(logged_steps(run)) == [1, 2, 3, 4]


# --------------------------------------------------------------------------- SIGKILL


def run_killed_and_resumed(tmp_path: Path, kills: int, epochs: int, seed: int) -> dict:
    """An uninterrupted run, then the same command killed with SIGKILL at random moments and
    restarted each time until it finishes. Returns what happened."""
    folder = noise_folder(tmp_path / "images")
    settings = tiny_settings(folder, epochs=epochs, every=2)
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def command(run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "byol", *pretrain_argv(run_dir, settings)]

    full, cut = tmp_path / "full", tmp_path / "cut"
    # The reference runs in this process: the same code and settings (threads=1) as the
    # subprocesses, without paying for another interpreter's start-up.
    assert main(pretrain_argv(full, settings)) == 0
    total = epochs * STEPS_PER_EPOCH
    # A step's time on this machine: the kills wait a fraction of one, so that a fast machine
    # does not finish the run before the last kill lands.
    step_seconds = run_folder.read_summary(full)["wall_time_s"] / total
    rng = random.Random(seed)
    # Kills after the first fall in successive stretches of the run, so that each one lands
    # past the progress the previous kill left (it costs at most one checkpoint interval).
    bounds = np.linspace(1, total, kills)
    events: list[dict[str, int]] = []
    while len(events) < kills:
        before = max(logged_steps(cut), default=0)
        process = subprocess.Popen(
            command(cut), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # The first kill lands at a random moment of start-up; the others once the run has
        # passed a random step, plus a random fraction of a step (often inside a checkpoint
        # write: one is written every second step).
        if not events:
            time.sleep(rng.uniform(0.5, 3.0))
        else:
            low, high = int(bounds[len(events) - 1]), int(bounds[len(events)]) - 1
            target = max(rng.randint(low, max(low, high)), before + 1)
            while max(logged_steps(cut), default=0) < target and process.poll() is None:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, min(0.8, step_seconds)))
        if process.poll() is not None:  # finished first: nothing to kill
            assert process.returncode == 0, process.stderr.read().decode()
            break
        process.kill()
        process.wait()
        process.stderr.close()
        last_logged = max(logged_steps(cut), default=0)
        # Whatever is on disk passes its checks; no more than one interval of work is lost.
        valid = [
            load_checkpoint(cut / name)["step"]
            for name in (CHECKPOINT, PREVIOUS_CHECKPOINT)
            if (cut / name).exists()
        ]
        newest = max(valid, default=0)
        assert last_logged - newest <= 2, (last_logged, valid)
        events.append({"last_logged": last_logged, "checkpoint_step": newest})
    finished = subprocess.run(command(cut), cwd=REPO, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    return {
        "kills": events,
        "largest_difference": largest_difference(full, cut),
        "losses": (logged_steps(full), logged_steps(cut)),
        "total": total,
    }


def _check_same_run(result: dict) -> None:
    print(
        f"\nSIGKILL test: {len(result['kills'])} kills {result['kills']}, largest weight "
        f"difference {result['largest_difference']:.3g}"
    )
    full, cut = result["losses"]
    assert sorted(cut) == list(range(1, result["total"] + 1)) == sorted(full)
    assert all(abs(full[s] - cut[s]) < 1e-6 for s in full), "a resumed step saw other data"
    assert result["largest_difference"] < 1e-6


def test_sigkill_at_random_moments_and_resume_auto_give_the_uninterrupted_weights(
    tmp_path: Path,
) -> None:
    result = run_killed_and_resumed(tmp_path, kills=3, epochs=2, seed=7)
    assert len(result["kills"]) == 3
    _check_same_run(result)


@pytest.mark.slow
def test_sigkill_many_times_over_a_longer_run(tmp_path: Path) -> None:
    result = run_killed_and_resumed(tmp_path, kills=8, epochs=5, seed=11)
    assert len(result["kills"]) >= 6
    _check_same_run(result)


# --------------------------------------------------------------------------- one run per folder


HOLD_LOCK = """
import sys, time
from byol.run_folder import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder, run = noise_folder(tmp_path / "images"), tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(pretrain_argv(run, tiny_settings(folder, epochs=1))) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"in use by process {holder.pid}" in err, err
        assert not (run / CHECKPOINT).exists() and not (run / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # Killed holding the lock: the file is still there, the lock is not; the run goes ahead.
    assert (run / ".lock").read_text().strip() == str(holder.pid)
    assert main(pretrain_argv(run, tiny_settings(folder, epochs=1))) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == STEPS_PER_EPOCH


def test_eval_and_report_of_a_run_in_progress_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A run being trained (its lock held) has no encoder yet: eval says the run is training and
    by which process; the report is marked a snapshot at the last logged step."""
    from byol.presets import preset
    from byol.reporting.html_report import build_report
    from byol.run_folder import METRICS, RunLock, save_config, writer_of

    run = tmp_path / "run"
    save_config(run, preset("fashion-mnist"))
    (run / METRICS).write_text(json.dumps({"step": 10, "loss": 1.5}) + "\n" + '{"step": 2')
    assert writer_of(run) is None
    with RunLock(run):
        assert writer_of(run) == str(os.getpid())
        assert main(["eval", "knn", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"byol: error: {run} is still training (process {os.getpid()}); its "
            "encoder.safetensors is written when the run finishes: evaluate it then."
        )
        report = build_report(run)
        assert f"training now (process {os.getpid()})" in report and "up to step 10" in report
    assert writer_of(run) is None
    assert "has not finished" in build_report(run)


def test_resuming_a_finished_run_is_a_no_op_that_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder, run = noise_folder(tmp_path / "images"), tmp_path / "run"
    assert main(pretrain_argv(run, tiny_settings(folder, epochs=1))) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["pretrain", "--quiet", "--resume", str(run)]) == 0
    assert "had already finished (4 steps): nothing to resume" in capsys.readouterr().out
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before  # summary, metrics and checkpoints untouched


def test_a_batch_norm_statistic_gone_inf_is_caught_before_the_checkpoint(tmp_path: Path) -> None:
    from byol.config import apply_overrides
    from byol.errors import TrainingDiverged
    from byol.presets import preset
    from byol.training.loop import save_checkpoint
    from byol.training.run_context import set_up

    folder = noise_folder(tmp_path / "images")
    items = [i for i in tiny_settings(folder, epochs=1) if i != "--set"]
    config = apply_overrides(preset("fashion-mnist"), items)
    state, context = set_up(
        config, tmp_path / "run", False, distributed.Ranks(), torch.device("cpu")
    )
    try:
        state.step = 1
        state.method.online_encoder.bn1.running_var[0] = float("inf")  # weights still finite
        with pytest.raises(TrainingDiverged, match="batch-norm statistics became inf or NaN"):
            save_checkpoint(state, context, lr=0.1)
        assert not (tmp_path / "run" / CHECKPOINT).exists()
    finally:
        context.release()


@pytest.mark.parametrize("case", ["run_dir_is_a_file", "path_through_a_file", "read_only"])
def test_operating_system_errors_on_the_run_folder_end_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str
) -> None:
    folder = noise_folder(tmp_path / "images")
    (tmp_path / "file").write_text("not a folder")
    run = {
        "run_dir_is_a_file": tmp_path / "file",
        "path_through_a_file": tmp_path / "file" / "run",
        "read_only": tmp_path / "locked" / "run",
    }[case]
    if case == "read_only":
        (tmp_path / "locked").mkdir(mode=0o500)
        if os.access(tmp_path / "locked", os.W_OK):
            pytest.skip("running as a user that writes to read-only folders (root)")
    assert main(pretrain_argv(run, tiny_settings(folder, epochs=1))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("byol: error: "), err
    assert "Traceback" not in err and "check the path" in err, err


def test_a_diverged_run_resumes_with_a_lower_learning_rate_and_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import byol.training.loop as loop

    folder, run = noise_folder(tmp_path / "images"), tmp_path / "run"
    settings = tiny_settings(folder, epochs=2, every=1)
    real_step = loop.accumulated_step

    def nan_at_step_3(trained, optimizer, micro_batches, lr, tau, precision, steps):  # noqa: ANN001
        output = real_step(trained, optimizer, micro_batches, lr, tau, precision, steps)
        if len(loop_steps) == 2:  # the third step's loss: as a too-large lr would leave it
            output = output._replace(loss=output.loss * float("nan"))
        loop_steps.append(lr)
        return output

    loop_steps: list[float] = []
    monkeypatch.setattr(loop, "accumulated_step", nan_at_step_3)
    assert main(pretrain_argv(run, settings)) == 2
    monkeypatch.undo()
    assert "became nan at step 3" in capsys.readouterr().err
    assert (run / "diverged.json").is_file() and load_checkpoint(run / CHECKPOINT)["step"] == 2
    # Without the divergence mark a changed lr is refused; with it, the resume takes it.
    lower = ["--set", "base_lr=0.5"]
    assert main(["pretrain", "--quiet", "--resume", str(run), *lower]) == 0, capsys.readouterr()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 * STEPS_PER_EPOCH and not (run / "diverged.json").exists()
    assert json.loads((run / "config.json").read_text())["optim"]["base_lr"] == 0.5
    assert sorted(logged_steps(run)) == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    capsys.readouterr()
    assert main(["pretrain", "--quiet", "--resume", str(run)]) == 0
    assert "nothing to resume" in capsys.readouterr().out  # finished: nothing is changed
    # Recovered, the mark is gone: a changed lr is refused again.
    assert main(["pretrain", "--quiet", "--resume", str(run), "--set", "base_lr=0.1"]) == 2
    assert "base_lr: 0.5 -> 0.1" in capsys.readouterr().err


CTRL_C_DURING_TORCH_IMPORT = """
import importlib.abc, sys

class CtrlC(importlib.abc.MetaPathFinder):  # the signal arriving while torch is imported
    def find_spec(self, name, path, target=None):
        if name == "torch":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlC())
from byol.cli import main
sys.exit(main(["presets"]))
"""


def test_ctrl_c_while_torch_is_imported_ends_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_DURING_TORCH_IMPORT], capture_output=True, text=True
    )
    assert result.returncode == 130 and result.stderr == "byol: interrupted.\n", result.stderr
