"""Settings at their extremes, the machine's limits, the environment and our own files of the
wrong shape, each through the real command line: every case ends in exit 0 or in one line
``byol: error: ...`` naming the cause and the fix (exit 2), never a traceback.

The classes (issue 29): numbers beyond what torch holds or what memory takes (estimated on the
meta device before anything is allocated), schedules in whole steps, devices and tools the
machine lacks, paths that are not UTF-8 or name an unknown home, and results.json, summary.json
and metrics.jsonl of the wrong shape (set aside, a fresh one written). Crafted checkpoint contents
are in test_untrusted.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol import settings
from byol.cli import main
from byol.config import METHODS
from byol.presets import configure
from byol.training.schedules import Schedule, steps_of

SMALL = [
    "backbone=resnet18-narrow",
    "image_size=16",
    "batch_size=8",
    "epochs=1",
    "num_workers=0",
    "threads=1",
    "precision=fp32",
    "knn_references=false",
    "loggers=none",
]
HEADS = ["projector_hidden_dim=32", "projection_dim=16"]
BYOL_SMALL = [*SMALL, *HEADS, "predictor_hidden_dim=32", "predictor_warmup_steps=0"]


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def one_error_line(code: int, err: str, words: list[str]) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("byol: error: "), err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings the run logged (printed as lines on stderr outside pytest)."""
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two classes of 16 px noise, train/ and test/: enough to pretrain, score and evaluate."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("test", 4)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


def pretrain(folder: Path, run: Path) -> list[str]:
    return ["pretrain", "--quiet", "--run-dir", str(run), *sets([f"dataset={folder}", *BYOL_SMALL])]


@pytest.fixture(scope="module")
def finished(folder: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(pretrain(folder, run)) == 0
    return run


@pytest.fixture(scope="module")
def stopped(folder: Path, tmp_path_factory) -> Path:
    """Stopped after its first step by the time limit: --resume loads its checkpoint."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    assert main(pretrain(folder, run) + sets(["max_minutes=1e-9"])) == 0
    return run


# --- 1. ranges that mean something ---------------------------------------------------------------
@pytest.mark.parametrize(
    "item, words",
    [
        ("warmup_epochs=1e308", ["schedule.warmup_epochs", "3.40282e+38"]),
        ("schedule_epochs=1e308", ["schedule.schedule_epochs", "3.40282e+38"]),
        ("weight_decay=1e300", ["optim.weight_decay", "3.40282e+38"]),
        ("predictor_lr_scale=1e300", ["method.predictor_lr_scale"]),
        ("base_lr=1e300", ["optim.base_lr"]),
        ("projector_hidden_dim=1000000000000", ["method.projector_hidden_dim", "2147483647"]),
        ("seed=8589934592", ["seed", "4294967295"]),
    ],
)
def test_numbers_beyond_what_torch_holds_are_refused(item, words, capsys) -> None:
    one_error_line(*cli(["config", "--set", item], capsys), words)


def test_schedules_count_whole_steps_for_any_number_of_epochs() -> None:
    assert steps_of(0.5, 3) == 2 and steps_of(2.5, 2) == 5 and steps_of(0.0, 9) == 0
    assert steps_of(3e38, 7) == int(3e38) * 7  # exact: a float product would round
    config = configure("fashion-mnist", ["warmup_epochs=3e38", "schedule_epochs=3e38"])
    schedule = Schedule.of(config, 1280)
    assert schedule.warmup_steps == int(3e38) * 10
    lr = [schedule.lr(step) for step in (0, 1, 10**6)]
    assert lr[0] == 0.0 and all(math.isfinite(x) and x >= 0 for x in lr) and lr[1] < lr[2]
    assert lr[2] == pytest.approx(schedule.peak_lr * 10**6 / schedule.warmup_steps)
    assert schedule.tau(10**6) == pytest.approx(config.schedule.tau_base)


def test_a_run_with_a_warmup_of_3e38_epochs_trains(folder, tmp_path, capsys) -> None:
    code, err = cli(pretrain(folder, tmp_path / "run") + sets(["warmup_epochs=3e38"]), capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert all(r["lr"] < 1e-30 for r in records if "lr" in r)  # warming up, for ever


# setting(s) -> words of the line; each is refused before anything is allocated or written.
TOO_BIG = {
    "projector": (["projector_hidden_dim=1000000000"], ["method.projector_hidden_dim"]),
    "moco_queue": (
        ["method=moco", "projector_hidden_dim=32", "queue_size=2000000000", "projection_dim=4096"],
        ["method.queue_size"],
    ),
    "barlow_width": (["method=barlow", "projector_dim=10000000"], ["method.projector_dim"]),
    "image_size": (["image_size=100000"], ["data.image_size"]),
    "batch": (["image_size=64", "batch_size=4194304"], ["batch_size", "accumulation_steps="]),
    "eval_crop": (["eval_crop_fraction=1e-9"], ["monitor.eval_crop_fraction"]),
    "eval_batch": (["eval_batch_size=2000000000"], ["eval_batch_size"]),
}


@pytest.mark.parametrize("case", list(TOO_BIG))
def test_a_run_too_big_for_memory_is_refused_before_it_allocates(case, folder, tmp_path, capsys):
    items, words = TOO_BIG[case]
    base = BYOL_SMALL if "method=" not in items[0] else SMALL
    argv = ["pretrain", "--quiet", "--run-dir", str(tmp_path / "run")]
    started = time.perf_counter()
    code, err = cli(argv + sets([f"dataset={folder}", *base, *items]), capsys)
    line = one_error_line(code, err, ["would need about", "more than the", *words])
    assert "TB" in line or "PB" in line or "EB" in line, line
    assert not (tmp_path / "run").exists()  # refused before the folder was claimed
    assert time.perf_counter() - started < 120  # not an allocation of terabytes that swapped


def test_byol_config_check_says_what_a_run_needs(capsys) -> None:
    code, out = main(["config", "--check", *sets(SMALL)]), capsys.readouterr().out
    assert code == 0 and out.startswith("fits: a training step needs about") and "cpu" in out
    code, err = cli(["config", "--check", *sets(["projector_hidden_dim=1000000000"])], capsys)
    one_error_line(code, err, ["method.projector_hidden_dim"])


def test_one_image_per_micro_batch_is_refused(folder, tmp_path, capsys) -> None:
    code, err = cli(pretrain(folder, tmp_path / "run") + sets(["accumulation_steps=8"]), capsys)
    one_error_line(code, err, ["one image per micro-batch", "accumulation_steps=4"])


def test_a_peak_learning_rate_beyond_float32_is_refused(folder, tmp_path, capsys) -> None:
    items = ["base_lr=3e38", "predictor_lr_scale=100"]
    code, err = cli(pretrain(folder, tmp_path / "run") + sets(items), capsys)
    one_error_line(code, err, ["peak learning rate", "optim.base_lr"])


def test_threads_far_beyond_the_cores_are_refused(folder, tmp_path, capsys) -> None:
    for item in ("threads=2000000000", "num_workers=100000"):
        code, err = cli(pretrain(folder, tmp_path / "run") + sets([item]), capsys)
        one_error_line(code, err, [item.split("=")[0], "CPU cores"])


UNDER_A_MEMORY_LIMIT = """
import re, resource, sys
from pathlib import Path
import byol.cli.evaluate, byol.cli.outputs, byol.cli.train, byol.training.loop  # before the limit
from byol.cli import main
status = Path("/proc/self/status").read_text()
limit = int(re.search(r"VmSize:\\s+(\\d+) kB", status).group(1)) * 1024 + (int(sys.argv[2]) << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.exit(main(["pretrain", "--quiet", "--resume", sys.argv[1]]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's /proc")
def test_an_allocation_failure_in_a_run_is_one_line_and_keeps_the_checkpoint(stopped, tmp_path):
    """Real allocations refused by the kernel (an address-space limit a few MB above what the
    process holds) while a run resumes: wherever one fails (torch's allocator, oneDNN, a thread's
    stack, Python), the run ends in one line saying what to lower, its checkpoint intact."""
    failed = 0
    for headroom_mb in (2, 10, 40):
        run = tmp_path / f"run-{headroom_mb}"
        shutil.copytree(stopped, run)
        checkpoint = (run / "checkpoint.pt").read_bytes()
        argv = [sys.executable, "-c", UNDER_A_MEMORY_LIMIT, str(run), str(headroom_mb)]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).parents[1])
        if done.returncode == 0:
            continue
        failed += 1
        one_error_line(done.returncode, done.stderr, ["out of memory", "lower optim.batch_size"])
        assert f"--resume {run}" in done.stderr
        assert (run / "checkpoint.pt").read_bytes() == checkpoint
    assert failed, "no limit was tight enough"


# --- 2. environment ----------------------------------------------------------------------------
def test_an_unknown_home_folder_is_one_line(folder, tmp_path, capsys) -> None:
    argv = pretrain(folder, tmp_path / "run") + sets(["dataset=~nonexistentuser/x"])
    one_error_line(*cli(argv, capsys), ["~nonexistentuser", "write the path out in full"])


@pytest.mark.parametrize("device", ["mps", "cuda:99"])
def test_a_device_the_machine_lacks_is_one_line(device, folder, tmp_path, capsys) -> None:
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    argv = pretrain(folder, tmp_path / "run") + sets([f"device={device}"])
    one_error_line(*cli(argv, capsys), [f"device={device!r}", "device="])


@pytest.mark.parametrize("tools", ["none", "a_compiler_that_fails"])
def test_compile_without_a_working_compiler_warns_once_and_trains_eagerly(
    tools, folder, tmp_path, capsys, caplog, monkeypatch
) -> None:
    """torch.compile would trace for minutes, then fail for want of a C++ compiler: the probe at
    the start finds it missing (or failing) in milliseconds and the run goes on eagerly."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if tools != "none":
        for name in ("g++", "c++", "clang++"):
            (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
            (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CXX", raising=False)
    started = time.perf_counter()
    code, err = cli(pretrain(folder, tmp_path / "run") + sets(["compile=true"]), capsys)
    assert code == 0, err
    warned = warnings_of(caplog)
    assert len(warned) == 1 and "torch.compile needs a working C++ compiler" in warned[0], warned
    assert warned[0].startswith("byol: warning: ") and "\n" not in warned[0]
    assert time.perf_counter() - started < 120


def test_a_run_folder_whose_name_is_not_utf8(folder, tmp_path, capsys) -> None:
    run = Path(os.fsdecode(os.fsencode(tmp_path) + b"/run-\xff\xfe"))
    try:
        run.mkdir()
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes UTF-8 names only")
    code, err = cli(pretrain(folder, run), capsys)  # loggers=none
    assert code == 0, err
    assert (run / "encoder.safetensors").is_file()
    code, err = cli(["embed", str(run), str(folder / "test"), *sets(["num_workers=0"])], capsys)
    assert code == 0, err
    other = Path(os.fsdecode(os.fsencode(tmp_path) + b"/tb-\xff"))
    argv = pretrain(folder, other) + sets(["loggers=tensorboard"])
    one_error_line(*cli(argv, capsys), ["not UTF-8", "loggers=none"])


# --- 3. our own files of the wrong shape ---------------------------------------------------------
BAD_RESULTS = {
    "a_table_that_is_an_int": b'{"datasets": {"x": 3}}',
    "a_row_that_is_a_list": b'{"datasets": {"x": {"byol": [1]}}}',
    "a_list": b"[1, 2]",
    "datasets_a_number": b'{"datasets": 5}',
    "not_utf8": b"\xff\xfe{",
    "method_a_list": b'{"datasets": {}, "pretrained_with": ["byol"]}',
}


@pytest.mark.parametrize("case", list(BAD_RESULTS))
def test_results_json_of_the_wrong_shape_is_set_aside(
    case, finished, folder, tmp_path, capsys, caplog
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "results.json").write_bytes(BAD_RESULTS[case])
    code, err = cli(["eval", "knn", str(run), *sets(["knn_ks=3", "num_workers=0"])], capsys)
    assert code == 0, err
    warned = warnings_of(caplog)
    assert len(warned) == 1 and "results.json" in warned[0] and "\n" not in warned[0], warned
    assert (run / "results.json.unreadable").read_bytes() == BAD_RESULTS[case]
    fresh = json.loads((run / "results.json").read_text())
    assert "knn3_top1" in fresh["datasets"][str(folder)]["byol"]


def test_a_summary_of_the_wrong_shape_is_set_aside_and_written_again(
    finished, tmp_path, capsys, caplog
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "summary.json").write_text("[1, 2]")
    code, err = cli(["pretrain", "--quiet", "--resume", str(run)], capsys)
    assert code == 0, err
    assert any("summary.json does not hold an object" in w for w in warnings_of(caplog))
    assert (run / "summary.json.unreadable").read_text() == "[1, 2]"
    assert isinstance(json.loads((run / "summary.json").read_text()), dict)


def test_a_metrics_log_with_foreign_lines_is_kept_aside_on_resume(
    stopped, tmp_path, capsys, caplog
) -> None:
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    log = run / "metrics.jsonl"
    original = log.read_bytes()
    log.write_bytes(original + b"3\n[1, 2]\n\xff\xfe\n" + b'{"step": "x"}\n')
    code, err = cli(["pretrain", "--quiet", "--resume", str(run)], capsys)
    assert code == 0, err
    assert any("metrics.jsonl holds 4 line(s)" in w for w in warnings_of(caplog))
    assert (run / "metrics.jsonl.unreadable").read_bytes().startswith(original)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records and all(isinstance(r, dict) and isinstance(r["step"], int) for r in records)


# --- 4. evaluation, export and embed settings -------------------------------------------------
@pytest.mark.parametrize(
    "item, words",
    [
        ("train_crop_scale=0.5", ["train_crop_scale", "2 comma-separated"]),
        ("linear_lrs=1e300", ["linear_lrs", "3.40282e+38"]),
        ("finetune_lr=1e300", ["finetune_lr", "3.40282e+38"]),
        ("image_size=100000", ["evaluating this encoder", "data.image_size"]),
        ("eval_crop_fraction=1e-9", ["evaluating this encoder", "eval_crop_fraction"]),
        ("eval_batch_size=2000000000", ["evaluating this encoder", "eval_batch_size"]),
    ],
)
def test_evaluation_settings_at_their_extremes(item, words, finished, capsys) -> None:
    one_error_line(*cli(["eval", "linear", str(finished), "--set", item], capsys), words)


def test_embed_with_an_eval_batch_too_big_for_memory(finished, folder, capsys) -> None:
    argv = ["embed", str(finished), str(folder / "test"), "--set", "eval_batch_size=2000000000"]
    one_error_line(*cli(argv, capsys), ["evaluating this encoder", "eval_batch_size"])


def test_embed_of_a_bare_encoder_file_without_its_run_folder(finished, folder, tmp_path, capsys):
    """No config.json beside it: the architecture comes from the file's metadata."""
    shutil.copy(finished / "encoder.safetensors", tmp_path / "encoder.safetensors")
    argv = ["embed", str(tmp_path / "encoder.safetensors"), str(folder / "test")]
    code, err = cli(argv + sets(["num_workers=0", "image_size=16"]), capsys)
    assert code == 0, err
    assert np.load(tmp_path / "embed" / "test" / "embeddings.npy").shape == (8, 64)


def test_a_timm_model_too_big_for_memory_is_refused(folder, tmp_path, capsys) -> None:
    pytest.importorskip("timm", reason="the timm extra is not installed")
    items = [
        "backbone=timm:vit_tiny_patch16_224",
        "backbone_kwargs=embed_dim=65536,depth=8,num_heads=64,patch_size=4",
    ]
    code, err = cli(pretrain(folder, tmp_path / "run") + sets(items), capsys)
    one_error_line(code, err, ["would need about", "model.backbone"])


# --- 5. every setting at its type's extremes -----------------------------------------------------
EXTREMES = {
    int: ["0", "-1", "1e308", "nan", "inf", "", str(10**30), str(2**31 - 1)],
    float: ["0", "-1", "1e308", "nan", "inf", "", str(10**30), "-1e308", "1e-320"],
    bool: ["0", "-1", "nan", "", "2"],
    str: ["0", "-1", "nan", "", "\x00", "a" * 300],
    tuple: ["0", "-1", "1e308,1e308", "nan,nan", "inf", "", "1,2,3", "-1,-1"],
}


def _every_setting() -> list[tuple[str, str, type]]:
    """(method, dotted key, kind) of every setting of every method's config."""
    keys = []
    for method in METHODS:
        for leaf in settings.leaves(configure("fashion-mnist", [], method)):
            if method == "byol" or leaf.path.startswith("method."):
                kind = tuple if isinstance(leaf.value, tuple) else type(leaf.value)
                keys.append((method, leaf.path, kind))
    return keys


def test_every_setting_at_its_extremes_is_accepted_or_refused_in_one_line(capsys) -> None:
    cases = [(m, k, v) for m, k, kind in _every_setting() for v in EXTREMES[kind]]
    assert len(cases) > 400  # every setting was reached
    started, refused = time.perf_counter(), 0
    for method, key, value in cases:
        code = main(["config", "--method", method, "--set", f"{key}={value}"])
        err = capsys.readouterr().err
        if code == 2:
            one_error_line(code, err, [key.split(".")[-1]])
            refused += 1
        else:
            assert code == 0 and not err.strip(), (key, value, err)
    assert refused > len(cases) / 2
    seconds = time.perf_counter() - started
    print(f"{len(cases)} settings x extremes, {refused} refused, {seconds:.1f} s")


def _edges(leaf: settings.Leaf) -> list[str]:
    """The largest value a numeric setting's rule accepts (its type's bound where it names none)
    and, for a float, the smallest positive one."""
    if leaf.rule.choices or type(leaf.value) not in (int, float):
        return []
    if type(leaf.value) is int:
        return [] if leaf.rule.high is not None else [str(2**31 - 1)]
    largest = [] if leaf.rule.high is not None else ["3.4e38"]
    smallest = ["5e-324"] if (leaf.rule.low or 0) <= 5e-324 else []
    return largest + smallest


def _shared_training_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measure a training step on the meta device once per distinct model: the estimate reads
    the model, the method, the image size, the seed, the optimizer, the micro-batch and the
    precision only, so configs equal in those share it (the measuring is most of a check)."""
    from byol.config import memory

    measure = memory.training_estimate.__wrapped__
    measured: dict[tuple, memory.Estimate] = {}

    def shared(config, micro_batch: int, precision: str = "fp32") -> memory.Estimate:  # noqa: ANN001
        c = config
        key = (c.model, c.method, c.data.image_size, c.seed, c.optim.optimizer, micro_batch)
        if key + (precision,) not in measured:
            measured[key + (precision,)] = measure(config, micro_batch, precision)
        return measured[key + (precision,)]

    monkeypatch.setattr(memory, "training_estimate", shared)


def test_every_setting_at_the_edge_of_its_range_runs_or_is_refused_in_one_line(capsys, monkeypatch):
    """`byol config --check` (a run's own checks before it allocates) on the largest value the
    rule of every numeric setting of the run accepts, and the smallest positive float."""
    _shared_training_estimate(monkeypatch)
    config = configure("fashion-mnist", SMALL)
    cases = [(leaf.path, edge) for leaf in settings.leaves(config) for edge in _edges(leaf)]
    assert len(cases) > 30
    for path, value in cases:
        code = main(["config", "--check", *sets(SMALL), "--set", f"{path}={value}"])
        captured = capsys.readouterr()
        if code == 2:
            one_error_line(code, captured.err, [])
        else:
            assert code == 0 and captured.out.startswith("fits:"), (path, value, captured)


def test_every_evaluation_setting_at_its_extremes_is_accepted_or_refused_in_one_line() -> None:
    from byol.errors import ConfigError
    from byol.evaluation.eval_settings import EvalSettings, split_overrides

    refused = 0
    for leaf in settings.leaves(EvalSettings()):
        kind = tuple if isinstance(leaf.value, tuple) else type(leaf.value)
        for value in EXTREMES[kind]:
            try:
                split_overrides([f"{leaf.path}={value}"])
            except ConfigError as error:
                assert leaf.path in str(error) and "\n" not in str(error), str(error)
                refused += 1
    assert refused > 50
