"""Tests for byol.config and the `byol` command's config handling (byol.cli)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from byol.cli import main
from byol.config import Config, apply_overrides, from_dict
from byol.errors import ConfigError
from byol.presets import PRESETS, preset
from byol.run_folder import save_config

# --- presets -----------------------------------------------------------------------------------


def test_imagenet_paper_preset_is_the_paper():
    c = preset("imagenet-paper")
    expected = dict(
        # arXiv:2006.07733, Section 3.3
        backbone="resnet50",
        cifar_stem=False,
        image_size=224,
        projector_hidden_dim=4096,
        predictor_hidden_dim=4096,
        projection_dim=256,
        # section 4
        optimizer="lars",
        base_lr=0.2,
        batch_size=4096,
        weight_decay=1.5e-6,
        momentum=0.9,
        lars_trust_coefficient=1e-3,
        epochs=1000,
        warmup_epochs=10,
        tau_base=0.996,
        # section 3, Table 6: pairs are (T, T')
        crop_scale=(0.08, 1.0),
        crop_ratio=(3 / 4, 4 / 3),
        flip_prob=0.5,
        jitter_prob=0.8,
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.1,
        grayscale_prob=0.2,
        blur_prob=(1.0, 0.1),
        blur_sigma=(0.1, 2.0),
        blur_kernel_fraction=0.1,
        solarize_prob=(0.0, 0.2),
    )
    actual = {key: getattr(c, key) for key in expected}
    assert actual == expected
    assert c == Config()  # the defaults are the paper's numbers


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates_and_applies_its_changes(name):
    c = preset(name)
    c.validate()
    for key, value in PRESETS[name].items():
        assert getattr(c, key) == value
    assert preset(name) == c and preset(name) is not c


def test_small_image_presets_use_small_image_settings():
    assert (preset("cifar10").image_size, preset("cifar10").backbone) == (32, "resnet18")
    assert preset("cifar10").cifar_stem is True
    fashion = preset("fashion-mnist")
    assert (fashion.data.image_size, fashion.model.backbone, fashion.data.dataset) == (
        28,
        "resnet18",
        "fashion-mnist",
    )
    assert fashion.monitor.eval_crop_fraction == 1.0  # no centre crop of 28 px images
    # presets change only what they list: other view parameters stay the paper's
    for name in PRESETS:
        if "blur_prob" not in PRESETS[name]:
            assert preset(name).blur_prob == (1.0, 0.1)
        assert preset(name).solarize_prob == (0.0, 0.2)
        assert preset(name).grayscale_prob == 0.2 and preset(name).jitter_prob == 0.8


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        preset("imagenet")
    message = str(info.value)
    assert "'imagenet'" in message
    assert all(name in message for name in PRESETS)


# --- overrides ---------------------------------------------------------------------------------


def test_overrides_are_parsed_against_the_field_types():
    base = Config()
    c = apply_overrides(
        base,
        [
            "epochs=5",
            "base_lr=0.3",
            "warmup_epochs=2",
            "download=true",
            "channels_last=1",
            "dataset=cifar100",
            "blur_prob=0.5,0.5",
            "crop_scale=(0.2, 1)",
            "batch-size=64",
        ],
    )
    assert c.schedule.epochs == 5 and type(c.schedule.epochs) is int
    assert c.optim.base_lr == 0.3 and type(c.optim.base_lr) is float
    assert c.schedule.warmup_epochs == 2.0 and type(c.schedule.warmup_epochs) is float
    assert c.data.download is True and c.runtime.channels_last is True
    assert c.data.dataset == "cifar100"
    assert (c.views[0].blur_prob, c.views[1].blur_prob) == (0.5, 0.5) and type(
        (c.views[0].blur_prob, c.views[1].blur_prob)
    ) is tuple
    assert c.views[0].crop_scale == (0.2, 1.0) and all(
        type(v) is float for v in c.views[0].crop_scale
    )
    assert c.optim.batch_size == 64
    assert base == Config()  # the input is not modified
    for text, value in [("off", False), ("no", False), ("0", False), ("YES", True), ("on", True)]:
        assert apply_overrides(Config(), [f"download={text}"]).download is value
    assert apply_overrides(Config(), ["data_dir=/a=b"]).data_dir == "/a=b"  # split at the first =
    assert apply_overrides(Config(), []) == Config()


def test_unknown_key_names_it_suggests_a_close_one_and_lists_all():
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), ["batchsize=8"])
    message = str(info.value)
    assert "'batchsize'" in message
    assert "Did you mean 'batch_size'?" in message
    for field in dataclasses.fields(Config):
        assert field.name in message
    assert "\n" not in message

    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), ["nonsense=1"])
    assert "'nonsense'" in str(info.value) and "Did you mean" not in str(info.value)


@pytest.mark.parametrize(
    "item, key",
    [
        ("epochs=ten", "epochs"),
        ("epochs=5.5", "epochs"),
        ("base_lr=fast", "base_lr"),
        ("base_lr=nan", "base_lr"),
        ("base_lr=inf", "base_lr"),
        ("download=maybe", "download"),
        ("blur_prob=0.5", "blur_prob"),
        ("blur_prob=0.5,0.5,0.5", "blur_prob"),
        ("crop_scale=a,b", "crop_scale"),
    ],
)
def test_wrong_type_names_the_key(item, key):
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), [item])
    message = str(info.value)
    assert message.startswith(f"{key}=")
    assert repr(item.split("=", 1)[1]) in message


def test_bad_tuple_element_reports_the_whole_field():
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), ["crop_scale=a,b"])
    assert str(info.value) == (
        "crop_scale='a,b' is not a valid 2 comma-separated numbers (default (0.08, 1.0))."
    )


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Config(), ["epochs"])


# --- validate ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item, words",
    [
        ("optimizer=adam", ["optimizer", "'adam'", "lars", "sgd", "adamw"]),
        ("precision=fp16", ["precision", "fp32", "bf16"]),
        ("backbone=vgg", ["backbone", "'vgg'", "resnet50", "resnet18"]),
        ("batch_size=0", ["batch_size=0", ">= 2"]),
        ("epochs=-1", ["epochs=-1", ">= 1"]),
        ("tau_base=1.5", ["tau_base=1.5", ">= 0", "<= 1"]),
    ],
)
def test_validate_rejects_bad_values_with_the_choices(item, words):
    config = apply_overrides(Config(), [item])  # parses fine: the type is right
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert all(word in str(info.value) for word in words), str(info.value)


def test_validate_accepts_every_optimizer_choice():
    for name in ("lars", "sgd", "adamw"):
        apply_overrides(Config(), [f"optimizer={name}"]).validate()


# --- save and load -----------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    config = apply_overrides(preset("cifar10"), ["epochs=7", "blur_prob=0.7,0.3", "hue=0.05"])
    path = tmp_path / "config.json"
    save_config(path.parent, config)
    assert json.loads(path.read_text())["blur_prob"] == [0.7, 0.3]
    loaded = Config.load(path)
    assert loaded == config
    for field in dataclasses.fields(Config):
        assert type(getattr(loaded, field.name)) is type(getattr(config, field.name)), field.name
    assert loaded.views[0].crop_ratio == (3 / 4, 4 / 3)  # floats survive JSON exactly


def test_load_rejects_unknown_keys_and_fills_missing_ones(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"epochs": 3, "learning_rate": 0.1}))
    with pytest.raises(ConfigError, match="learning_rate"):
        Config.load(path)
    assert from_dict({"epochs": 3}) == Config().replace(epochs=3)


# --- the command line --------------------------------------------------------------------------


def test_cli_config_prints_the_resolved_config(capsys):
    assert main(["config", "--preset", "cifar10", "--set", "epochs=5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["epochs"] == 5
    assert printed["dataset"] == "cifar10" and printed["batch_size"] == 512
    assert from_dict(printed) == apply_overrides(preset("cifar10"), ["epochs=5"])


def assert_one_line_error(capsys, *words):
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.startswith("byol: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert all(word in err for word in words), err


def test_cli_unknown_key_is_a_one_line_error(capsys, tmp_path):
    code = main(["pretrain", "--run-dir", str(tmp_path / "run"), "--set", "nonsense=1"])
    assert code == 2
    assert_one_line_error(capsys, "'nonsense'", "Valid keys")
    assert not (tmp_path / "run").exists()  # nothing started


def test_cli_wrong_type_and_invalid_choice_are_one_line_errors(capsys, tmp_path):
    assert main(["pretrain", "--run-dir", str(tmp_path), "--set", "epochs=ten"]) == 2
    assert_one_line_error(capsys, "epochs=", "'ten'")
    assert main(["pretrain", "--run-dir", str(tmp_path), "--set", "optimizer=adam"]) == 2
    assert_one_line_error(capsys, "optimizer", "lars, sgd, adamw")
    assert list(tmp_path.iterdir()) == []


def test_cli_resume_of_an_empty_folder(capsys, tmp_path):
    assert main(["pretrain", "--resume", str(tmp_path)]) == 2
    assert_one_line_error(capsys, str(tmp_path), "config.json")


def test_cli_unknown_preset_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["config", "--preset", "imagenet"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_m_byol_presets_lists_the_presets():
    result = subprocess.run(
        [sys.executable, "-m", "byol", "presets"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == list(PRESETS)
    assert "imagenet-paper" in result.stdout.split()


# --- every setting checked by range, in one place ------------------------------------------------
def out_of_range(rule, default) -> list[str]:
    """Values of the right type that ``rule`` refuses, as --set text."""
    bad = []
    if rule.choices is not None:
        bad.append("nonsense")
    if rule.pattern is not None:
        bad.append("tpu")
    if rule.nonempty:
        bad.append("")
    for bound, step in ((rule.low, -1), (rule.high, 1)):
        if bound is not None:
            bad.append(bound + step)
    if rule.above is not None:
        bad.append(rule.above)
    if isinstance(default, tuple):
        width = len(default)
        texts = [",".join([str(v)] * width) for v in bad if not isinstance(v, str)]
        if rule.ordered:
            low, high = sorted(default)
            texts.append(f"{high},{low}" if low != high else f"{high + 0.1},{low}")
        return texts
    return [str(v) for v in bad]


def sweep(settings_class, rules) -> list[tuple[str, str]]:
    defaults = settings_class()
    cases = []
    for field in dataclasses.fields(settings_class):
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            cases.append((field.name, "maybe"))  # the parser's own check
        elif field.name in rules:
            cases += [(field.name, text) for text in out_of_range(rules[field.name], default)]
    return cases


def test_every_setting_has_a_rule():
    from byol.config import RULES
    from byol.evaluation.eval_settings import RULES as EVAL_RULES
    from byol.evaluation.eval_settings import EvalSettings
    from byol.experiments.ablate import ABLATION_RULES, AblationSettings

    for settings_class, rules in ((Config, RULES), (EvalSettings, EVAL_RULES),
                                  (AblationSettings, ABLATION_RULES)):  # fmt: skip
        for field in dataclasses.fields(settings_class):
            default = getattr(settings_class(), field.name)
            assert isinstance(default, bool) or field.name in rules, field.name
        for preset_name in PRESETS:  # and the presets themselves are valid
            preset(preset_name).validate()


def one_line_refusal(code: int, err: str, key: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("byol: error: "), err
    assert key in lines[0] and "Traceback" not in err


def test_out_of_range_settings_end_in_one_line_before_anything_starts(tmp_path, capsys):
    from byol.config import RULES
    from byol.evaluation.eval_settings import RULES as EVAL_RULES
    from byol.evaluation.eval_settings import EvalSettings
    from byol.experiments.ablate import ABLATION_RULES, AblationSettings

    cases = sweep(Config, RULES)
    assert len(cases) > 60
    for key, text in cases:
        run = tmp_path / f"run-{key}"
        code = main(["pretrain", "--quiet", "--run-dir", str(run), "--set", f"{key}={text}"])
        one_line_refusal(code, capsys.readouterr().err, key)
        assert not run.exists(), (key, text)  # no run started
    encoder_folder = tmp_path / "encoder"
    encoder_folder.mkdir()
    (encoder_folder / "encoder.safetensors").write_bytes(b"")
    for key, text in sweep(EvalSettings, EVAL_RULES):
        code = main(["eval", "knn", str(encoder_folder), "--set", f"{key}={text}"])
        one_line_refusal(code, capsys.readouterr().err, key)
    for key, text in sweep(AblationSettings, ABLATION_RULES):
        out = tmp_path / f"ablation-{key}"
        code = main(["ablate", "predictor", "--out", str(out), "--set", f"{key}={text}"])
        one_line_refusal(code, capsys.readouterr().err, key)
        assert not out.exists(), (key, text)
