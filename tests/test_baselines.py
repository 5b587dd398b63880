"""Baselines (docs/method.md) and the ablation variants (arXiv:2006.07733, Section 5): the losses
against closed
forms, MoCo's queue, the tau = 0 target, a real collapse, and `byol ablate` end to end."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from byol import BYOL, target_tau
from byol.checkpoint import load_encoder
from byol.cli import main
from byol.config import Config, apply_overrides
from byol.evaluation.protocols import Evaluation
from byol.experiments.tables import table
from byol.methods.barlow import BarlowTwins
from byol.methods.losses import barlow_twins_loss, info_nce, nt_xent
from byol.methods.moco import MoCo
from byol.methods.simclr import SimCLR
from byol.presets import preset
from byol.run_folder import read_metrics, save_config
from byol.training.loop import pretrain
from byol.training.optim import build_optimizer
from byol.training.step import train_step
from byol.training.train_state import build_model
from byol.views.per_image import ViewTransform

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)


# --- NT-Xent (SimCLR) ---------------------------------------------------------------------------
def test_nt_xent_hand_computed_cases():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    t = 0.5
    # Both views of image 0 are e1, of image 1 are e2: every anchor has its positive at cos 1
    # and, among the 3 others, two negatives at cos 0.
    z = torch.tensor([e1, e2])
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0)))
    assert nt_xent(z, z, t).item() == pytest.approx(expected, rel=1e-6)
    # The second views swapped: each positive is orthogonal (cos 0), one negative is identical.
    swapped = torch.tensor([e2, e1])
    expected = -math.log(math.exp(0) / (math.exp(0) + math.exp(0) + math.exp(1 / t)))
    assert nt_xent(z, swapped, t).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_is_the_formula_over_all_2n_anchors():
    torch.manual_seed(0)
    z_1, z_2, t = torch.randn(5, 8), torch.randn(5, 8), 0.2
    z = F.normalize(torch.cat([z_1, z_2]), dim=1)
    n = len(z_1)
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)  # the other view of the same image
        others = sum(math.exp(z[i] @ z[k] / t) for k in range(2 * n) if k != i)
        losses.append(-math.log(math.exp(z[i] @ z[j] / t) / others))
    assert nt_xent(z_1, z_2, t).item() == pytest.approx(sum(losses) / (2 * n), rel=1e-5)


# --- Barlow Twins ---------------------------------------------------------------------------------
HADAMARD = torch.tensor(  # columns: zero mean, unit (biased) variance, pairwise uncorrelated
    [[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]]
)


def test_barlow_twins_is_zero_for_correlated_decorrelated_embeddings():
    assert barlow_twins_loss(HADAMARD, HADAMARD, 5e-3).item() == pytest.approx(0.0, abs=1e-6)
    # standardised over the batch: scale and shift of a view change nothing
    shifted = 3.0 * HADAMARD + 5.0
    assert barlow_twins_loss(HADAMARD, shifted, 5e-3).item() == pytest.approx(0.0, abs=1e-5)


def test_barlow_twins_closed_forms():
    lam = 0.5
    # anti-correlated: C = -I, each diagonal term (1 - (-1))^2 = 4
    assert barlow_twins_loss(HADAMARD, -HADAMARD, lam).item() == pytest.approx(12.0, rel=1e-5)
    # dimensions 0 and 1 swapped in the second view: C_00 = C_11 = 0, C_01 = C_10 = 1
    swapped = HADAMARD[:, [1, 0, 2]]
    expected = 1 + 1 + 0 + lam * 2
    assert barlow_twins_loss(HADAMARD, swapped, lam).item() == pytest.approx(expected, rel=1e-5)


# --- MoCo: InfoNCE and the queue ------------------------------------------------------------------
def test_info_nce_hand_computed():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[2.0, 0.0]])  # cos 1
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # cos 0 and -1
    t = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    assert info_nce(q, k, queue, t).item() == pytest.approx(expected, rel=1e-6)


def _tiny_encoder() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())


def test_moco_queue_is_first_in_first_out():
    moco = MoCo(_tiny_encoder(), 16, 8, 2, queue_size=5)
    keys = F.normalize(torch.randn(6, 2), dim=1)
    moco.enqueue(keys[:3])  # slots 0, 1, 2
    moco.enqueue(keys[3:])  # slots 3, 4, then wraps to 0: the oldest key goes first
    expected = torch.stack([keys[5], keys[1], keys[2], keys[3], keys[4]])
    assert torch.allclose(moco.queue, expected)
    assert moco.queue_pointer.item() == 1
    assert "queue" in moco.state_dict() and "queue_pointer" in moco.state_dict()


def test_moco_step_enqueues_this_steps_keys_after_the_update():
    torch.manual_seed(0)
    moco = MoCo(_tiny_encoder(), 16, 8, 2, queue_size=20)
    optimizer = torch.optim.SGD(moco.online_parameters(), lr=0.1)
    before = moco.queue.clone()
    v1, v2 = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    train_step(moco, optimizer, v1, v2, lr=0.1, tau=0.99)
    assert moco.queue_pointer.item() == 12  # both views' keys: 2 x 6
    assert torch.equal(moco.queue[12:], before[12:])
    assert not torch.isclose(moco.queue[:12], before[:12]).all(dim=1).any()
    assert torch.allclose(moco.queue[:12].norm(dim=1), torch.ones(12))
    for p in [*moco.target_encoder.parameters(), *moco.target_projector.parameters()]:
        assert p.grad is None and not p.requires_grad
    moco.eval()
    moco(v1, v2)
    moco.update_target(1.0)
    assert moco.queue_pointer.item() == 12  # forward passes outside training enqueue nothing


# --- every method through the training loop -------------------------------------------------------
@pytest.mark.parametrize("method", ["byol", "simclr", "barlow", "moco"])
def test_every_method_trains_through_train_step(method):
    config = preset("fashion-mnist").replace(
        method=method,
        projector_hidden_dim=32,
        predictor_hidden_dim=32,
        projection_dim=16,
        barlow_projector_dim=64,
        moco_queue_size=32,
    )
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = build_optimizer(model, "lars", 0.1, 1e-6)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in model.online_parameters()}
    encoder_before = [p.detach().clone() for p in model.online_encoder.parameters()]
    views = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    output = train_step(model, optimizer, *views, lr=0.1, tau=0.99)
    assert torch.isfinite(output.loss) and output.online_projection.shape[0] == 8
    assert not output.online_projection.requires_grad
    after = model.online_encoder.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, after, strict=True))


def test_method_shapes():
    simclr = SimCLR(_tiny_encoder(), 16, 32, 8)
    assert not hasattr(simclr, "target_encoder") and not hasattr(simclr, "predictor")
    barlow = BarlowTwins(_tiny_encoder(), 16, width=64)
    linears = [m for m in barlow.online_projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 64), (64, 64), (64, 64)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in barlow.online_projector) == 2
    config = Config().replace(use_predictor=False, method="byol")
    assert isinstance(build_model(config).predictor, nn.Identity)


# --- the target variants --------------------------------------------------------------------------
def test_constant_tau_schedule():
    assert [target_tau(k, 10, 0.0, "constant") for k in (0, 5, 10)] == [0.0, 0.0, 0.0]
    assert target_tau(5, 10, 0.0) == pytest.approx(0.5)  # the cosine schedule would lift it


def test_tau_zero_copies_online_into_target_every_step():
    torch.manual_seed(0)
    model = BYOL(_tiny_encoder(), 16, 8, 4, 8)
    optimizer = torch.optim.SGD(model.online_parameters(), lr=0.5)
    online = [*model.online_encoder.parameters(), *model.online_projector.parameters()]
    target = [*model.target_encoder.parameters(), *model.target_projector.parameters()]
    for step in range(3):
        before = [p.detach().clone() for p in online]
        views = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
        train_step(model, optimizer, *views, 0.5, target_tau(step, 3, 0.0, "constant"))
        assert any(not torch.equal(a, b) for a, b in zip(before, online, strict=True))  # it moved
        assert all(torch.equal(t, o) for t, o in zip(target, online, strict=True))  # followed


@needs_fashion_mnist
def test_stop_gradient_without_predictor_collapses_byol_does_not(tmp_path):
    """24 steps on 512 real images: tau = 0 and no predictor drives the embeddings to a point."""
    base = preset("fashion-mnist").replace(
        backbone="resnet18-narrow",  # 1/8-width ResNet-18: the dynamics, not accuracy
        image_size=16,
        train_subset=512,
        batch_size=64,
        epochs=3,
        warmup_epochs=0.0,
        base_lr=4.0,  # a large step makes the collapse quick; BYOL stays healthy at the same lr
        projector_hidden_dim=128,
        predictor_hidden_dim=128,
        projection_dim=64,
        num_workers=0,
        log_every_steps=4,
        knn_every_epochs=0,
        knn_final=False,
        knn_references=False,
        # fp32: in bf16 the collapsing run's last update overflowed into NaN weights (step 8)
        precision="fp32",
        predictor_warmup_steps=0,  # BYOL trains its encoder from step 1, at the same lr
    )
    collapsing = dict(tau_base=0.0, tau_schedule="constant", use_predictor=False)
    pretrain(base.replace(**collapsing), tmp_path / "collapse", quiet=True)
    pretrain(base, tmp_path / "byol", quiet=True)
    collapse = [r["collapse"] for r in read_metrics(tmp_path / "collapse") if "loss" in r]
    healthy = [r["collapse"] for r in read_metrics(tmp_path / "byol") if "loss" in r]
    # Measured: 0.46 -> 0.06 against BYOL's 0.76-0.80. The margins leave room for the small
    # numeric differences between thread counts, which move a chaotic 24-step run.
    assert collapse[-1] < 0.15 and collapse[-1] < collapse[0] / 3, collapse  # falling to 0
    assert all(c > 0.5 for c in healthy) and min(healthy) > 4 * collapse[-1], healthy


# --- augmentation removals are config values ------------------------------------------------------
def _augmentation(name: str):
    return next(row for row in table("augmentations").rows if row.name == name)


def test_augmentation_removals_reach_both_view_specs():
    config = preset("imagenet-paper")
    removed = {
        "flip_prob": lambda s: s.flip_prob == 0,
        "jitter_prob": lambda s: s.jitter_prob == 0,
        "grayscale_prob": lambda s: s.grayscale_prob == 0,
        "blur_prob": lambda s: s.blur_prob == 0,
        "solarize_prob": lambda s: s.solarize_prob == 0,
    }
    for row in table("augmentations").rows:
        t, t2 = row.config(config).views
        for item in row.overrides:
            key = item.split("=")[0]
            if key in removed:  # a short name: both views (views.2.* is T' alone)
                assert removed[key](t) and removed[key](t2), (row.name, key)
    t, t2 = _augmentation("no-blur-t2").config(config).views
    assert t.blur_prob == 1.0 and t2.blur_prob == 0.0
    t, t2 = _augmentation("no-solarize-t2").config(config).views
    assert t2.solarize_prob == 0.0 and t2.blur_prob == 0.1


def test_crop_only_draws_no_other_operation():
    config = preset("imagenet-paper")
    spec, _ = _augmentation("crop-only").config(config).views
    transform = ViewTransform(spec, 32, (0.5,) * 3, (0.25,) * 3)
    generator = torch.Generator().manual_seed(0)
    draws = [transform.sample(64, 64, generator) for _ in range(300)]
    for name in ("flip", "jitter", "grayscale", "blur", "solarize"):
        assert not any(bool(d[name]["applied"]) for d in draws), name
    boxes = {tuple(d["crop"]["box"].int().flatten().tolist()) for d in draws}
    assert len(boxes) > 100  # still a random crop per draw


# --- command line -------------------------------------------------------------------------------
TINY = [
    "backbone=resnet18-narrow",  # 1/8-width ResNet-18: behaviour, not accuracy
    "image_size=16",
    "batch_size=64",
    "epochs=1",
    "projector_hidden_dim=32",
    "predictor_hidden_dim=32",
    "projection_dim=16",
    "num_workers=0",
    "threads=1",
    # fp32 whatever the CPU: at 16 px a stride-2 3x3 convolution sees a 1x1 map, and oneDNN's bf16
    # weight gradient there has NaN in the taps that touch only padding (BENCHMARKS.md).
    "precision=fp32",
]
# `byol pretrain` refuses another method's setting (ablations leave it to that method's runs).
NO_PREDICTOR = [item for item in TINY if not item.startswith("predictor")]


def test_pretrain_method_is_saved_and_checked_on_resume(small_folder, tmp_path, capsys):
    run = tmp_path / "simclr"
    args = ["pretrain", "--quiet", "--method", "simclr", "--run-dir", str(run)]
    args += [
        arg
        for item in [*NO_PREDICTOR, f"dataset={small_folder}", "knn_references=false"]
        for arg in ("--set", item)
    ]
    assert main(args) == 0
    assert "SimCLR encoder" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["method"]["name"] == "simclr"
    assert torch.load(run / "checkpoint.pt", weights_only=True)["method"] == "simclr"
    assert main(["pretrain", "--quiet", "--resume", str(run), "--method", "byol"]) == 2
    error = capsys.readouterr().err
    assert "written by a simclr run, not byol" in error and "Traceback" not in error


def test_ablate_writes_table_and_plot_and_reuses_finished_runs(
    small_folder, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "ablations"
    args = ["ablate", "predictor", "--quiet", "--out", str(out)]
    settings = [*TINY, f"dataset={small_folder}", "linear_epochs=2", "linear_lrs=0.1"]
    args += [arg for item in settings for arg in ("--set", item)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    folder = out / "predictor"
    table = (folder / "table.md").read_text()
    assert table in printed
    for label in ("predictor + moving-average target (BYOL)", "no predictor", "random-init"):
        assert label in table
    assert "raw pixels (reference)" in table and "## Verdicts" in table
    assert "Outside the paper's settings" in table and "image_size=16" in table
    assert "without the predictor BYOL collapses" in table  # one line per claim
    assert "| collapse" in table and "72.5" in table  # our columns next to the paper's
    assert (folder / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((folder / "results.json").read_text())
    rows = record["rows"]
    assert len(rows) == 3 and len(record["references"]["random-init"]) == 1
    for row in rows:
        assert 0 <= row["knn_top1"] <= 100 and 0 <= row["linear_top1"] <= 100
        assert row["status"] == ("collapsed" if row["collapse"] < 0.1 else "ok")
        assert (Path(row["run_dir"]) / "summary.json").is_file()
        assert row["collapse_curve"] and row["collapse_curve"][-1] == row["collapse"]
        # the budget: the main job's recipe with its schedules sized for the budget's 4 epochs,
        # less the --set changes above
        saved = json.loads((Path(row["run_dir"]) / "config.json").read_text())
        assert saved["views"][0]["crop_scale"] == [1.0, 1.0]
        assert saved["method"]["predictor_lr_scale"] == 30.0
        assert saved["schedule"]["schedule_epochs"] == 4

    # A second call trains and evaluates nothing: every run and its scores are reused.
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained or evaluated again")

    monkeypatch.setattr("byol.training.side_by_side.pretrain", refuse)
    monkeypatch.setattr("byol.experiments.ablation_runs.Evaluation", refuse)
    (folder / "table.md").unlink()
    assert main(args) == 0
    assert (folder / "table.md").read_text() == table

    # `byol ablate all` gathers the tables (here the one finished above, every run reused).
    from byol.experiments import reproduce

    monkeypatch.setattr(reproduce, "ABLATIONS", ("predictor",))
    assert main(["ablate", "all", "--quiet", "--out", str(out), *args[5:]]) == 0
    report = (out / "report.md").read_text()
    assert "byol ablate all" in report and "Machine:" in report and "Date:" in report
    assert (
        "## `byol ablate predictor`" in report and "without the predictor BYOL collapses" in report
    )
    assert "(predictor/plot.png)" in report
    # ... and as one HTML page with the plot inside; `byol report` writes the same for a table.
    page = (out / "ablations.html").read_text()
    assert "<table>" in page and "without the predictor BYOL collapses" in page
    assert 'src="data:image/png;base64,' in page and "plot.png" not in page.split("<body>")[1]
    assert main(["report", str(folder)]) == 0
    single = (folder / "ablations.html").read_text()
    assert "<table>" in single and 'src="data:image/png;base64,' in single

    # An interrupted ablation continues: only the missing run is trained (and scored) again.
    from byol.experiments import ablate

    trained = []

    def counting(config, run_dir, **kwargs):
        trained.append(run_dir)
        return pretrain(config, run_dir, **kwargs)

    monkeypatch.setattr("byol.training.side_by_side.pretrain", counting)
    monkeypatch.setattr("byol.experiments.ablation_runs.Evaluation", Evaluation)
    shutil.rmtree(folder / "byol-no-predictor")
    # A truncated ablation_eval.json (a crash mid-write) is set aside and its scores made again.
    scores = Path(rows[0]["run_dir"]) / "ablation_eval.json"
    scores.write_text(scores.read_text()[:30])
    ablate.run_ablation("predictor", "fashion-mnist", settings, out, quiet=True)
    assert trained == [folder / "byol-no-predictor"]
    assert scores.with_name("ablation_eval.json.unreadable").is_file()
    assert json.loads(scores.read_text())
    assert (folder / "table.md").read_text() == table


def test_results_row_of_a_baseline_is_named_after_its_method(tmp_path):
    from byol.evaluation.results import update_results
    from byol.run_folder import RESULTS_MD

    data = "fashion-mnist"
    update_results(tmp_path, data, data, "byol", {"knn200_top1": 70.0}, pretrained_with="moco")
    update_results(tmp_path, data, data, "random-init", {"knn200_top1": 71.0})
    text = (tmp_path / RESULTS_MD).read_text()
    assert "| MoCo v2 | 70.00 |" in text and "| BYOL |" not in text


def test_ablation_reuses_a_run_whatever_other_methods_fields_say(tmp_path):
    from byol.training.side_by_side import same_config

    byol_run = preset("fashion-mnist")
    save_config(tmp_path, byol_run)
    # How a run executes is not what it computes; a method's own settings live in its section.
    assert same_config(tmp_path, byol_run.replace(threads=1, num_workers=0))
    assert not same_config(tmp_path, byol_run.replace(tau_base=0.9))
    assert not same_config(tmp_path, byol_run.replace(method="moco"))


def test_a_run_folder_with_an_unreadable_config_does_not_stop_the_search_for_shared_runs(
    tmp_path,
):
    from byol.training.side_by_side import shared_run

    config = preset("fashion-mnist")
    unreadable, good = tmp_path / "a" / "broken", tmp_path / "b" / "run"
    for folder in (unreadable, good):
        save_config(folder, config)
        (folder / "summary.json").write_text(json.dumps({"stopped_early": False}))
    saved = json.loads((unreadable / "config.json").read_text())
    (unreadable / "config.json").write_text(json.dumps({**saved, "a_newer_field": 1}))
    assert shared_run(tmp_path, config) == good
    (good / "summary.json").unlink()
    assert shared_run(tmp_path, config) is None


def test_moco_resume_repeats_the_key_shuffle_exactly(small_folder, tmp_path):
    # MoCo's batch-norm shuffle draws a permutation every step; resuming from step 4 of 8 must
    # draw the same ones, so the encoder ends bit-identical to the uninterrupted run.
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    settings = [
        *NO_PREDICTOR,
        "epochs=2",
        "checkpoint_every_steps=2",
        f"dataset={small_folder}",
        "knn_references=false",
        "knn_every_epochs=0",
    ]
    args = ["pretrain", "--quiet", "--method", "moco", "--run-dir", str(whole)]
    assert main(args + [arg for item in settings for arg in ("--set", item)]) == 0
    shutil.copytree(whole, resumed)
    # Back to the checkpoint before the last one (step 6 of 8): the run redoes steps 7 and 8.
    shutil.copy(resumed / "checkpoint-previous.pt", resumed / "checkpoint.pt")
    (resumed / "encoder.safetensors").unlink()
    assert torch.load(resumed / "checkpoint.pt", weights_only=True)["step"] == 6
    assert main(["pretrain", "--quiet", "--resume", str(resumed)]) == 0
    a, b = load_file(whole / "encoder.safetensors"), load_file(resumed / "encoder.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ablate_jobs_trains_runs_side_by_side_with_the_threads_split(small_folder, tmp_path):
    from byol.training.side_by_side import pretrain_side_by_side, threads_per_job

    base = apply_overrides(preset("fashion-mnist"), [*TINY, f"dataset={small_folder}"])
    base = base.replace(threads=2, knn_final=False, knn_references=False)
    assert threads_per_job(base, 2) == 1 and threads_per_job(base, 4) == 1
    runs = [(base.replace(seed=s), tmp_path / "runs" / f"seed{s}") for s in (0, 1)]
    # The same experiment again (threads never make another one): trained once, in seed0.
    again = (base.replace(seed=0, threads=1), tmp_path / "runs" / "again")
    said = []
    pretrain_side_by_side([*runs, again], tmp_path, 2, said.append)
    assert said[0] == "training 2 of 3 runs (2 at a time)" and len(said) == 3
    assert not again[1].exists()
    for config, run_dir in runs:
        saved = json.loads((run_dir / "config.json").read_text())
        assert saved["runtime"]["threads"] == 1 and saved["seed"] == config.seed
        assert (run_dir / "summary.json").is_file()
    # Finished runs are kept: a second call trains nothing.
    said.clear()
    pretrain_side_by_side([*runs, again], tmp_path, 2, said.append)
    assert said == ["training 0 of 3 runs (2 at a time)"]
    first, second = (load_encoder(d / "encoder.safetensors")[0] for _, d in runs)
    pairs = zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)  # two seeds: two runs


def _ablate(table: str, out: Path, settings: list[str]) -> int:
    return main(
        [
            "ablate",
            table,
            "--quiet",
            "--out",
            str(out),
            *[arg for item in settings for arg in ("--set", item)],
        ]
    )


def test_ablate_labels_fine_tunes_byol_against_training_from_scratch(
    small_folder, tmp_path, monkeypatch
):
    out = tmp_path / "ablations"
    settings = [
        *TINY,
        f"dataset={small_folder}",
        "seeds=2",
        "methods=byol,random-init",
        "finetune_epochs=1,1",
        "knn_references=false",
        "train_subset=128",
    ]
    assert _ablate("labels", out, settings) == 0
    folder = out / "labels"
    table = (folder / "table.md").read_text()
    assert "| fine-tuned top-1 |" in table and "**Fine-tuned:**" in table
    assert "supervised training from scratch" in table and "Table 2" in table
    assert "with 1% of the labels, fine-tuning BYOL's encoder beats training from scratch" in table
    rows = json.loads((folder / "results.json").read_text())["rows"]
    assert len(rows) == 8  # 2 fractions x 2 methods x 2 seeds
    assert all(0 <= r["finetune_top1"] <= 100 and "knn_top1" not in r for r in rows)
    # One pretraining run per seed: both fractions and the scratch rows score it.
    assert len({r["run_dir"] for r in rows}) == 2
    run = Path(rows[0]["run_dir"])
    # Seed N fine-tunes on label subset N of the 128 images its run was pretrained on: 1% is the
    # 10-class minimum, 10% is 13, indices into those 128.
    stem = f"{small_folder.name}-pretraining128"
    small, large = (
        json.loads((run / "subsets" / f"{stem}-{tag}-seed0.json").read_text())
        for tag in ("1pct", "10pct")
    )
    assert (len(small["indices"]), len(large["indices"])) == (10, 13)
    assert not (run / "results.json").exists()  # kept apart from `byol eval finetune`'s numbers
    assert large["train_size"] == 128 and max(large["indices"]) < 128
    other_seed = Path(next(r["run_dir"] for r in rows if r["seed"] == 1))
    drawn = json.loads((other_seed / "subsets" / f"{stem}-10pct-seed1.json").read_text())
    assert drawn["indices"] != large["indices"]
    # Scores are kept: a second call trains and fine-tunes nothing.
    monkeypatch.setattr("byol.training.side_by_side.pretrain", _refuse)
    monkeypatch.setattr("byol.experiments.ablation_runs.Evaluation", _refuse)
    assert _ablate("labels", out, settings) == 0
    assert (folder / "table.md").read_text() == table


def _refuse(*args, **kwargs):
    raise AssertionError("a finished run was trained or evaluated again")


def test_ablate_transfer_scores_each_encoder_on_another_dataset(small_folder, tmp_path):
    # The other dataset: the same garments turned upside down and inverted, 5 classes.
    other = tmp_path / "other"
    for image in small_folder.rglob("*.png"):
        split, label = image.parent.parent.name, int(image.parent.name[1:])
        target = other / split / f"k{label % 5}" / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = 255 - torch.from_numpy(__import__("numpy").array(Image.open(image))).flip(0)
        Image.fromarray(pixels.numpy(), mode="L").save(target)
    out = tmp_path / "ablations"
    settings = [
        *TINY,
        f"dataset={small_folder}",
        "methods=byol,random-init",
        f"transfer_dataset={other}",
        "linear_epochs=2",
        "knn_references=false",
    ]
    assert _ablate("transfer", out, settings) == 0
    folder = out / "transfer"
    table = (folder / "table.md").read_text()
    assert f"**Transfer:** every row is scored on {other}" in table
    assert "BYOL's frozen features transfer to another dataset better than random ones" in table
    rows = json.loads((folder / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["byol", "random-init"]
    assert rows[0]["run_dir"] == rows[1]["run_dir"]  # the same run, trained once
    for row in rows:
        assert row["dataset"] == str(other) and 0 <= row["knn_top1"] <= 100
    # Random init's score is its own, not BYOL's: computed from the run's initial weights; raw
    # pixels of the other dataset are the reference the claims' gate compares BYOL's row with.
    stored = json.loads((Path(rows[0]["run_dir"]) / "ablation_eval.json").read_text())
    assert len(stored) == 3 and any('"pixels"' in key and str(other) in key for key in stored)
    assert "raw pixels (reference)" in table


def test_ablate_refuses_unknown_rows_before_anything_starts(tmp_path, capsys):
    out = tmp_path / "ablations"
    assert _ablate("batch-size", out, ["rows=batch-256,batch-8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch-8" in err and "batch-32" in err
    assert not out.exists()
    assert _ablate("transfer", out, ["methods=byol,moco"]) == 2
    assert "moco" in capsys.readouterr().err and not out.exists()


def test_reproduce_runs_each_table_at_its_preset_and_gathers_the_verdicts(
    small_folder, tmp_path, monkeypatch, capsys
):
    from byol.experiments import reproduce

    evidence = [{"table": "predictor", "preset": "fashion-mnist", "set": ["rows=baseline"]}]
    monkeypatch.setattr(reproduce, "EVIDENCE", evidence)
    out = tmp_path / "reproduce"
    settings = [*TINY, f"dataset={small_folder}", "seeds=1", "linear_epochs=2"]
    args = ["reproduce", "--quiet", "--out", str(out)]
    assert main(args + [a for item in settings for a in ("--set", item)]) == 0
    report = (out / "report.md").read_text()
    assert report in capsys.readouterr().out
    # The table sits under its preset; the report names the command that reruns it alone.
    assert (out / "fashion-mnist" / "predictor" / "table.md").is_file()
    assert (
        "`byol ablate predictor --preset fashion-mnist --set seeds=3 --set rows=baseline" in report
    )
    assert "(fashion-mnist/predictor/plot.png)" in report
    # One verdict table over every table: a claim on a row that was not run is "not measured".
    verdicts = report.split("## Verdicts\n", 1)[1].split("\n## ", 1)[0]
    assert (
        "| predictor | without the predictor BYOL collapses | 0.2% (Table 5b) | not measured |"
        in (verdicts)
    )
    assert 'src="data:image/png;base64,' in (out / "ablations.html").read_text()
