"""Tests for byol.config and the `byol` command's config handling (byol.cli)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from byol import settings
from byol.cli import main
from byol.config import (
    METHODS,
    Config,
    apply_overrides,
    from_dict,
    identity,
    resolve_key,
    resume_changes,
)
from byol.errors import ConfigError
from byol.presets import METHOD_CHANGES, PRESETS, configure, preset
from byol.run_folder import save_config

# --- presets -----------------------------------------------------------------------------------


def test_imagenet_paper_preset_is_the_paper():
    c = preset("imagenet-paper")
    expected = {
        # arXiv:2006.07733, Section 3.3
        "model.backbone": "resnet50",
        "model.cifar_stem": False,
        "data.image_size": 224,
        "method.projector_hidden_dim": 4096,
        "method.predictor_hidden_dim": 4096,
        "method.projection_dim": 256,
        "optim.optimizer": "lars",
        "optim.base_lr": 0.2,
        "optim.batch_size": 4096,
        "optim.weight_decay": 1.5e-6,
        "optim.momentum": 0.9,
        "optim.lars_trust_coefficient": 1e-3,
        "schedule.epochs": 1000,
        "schedule.warmup_epochs": 10,
        "schedule.tau_base": 0.996,
        # Table 6: T and T'
        "views.1.crop_scale": (0.08, 1.0),
        "views.1.crop_ratio": (3 / 4, 4 / 3),
        "views.1.flip_prob": 0.5,
        "views.1.jitter_prob": 0.8,
        "views.1.brightness": 0.4,
        "views.1.contrast": 0.4,
        "views.1.saturation": 0.2,
        "views.1.hue": 0.1,
        "views.1.grayscale_prob": 0.2,
        "views.1.blur_prob": 1.0,
        "views.2.blur_prob": 0.1,
        "views.1.blur_sigma": (0.1, 2.0),
        "views.1.blur_kernel_fraction": 0.1,
        "views.1.solarize_prob": 0.0,
        "views.2.solarize_prob": 0.2,
    }
    flat = settings.flatten(c)
    assert {key: flat[key] for key in expected} == expected
    # T and T' differ only in the blur and solarisation probabilities
    differ = {
        k.split(".")[2]
        for k in flat
        if k.startswith("views.1.")
        if flat[k] != flat[k.replace("views.1.", "views.2.")]
    }
    assert differ == {"blur_prob", "solarize_prob"}
    assert c == Config()  # the defaults are the paper's numbers


def preset_value(config: Config, key: str):
    """What ``key`` (a short name or path) holds in ``config``; a pair for a name both views have
    and that differs between them."""
    values = [settings.find(config, path)[0] for path in resolve_key(config, key)]
    return values[0] if len(set(values)) == 1 else tuple(values)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates_and_applies_its_changes(name):
    if PRESETS[name].get("backbone", "").startswith("timm:"):
        pytest.importorskip("timm", reason="the timm extra is not installed")
    for method in METHODS:
        c = preset(name, method)
        c.validate()
        assert c.method.name == method
        for key, value in PRESETS[name].items():
            assert preset_value(c, key) in (value, (value, value)), key
        for key, value in METHOD_CHANGES.get(name, {}).get(method, {}).items():
            assert getattr(c.method, key) == value, (method, key)
        assert preset(name, method) == c and preset(name, method) is not c


def test_a_presets_method_changes_reach_that_method_only():
    assert preset("fashion-mnist", "barlow").method.projector_dim == 1024
    assert preset("cifar10", "barlow").method.projector_dim == 8192  # the paper's
    assert preset("fashion-mnist").method.predictor_lr_scale == 30.0
    # --method on the command line gets the preset's changes, as --set method=... does
    assert configure("fashion-mnist", ["method=moco"]).method.queue_size == 4096
    assert configure("fashion-mnist", [], "moco") == configure("fashion-mnist", ["method=moco"])
    with pytest.raises(ConfigError, match="is not one of"):
        preset("fashion-mnist", "dino")


def test_small_image_presets_use_small_image_settings():
    cifar = preset("cifar10")
    assert (cifar.data.image_size, cifar.model.backbone, cifar.model.cifar_stem) == (
        32,
        "resnet18",
        True,
    )
    fashion = preset("fashion-mnist")
    assert (fashion.data.image_size, fashion.model.backbone, fashion.data.dataset) == (
        28,
        "resnet18",
        "fashion-mnist",
    )
    assert fashion.monitor.eval_crop_fraction == 1.0  # no centre crop of 28 px images
    # presets change only what they list: other view parameters stay the paper's
    for name in PRESETS:
        t, t_prime = preset(name).views
        if "blur_prob" not in PRESETS[name]:
            assert (t.blur_prob, t_prime.blur_prob) == (1.0, 0.1)
        assert (t.solarize_prob, t_prime.solarize_prob) == (0.0, 0.2)
        assert t.grayscale_prob == t_prime.grayscale_prob == 0.2 and t.jitter_prob == 0.8


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
            "optim.base_lr=0.3",
            "warmup_epochs=2",
            "download=true",
            "channels_last=true",
            "data.dataset=cifar100",
            "blur_prob=0.5,0.25",
            "crop_scale=(0.2, 1)",
            "views.2.solarize_prob=0.3",
            "batch-size=64",
        ],
    )
    assert c.schedule.epochs == 5 and type(c.schedule.epochs) is int
    assert c.optim.base_lr == 0.3 and type(c.optim.base_lr) is float
    assert c.schedule.warmup_epochs == 2.0 and type(c.schedule.warmup_epochs) is float
    assert c.data.download is True and c.runtime.channels_last == "true"
    assert c.data.dataset == "cifar100"
    assert (c.views[0].blur_prob, c.views[1].blur_prob) == (0.5, 0.25)  # a pair: T, then T'
    assert c.views[0].crop_scale == c.views[1].crop_scale == (0.2, 1.0)  # both views
    assert all(type(v) is float for v in c.views[0].crop_scale)
    assert (c.views[0].solarize_prob, c.views[1].solarize_prob) == (0.0, 0.3)
    assert c.optim.batch_size == 64
    assert base == Config()  # the input is not modified
    assert apply_overrides(Config(), ["blur_prob=0.5"]).views[1].blur_prob == 0.5  # one: both
    for text, value in [("off", False), ("no", False), ("0", False), ("YES", True), ("on", True)]:
        assert apply_overrides(Config(), [f"download={text}"]).data.download is value
    assert apply_overrides(Config(), ["data_dir=/a=b"]).data.data_dir == "/a=b"  # at the first =
    assert apply_overrides(Config(), []) == Config()


def test_the_method_and_its_own_settings():
    c = apply_overrides(Config(), ["method=simclr", "temperature=0.3"])
    assert c.method.name == "simclr" and c.method.temperature == 0.3
    assert apply_overrides(c, ["method.temperature=0.2"]).method.temperature == 0.2
    assert apply_overrides(c, ["simclr_temperature=0.4"]).method.temperature == 0.4  # old name
    with pytest.raises(ConfigError, match="a setting of method=moco"):
        apply_overrides(Config(), ["moco_queue_size=8"])
    with pytest.raises(ConfigError, match="a setting of method=vicreg"):
        apply_overrides(Config(), ["expander_dim=8"])
    # Config.replace, the Python face, leaves other methods' settings out: one set of changes
    # fits a run of any method.
    tiny = {"predictor_hidden_dim": 8, "queue_size": 8, "projector_dim": 8}
    assert Config().replace(method="moco", **tiny).method.queue_size == 8
    assert Config().replace(method="barlow", **tiny).method.projector_dim == 8
    assert Config().replace(**tiny).method.predictor_hidden_dim == 8


def test_unknown_key_names_it_suggests_a_close_one_and_lists_the_names():
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), ["batchsize=8"])
    message = str(info.value)
    assert "'batchsize'" in message
    assert "Did you mean 'batch_size'?" in message
    for name in ("base_lr", "tau_base", "crop_scale", "knn_k", "dataset"):
        assert name in message
    assert "\n" not in message
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), ["nonsense=1"])
    assert "'nonsense'" in str(info.value) and "Did you mean" not in str(info.value)
    with pytest.raises(ConfigError, match="group of settings"):
        apply_overrides(Config(), ["optim=1"])


@pytest.mark.parametrize(
    "item, key",
    [
        ("epochs=ten", "epochs"),
        ("epochs=5.5", "epochs"),
        ("base_lr=fast", "base_lr"),
        ("base_lr=nan", "base_lr"),
        ("base_lr=inf", "base_lr"),
        ("download=maybe", "download"),
        ("blur_prob=0.5,0.5,0.5", "blur_prob"),
        ("crop_scale=0.5", "crop_scale"),
        ("crop_scale=a,b", "crop_scale"),
        ("views.1.crop_scale=a,b", "crop_scale"),
    ],
)
def test_wrong_type_names_the_key(item, key):
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), [item])
    message = str(info.value)
    assert message.split("=")[0].endswith(key), message
    text = item.split("=", 1)[1]
    assert repr(text) in message or repr(text.split(",")[0]) in message


def test_bad_tuple_element_reports_the_whole_field():
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), ["crop_scale=a,b"])
    assert str(info.value) == (
        "views.1.crop_scale='a,b' is not a valid 2 comma-separated numbers (default (0.08, 1.0))."
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
    config = apply_overrides(
        preset("cifar10", "moco"), ["epochs=7", "blur_prob=0.7,0.3", "hue=0.05", "queue_size=64"]
    )
    path = tmp_path / "config.json"
    save_config(path.parent, config)
    saved = json.loads(path.read_text())
    assert [view["blur_prob"] for view in saved["views"]] == [0.7, 0.3]
    assert saved["method"]["name"] == "moco" and saved["method"]["queue_size"] == 64
    loaded = Config.load(path)
    assert loaded == config
    for leaf in settings.leaves(loaded):
        assert type(leaf.value) is type(settings.find(config, leaf.path)[0]), leaf.path
    assert loaded.views[0].crop_ratio == (3 / 4, 4 / 3)  # floats survive JSON exactly


def test_load_rejects_unknown_keys_and_fills_missing_ones(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"optim": {"batch_size": 3, "learning_rate": 0.1}}))
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        Config.load(path)
    assert from_dict({"schedule": {"epochs": 3}}) == Config().replace(epochs=3)
    with pytest.raises(ConfigError, match="'name'"):
        from_dict({"method": {"temperature": 0.2}})


# The config.json that a fashion-mnist MoCo run of the flat-config releases saved (2026-11).
OLD_FLAT_CONFIG = {
    **{"dataset": "fashion-mnist", "data_dir": "", "download": False, "image_size": 28},
    **{"train_subset": 256, "strict_images": False, "backbone": "resnet18"},
    **{"backbone_kwargs": "", "cifar_stem": False, "projector_hidden_dim": 4096},
    **{"projection_dim": 256, "predictor_hidden_dim": 4096, "method": "moco"},
    **{"use_predictor": True, "predictor_warmup_steps": 50, "predictor_lr_scale": 30.0},
    **{"simclr_temperature": 0.1, "barlow_lambda": 0.005, "barlow_projector_dim": 1024},
    **{"moco_queue_size": 4096, "moco_temperature": 0.2, "crop_scale": [1.0, 1.0]},
    **{"crop_ratio": [0.75, 1.3333333333333333], "flip_prob": 0.5, "jitter_prob": 0.8},
    **{"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1},
    **{"grayscale_prob": 0.2, "blur_prob": [0.0, 0.0], "blur_sigma": [0.1, 2.0]},
    **{"blur_kernel_fraction": 0.1, "solarize_prob": [0.0, 0.2], "optimizer": "lars"},
    **{"base_lr": 1.0, "batch_size": 32, "weight_decay": 1e-06, "momentum": 0.9},
    **{"lars_trust_coefficient": 0.001, "epochs": 1, "warmup_epochs": 0.1},
    **{"schedule_epochs": 8.0, "tau_base": 0.97, "tau_schedule": "cosine"},
    **{"accumulation_steps": 1, "sync_batchnorm": True, "device": "auto"},
    **{"precision": "auto", "channels_last": False, "views": "batched", "compile": False},
    **{"num_workers": 0, "threads": 1, "seed": 0, "log_every_steps": 10, "loggers": "none"},
    **{"checkpoint_every_steps": 0, "max_minutes": 0.0, "knn_k": 200, "knn_temperature": 0.1},
    **{"knn_every_epochs": 0, "knn_bank_subset": 10000, "knn_final": False},
    **{"knn_references": False, "eval_batch_size": 512, "eval_crop_fraction": 1.0},
}


def test_a_flat_config_of_an_earlier_release_reads_into_the_tree():
    loaded = from_dict(OLD_FLAT_CONFIG)
    expected = preset("fashion-mnist", "moco").replace(
        train_subset=256,
        batch_size=32,
        epochs=1,
        knn_final=False,
        knn_references=False,
        knn_every_epochs=0,
        threads=1,
        num_workers=0,
        loggers="none",
        view_path="batched",
        channels_last=False,  # booleans before they had auto: read as the words
        compile=False,
    )
    assert (loaded.runtime.channels_last, loaded.runtime.compile) == ("false", "false")
    assert loaded == expected
    assert resume_changes(loaded, expected) == []  # so its run folder resumes


# --- what makes two runs the same experiment ------------------------------------------------------


def test_identity_leaves_out_how_a_run_executes_and_what_the_monitor_scores():
    base = preset("fashion-mnist")
    how = base.replace(
        threads=1,
        num_workers=3,
        device="cpu",
        loggers="none",
        knn_k=20,
        max_minutes=5.0,
        precision="fp32",
        data_dir="/elsewhere",
    )
    assert identity(how) == identity(base)
    for change in ({"tau_base": 0.9}, {"seed": 1}, {"views.2.solarize_prob": 0.0}, {"lr": 0}):
        if "lr" in change:
            change = {"predictor_lr_scale": 2.0}  # a method's own setting is part of it
        assert identity(base.replace(**change)) != identity(base), change
    assert identity(preset("fashion-mnist", "simclr")) != identity(base)
    assert all(not key.startswith(("runtime.", "monitor.")) for key in identity(base))


def test_resume_may_change_only_resumable_settings_and_recovery_ones_after_divergence():
    saved = preset("fashion-mnist")
    assert resume_changes(saved, saved.replace(threads=1, max_minutes=3.0)) == []
    assert resume_changes(saved, saved.replace(accumulation_steps=2)) == []
    # Folders from before the speed switches' auto saved channels_last=false; they resume.
    assert resume_changes(saved.replace(channels_last="false"), saved) == []
    assert resume_changes(saved, saved.replace(epochs=9)) == ["schedule.epochs: 4 -> 9"]
    lower = saved.replace(base_lr=0.5, precision="fp32")
    assert len(resume_changes(saved, lower)) == 2
    assert resume_changes(saved, lower, diverged=True) == []
    assert resume_changes(saved, preset("fashion-mnist", "moco")) == ["method: 'byol' -> 'moco'"]


# --- the command line --------------------------------------------------------------------------


def test_cli_config_prints_the_tree_with_help_and_the_saved_json(capsys):
    assert main(["config", "--preset", "cifar10", "--set", "epochs=5", "--method", "moco"]) == 0
    printed = capsys.readouterr().out
    assert "schedule.epochs = 5  # passes over the training set" in printed
    assert "method.queue_size = 65536  # negatives kept from earlier steps" in printed
    lines = [line for line in printed.splitlines() if line.strip()]
    assert len(lines) == len(list(settings.leaves(preset("cifar10", "moco"))))
    assert main(["config", "--preset", "cifar10", "--set", "epochs=5", "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["schedule"]["epochs"] == 5 and saved["optim"]["batch_size"] == 512
    assert from_dict(saved) == apply_overrides(preset("cifar10"), ["epochs=5"])


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


def sweep(tree) -> list[tuple[str, str]]:
    cases = []
    for leaf in settings.leaves(tree):
        if leaf.path == "method.name":
            cases.append((leaf.path, "dino"))
        elif isinstance(leaf.value, bool):
            cases.append((leaf.path, "maybe"))  # the parser's own check
        else:
            cases += [(leaf.path, text) for text in out_of_range(leaf.rule, leaf.value)]
    return cases


def every_settings_tree():
    from byol.evaluation.eval_settings import EvalSettings
    from byol.experiments.ablate import AblationSettings

    return [*(preset("imagenet-paper", m) for m in METHODS), EvalSettings(), AblationSettings()]


def test_every_setting_has_help_and_a_rule_that_refuses_something():
    for tree in every_settings_tree():
        for leaf in settings.leaves(tree):
            assert leaf.help, leaf.path
            free_text = leaf.path in ("data.data_dir", "model.backbone_kwargs") or (
                isinstance(leaf.value, str) and leaf.rule == settings.Rule()
            )
            if not isinstance(leaf.value, bool) and not free_text:
                assert out_of_range(leaf.rule, leaf.value), leaf.path
    for preset_name in PRESETS:  # and the presets themselves are valid
        if "timm:" not in str(PRESETS[preset_name].get("backbone", "")):
            preset(preset_name).validate()


def one_line_refusal(code: int, err: str, key: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("byol: error: "), err
    assert key in lines[0] and "Traceback" not in err


def test_out_of_range_settings_end_in_one_line_before_anything_starts(tmp_path, capsys):
    from byol.evaluation.eval_settings import EvalSettings
    from byol.experiments.ablate import AblationSettings

    cases = [(m, key, text) for m in METHODS for key, text in sweep(preset("imagenet-paper", m))]
    cases = [c for c in cases if c[0] == "byol" or c[1].startswith("method.")]
    assert len(cases) > 80
    for method, key, text in cases:
        run = tmp_path / f"run-{key}"
        argv = ["pretrain", "--quiet", "--method", method, "--run-dir", str(run)]
        code = main([*argv, "--set", f"{key}={text}"])
        one_line_refusal(
            code, capsys.readouterr().err, key.rsplit(".", 1)[-1].replace("name", "method")
        )
        assert not run.exists(), (key, text)  # no run started
    encoder_folder = tmp_path / "encoder"
    encoder_folder.mkdir()
    (encoder_folder / "encoder.safetensors").write_bytes(b"")
    for key, text in sweep(EvalSettings()):
        code = main(["eval", "knn", str(encoder_folder), "--set", f"{key}={text}"])
        one_line_refusal(code, capsys.readouterr().err, key)
    for key, text in sweep(AblationSettings()):
        out = tmp_path / f"ablation-{key}"
        code = main(["ablate", "predictor", "--out", str(out), "--set", f"{key}={text}"])
        one_line_refusal(code, capsys.readouterr().err, key)
        assert not out.exists(), (key, text)
