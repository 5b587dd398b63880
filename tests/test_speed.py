"""The speed switches' ``auto``: the decision rule against the measurement table (closed-form
break-even of compilation, unmeasured shapes left as before), the CUDA rules exercised on a CPU,
and a tiny real run that records what it chose."""

import dataclasses
import itertools
import json
from pathlib import Path

import pytest

from byol import speed
from byol.config import Config
from byol.config.keys import from_dict
from byol.errors import ConfigError
from byol.presets import preset
from byol.speed import MEASURED, Requested, RunShape, choose
from byol.speed.measured import EMULATED_BF16, NATIVE_BF16
from byol.training.loop import pretrain

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def cpu(size: int, steps: int = 100, capability: str = "", **changes) -> RunShape:
    return RunShape("cpu", capability, "torchvision", size, "fp32", steps, **changes)


def cuda(steps: int = 100, **changes) -> RunShape:
    return dataclasses.replace(
        RunShape("cuda", "8.0", "torchvision", 224, "bf16", steps), **changes
    )


def row_for(shape: RunShape) -> speed.Measured:
    row = speed.measured_row(shape)
    assert row is not None
    return row


# --- the measurement table ------------------------------------------------------------------------


def test_no_two_rows_stand_for_the_same_shape():
    for a, b in itertools.combinations(MEASURED, 2):
        key = ("device_type", "backbone_kind", "precision", "cpu_kind")
        same = [getattr(a, k) for k in key] == [getattr(b, k) for k in key]
        overlap = a.sizes[0] <= b.sizes[1] and b.sizes[0] <= a.sizes[1]
        assert not (same and overlap), (a, b)


def test_every_row_names_its_source_and_a_compile_cost_where_it_measured_compile():
    for row in MEASURED:
        assert row.cpu_kind in ((NATIVE_BF16, EMULATED_BF16) if row.device_type == "cpu" else ("",))
        assert row.source and row.images_per_second > 0 and row.sizes[0] <= row.sizes[1]
        combos = [(cl, co) for cl, co, _ in row.speedups]
        assert len(set(combos)) == len(combos) and (False, False) not in combos
        assert all(x > 0 for _, _, x in row.speedups)
        if any(co for _, co in combos):
            assert row.compile_seconds > 0


# --- CPU: measured shapes -------------------------------------------------------------------------


def test_96_px_with_native_bf16_lays_out_a_short_run_and_compiles_a_long_one():
    # Zen 4, fp32: channels_last 1.18x; both 1.41x repays twice its 86 s from about 120 steps
    short, long = choose(cpu(96, 50, NATIVE_BF16)), choose(cpu(96, 1_000, NATIVE_BF16))
    assert (short.channels_last, short.compile) == (True, False) and "1.18x" in short.why
    assert (long.channels_last, long.compile) == (True, True) and "1.41x" in long.why
    # in bf16 both (1.17x) never beats channels_last alone (1.18x)
    for steps in (10, 10**6):
        bf16 = choose(RunShape("cpu", NATIVE_BF16, "torchvision", 96, "bf16", steps))
        assert (bf16.channels_last, bf16.compile) == (True, False)


def test_96_px_without_it_compiles_a_long_run_and_lays_out_a_short_one():
    short, long = choose(cpu(96, 10)), choose(cpu(96, 10_000))
    assert (short.channels_last, short.compile) == (True, False) and "1.22x" in short.why
    # compile alone and both measured 1.29x: the first of equals, compile alone, is kept
    assert (long.channels_last, long.compile) == (False, True) and "1.29x" in long.why


def _break_even(shape: RunShape) -> float:
    """Steps at which the best compiled combination finishes as soon as the best eager one."""
    row = row_for(shape)
    step_seconds = shape.batch_size / row.images_per_second
    speedups = {(False, False): 1.0, **{(cl, co): x for cl, co, x in row.speedups}}
    eager = max(x for (_, co), x in speedups.items() if not co)
    compiled = max(x for (_, co), x in speedups.items() if co)
    margin = speed.COMPILE_COST_MARGIN * row.compile_seconds
    return margin / (step_seconds * (1 / eager - 1 / compiled))


def test_32_px_compiles_exactly_when_the_gain_repays_twice_the_compile_time():
    # Ice Lake: channels_last alone 1.22x, with compile 1.23x
    break_even = _break_even(cpu(32))
    short = choose(cpu(32, int(break_even) - 1))
    long = choose(cpu(32, int(break_even) + 2))
    assert (short.channels_last, short.compile) == (True, False)
    assert (long.channels_last, long.compile, long.compile_mode) == (True, True, "default")


def test_32_px_with_native_bf16_never_compiles():
    # Zen 4: channels_last 1.09x (fp32) and 1.12x (bf16); compiled, 1.00x at best
    for precision in ("fp32", "bf16"):
        for steps in (10, 10**7):
            chosen = choose(RunShape("cpu", NATIVE_BF16, "torchvision", 32, precision, steps))
            assert (chosen.channels_last, chosen.compile) == (True, False)


@pytest.mark.parametrize("capability", [NATIVE_BF16, ""])
def test_no_compiler_no_compile_and_then_the_best_eager_layout(capability):
    for size in (32, 96):
        chosen = choose(cpu(size, 1_000_000, capability, compiler_ready=False))
        assert (chosen.channels_last, chosen.compile) == (True, False)


def test_a_smaller_batch_needs_more_steps_before_compile_pays():
    steps = 500  # Zen 4 at 96 px: compile pays from about 120 steps of 256, 960 of 32
    assert choose(cpu(96, steps, NATIVE_BF16)).compile
    assert not choose(cpu(96, steps, NATIVE_BF16, batch_size=32)).compile


def _soonest(shape: RunShape) -> tuple[bool, bool]:
    """The measured combination that finishes ``shape``'s run first, compile time counted
    ``COMPILE_COST_MARGIN`` times; of equals the first in the row's order, as ``choose`` keeps."""
    row = row_for(shape)
    step_seconds = shape.batch_size / row.images_per_second
    combos = [((False, False), 1.0)] + [((cl, co), x) for cl, co, x in row.speedups]

    def run_seconds(combo: tuple[tuple[bool, bool], float]) -> float:
        (_, compiled), x = combo
        cost = speed.COMPILE_COST_MARGIN * row.compile_seconds if compiled else 0.0
        return shape.steps * step_seconds / x + cost

    return min(combos, key=run_seconds)[0]


def test_the_cifar_stem_at_32_px_compiles_a_long_run_only_on_the_cpu_kind_where_it_pays():
    for steps in (10, 10_000, 10**6):
        shape = RunShape("cpu", "", "cifar-stem", 32, "fp32", steps)
        chosen = choose(shape)
        assert (chosen.channels_last, chosen.compile) == _soonest(shape)
        # Ice Lake: channels_last alone (1.45x) beats compile (1.38x) and both (1.35x), so
        # no run is long enough to repay compiling
        assert (chosen.channels_last, chosen.compile) == (True, False)
    emulated = row_for(RunShape("cpu", "", "cifar-stem", 32, "fp32", 10))
    assert emulated.cpu_kind == EMULATED_BF16 and emulated.images_per_second == 12.9
    # Zen 4: channels_last 1.25x, both 1.43x (fp32); 1.15x and 1.18x (bf16), a smaller gain
    # that needs a longer run to repay the compile time
    for precision, short_run, long_run in (("fp32", 20, 200), ("bf16", 200, 5_000)):
        short, long = (
            choose(RunShape("cpu", NATIVE_BF16, "cifar-stem", 32, precision, steps))
            for steps in (short_run, long_run)
        )
        assert (short.channels_last, short.compile) == (True, False)
        assert (long.channels_last, long.compile) == (True, True)


@pytest.mark.parametrize(
    "shape",
    [
        cpu(64, 10),
        cpu(64, 10_000),
        cpu(224, 10, batch_size=64),
        cpu(224, 10**6, batch_size=64),
        RunShape("cpu", NATIVE_BF16, "torchvision", 64, "bf16", 10**6),
        cpu(224, 10, NATIVE_BF16, batch_size=64),
        cpu(224, 10**6, NATIVE_BF16, batch_size=64),
        RunShape("cpu", NATIVE_BF16, "torchvision", 224, "bf16", 10**6, batch_size=64),
        RunShape("cpu", "", "timm-vit", 32, "fp32", 100, batch_size=128, optimizer="adamw"),
        RunShape("cpu", "", "timm-vit", 32, "fp32", 10_000, batch_size=512, optimizer="adamw"),
        RunShape("cpu", "", "timm-vit", 64, "fp32", 10_000, batch_size=128, optimizer="adamw"),
        RunShape(
            "cpu", NATIVE_BF16, "timm-vit", 32, "fp32", 100, batch_size=128, optimizer="adamw"
        ),
        RunShape(
            "cpu", NATIVE_BF16, "timm-vit", 64, "fp32", 10**4, batch_size=128, optimizer="adamw"
        ),
    ],
)
def test_the_rows_at_64_and_224_px_and_of_the_vit_finish_soonest(shape):
    chosen = choose(shape)
    assert (chosen.channels_last, chosen.compile) == _soonest(shape)
    # torch's AdamW keeps its CPU default whatever the row says of layout and compile
    assert chosen.optimizer_kernels == ("for-loop" if shape.optimizer == "adamw" else "foreach")


def test_a_long_run_compiles_where_the_gain_repays_it_and_a_short_one_does_not():
    vit = RunShape("cpu", "", "timm-vit", 32, "fp32", 10, batch_size=128, optimizer="adamw")
    for shape in (cpu(64), vit):
        break_even = _break_even(shape)
        short = dataclasses.replace(shape, steps=int(break_even) - 1)
        long = dataclasses.replace(shape, steps=int(break_even) + 2)
        assert not choose(short).compile and choose(long).compile


def test_cpu_kinds():
    assert speed.cpu_kind(cpu(32, capability=NATIVE_BF16)) == NATIVE_BF16
    assert speed.cpu_kind(cpu(32)) == EMULATED_BF16
    assert speed.cpu_kind(cuda()) == ""


@pytest.mark.parametrize("row", [r for r in MEASURED if r.device_type == "cpu"])
def test_a_row_applies_only_to_cpus_of_its_own_kind(row):
    own = NATIVE_BF16 if row.cpu_kind == NATIVE_BF16 else ""
    other = "" if own else NATIVE_BF16
    shape = RunShape("cpu", own, row.backbone_kind, row.sizes[0], row.precision, 10)
    assert speed.measured_row(shape) is row
    elsewhere = speed.measured_row(dataclasses.replace(shape, capability=other))
    assert elsewhere is None or (elsewhere.cpu_kind != row.cpu_kind and elsewhere is not row)


def test_bf16_rows_need_a_cpu_with_native_bf16():
    native = choose(RunShape("cpu", "native-bf16", "torchvision", 96, "bf16", 10))
    emulated = choose(RunShape("cpu", "", "torchvision", 96, "bf16", 10))
    assert native.channels_last and not emulated.channels_last
    assert "no measurement" in emulated.why


# --- CPU: what was never measured runs as before -------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        cpu(28, 10**6),  # the main job's shape in fp32
        cpu(96, 10**6, world_size=2),  # every row was measured in one process
        RunShape("cpu", NATIVE_BF16, "timm-vit", 96, "fp32", 10**6, optimizer="adamw"),
        RunShape("cpu", NATIVE_BF16, "timm-vit", 32, "bf16", 10**6, optimizer="adamw"),
        RunShape("cpu", "", "timm-vit", 96, "fp32", 10**6, optimizer="adamw"),
        RunShape("cpu", "", "cifar-stem", 64, "fp32", 10**6),
        RunShape("cpu", "", "narrow", 32, "fp32", 10**6),
        RunShape("cpu", "native-bf16", "torchvision", 28, "bf16", 10**6),  # measured: 0.93x
    ],
)
def test_unmeasured_or_losing_shapes_stay_contiguous_and_eager(shape):
    chosen = choose(shape)
    assert (chosen.channels_last, chosen.compile, chosen.compile_mode) == (False, False, "")
    assert chosen.optimizer_kernels == ("for-loop" if shape.optimizer == "adamw" else "foreach")
    assert not chosen.pin_memory and not chosen.non_blocking


def test_the_default_job_runs_as_before_auto():
    c = preset("fashion-mnist")
    assert (c.runtime.channels_last, c.runtime.compile) == ("auto", "auto")
    shape = RunShape(
        device_type="cpu",
        capability="",
        backbone_kind=speed.backbone_kind(c.model.backbone, c.model.cifar_stem),
        image_size=c.data.image_size,
        precision="fp32",
        steps=936,
        batch_size=c.optim.batch_size,
        optimizer=c.optim.optimizer,
    )
    chosen = choose(shape)
    assert (chosen.channels_last, chosen.compile, chosen.optimizer_kernels) == (
        False,
        False,
        "foreach",
    )


# --- what the config sets is obeyed ---------------------------------------------------------------


def test_explicit_switches_are_obeyed_and_auto_fills_the_rest_from_measured_combinations():
    # Ice Lake, channels_last off: compile alone (1.29x of 13.5 s steps) repays twice 99 s in
    # about 65 steps
    no_layout = Requested(channels_last="false")
    short, long = choose(cpu(96, 20), no_layout), choose(cpu(96, 100), no_layout)
    assert (short.channels_last, short.compile, long.channels_last, long.compile) == (
        False,
        False,
        False,
        True,
    )
    both = choose(cpu(32), Requested(channels_last="true", compile="true"))
    assert (both.channels_last, both.compile, both.why) == (True, True, "as set")
    # compile set: at 96 px compile alone and both measured 1.29x; the first of equals is kept
    compiled = choose(cpu(96), Requested(compile="true"))
    assert (compiled.channels_last, compiled.compile) == (False, True)
    # at 32 px with compile set, its cost is paid either way: both together (1.23x) wins
    assert choose(cpu(32, 1), Requested(compile="true")).channels_last
    autotuned = Requested(compile="true", compile_mode="max-autotune")
    assert choose(cpu(32), autotuned).compile_mode == "max-autotune"


def test_optimizer_kernels():
    assert choose(cpu(32, optimizer="sgd")).optimizer_kernels == "for-loop"  # torch's CPU default
    assert choose(cuda(optimizer="adamw")).optimizer_kernels == "fused"
    assert choose(cuda(optimizer="lars")).optimizer_kernels == "foreach"
    fused = Requested(optimizer_kernels="fused")
    assert choose(cpu(32, optimizer="sgd"), fused).optimizer_kernels == "fused"
    with pytest.raises(ConfigError, match="LARS runs foreach kernels only"):
        choose(cpu(32), Requested(optimizer_kernels="fused"))


# --- CUDA, decided on a CPU -----------------------------------------------------------------------


def test_cuda_channels_last_where_convolutions_run_on_tensor_cores():
    assert choose(cuda()).channels_last  # bf16, compute capability 8.0
    assert not choose(cuda(precision="fp32")).channels_last
    assert not choose(cuda(capability="6.1")).channels_last  # no tensor cores
    assert not choose(cuda(backbone_kind="timm-vit")).channels_last


def test_cuda_compiles_long_runs_with_cuda_graphs_on_one_device_only():
    long = speed.CUDA_COMPILE_MIN_STEPS
    assert not choose(cuda(long - 1)).compile
    chosen = choose(cuda(long))
    assert (chosen.compile, chosen.compile_mode) == (True, "reduce-overhead")
    assert choose(cuda(long, world_size=2)).compile_mode == "default"
    assert choose(cuda(long, accumulation_steps=2)).compile_mode == "default"
    assert not choose(cuda(long, compiler_ready=False)).compile
    assert chosen.pin_memory and chosen.non_blocking


# --- the views' threads ---------------------------------------------------------------------------


def test_view_threads():
    assert speed.view_threads(3, "cpu", 2, 2, 2, "cropped") == 3  # set: obeyed
    assert speed.view_threads(0, "cpu", 2, 2, 2, "cropped") == 1  # at least one
    assert speed.view_threads(0, "cpu", 16, 4, 8, "cropped") == 8  # never above the step's
    assert speed.view_threads(0, "cpu", 16, 12, 8, "cropped") == 4
    assert speed.view_threads(0, "cpu", 2, 0, 2, "cropped") == 2  # no workers beside them
    assert speed.view_threads(0, "cpu", 2, 2, 2, "batched") == 2
    assert speed.view_threads(0, "cuda", 2, 2, 2, "cropped") == 2


def test_backbone_kinds():
    assert speed.backbone_kind("resnet50", False) == "torchvision"
    assert speed.backbone_kind("resnet18", True) == "cifar-stem"
    assert speed.backbone_kind("resnet18-narrow", False) == "narrow"
    assert speed.backbone_kind("timm:vit_small_patch16_224", False) == "timm-vit"
    assert speed.backbone_kind("timm:resnet26d", False) == "timm"


def test_saved_booleans_read_as_words_and_bad_words_are_refused():
    saved = Config().to_dict()
    saved["runtime"].update(channels_last=True, compile=False)
    loaded = from_dict(saved)
    assert (loaded.runtime.channels_last, loaded.runtime.compile) == ("true", "false")
    with pytest.raises(ConfigError, match="channels_last"):
        Config().replace(channels_last="sometimes").validate()


# --- a real run records its choices ---------------------------------------------------------------


@pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_a_run_records_what_it_chose_in_its_summary(tmp_path, one_thread):
    config = preset("fashion-mnist").replace(
        backbone="resnet18-narrow",
        train_subset=128,
        batch_size=64,
        epochs=1,
        projector_hidden_dim=64,
        predictor_hidden_dim=64,
        projection_dim=32,
        num_workers=0,
        knn_every_epochs=0,
        knn_final=False,
        loggers="none",
        precision="fp32",
        optimizer="sgd",
        channels_last=True,
    )
    pretrain(config, tmp_path / "run", quiet=True)
    chosen = json.loads((tmp_path / "run" / "summary.json").read_text())["speed"]
    assert chosen["channels_last"] is True and chosen["compile"] is False
    assert chosen["optimizer_kernels"] == "for-loop" and chosen["view_threads"] == 1
    assert "no measurement" in chosen["why"]
