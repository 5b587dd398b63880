"""VICReg (byol/methods/vicreg.py): the loss against closed forms and Algorithm 1 of
arXiv:2105.04906 written out, its gradients, two processes training as one, and `byol pretrain
--method vicreg` end to end through `byol eval knn` and `byol.load_encoder`."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import byol
from byol import distributed
from byol.cli import main
from byol.config import METHODS
from byol.errors import ConfigError
from byol.methods import build_method, settings_class
from byol.methods.vicreg import (
    VICReg,
    covariance_term,
    off_diagonal,
    variance_term,
    vicreg_loss,
    vicreg_terms,
)
from byol.presets import configure, preset
from byol.sync_batchnorm import convert_sync_batchnorm
from byol.training.optim import build_optimizer
from byol.training.step import train_step
from byol.training.train_state import build_model

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
EPS = 1e-4
# Columns: zero mean, unbiased variance 4/3 (std above gamma = 1), pairwise uncorrelated.
HADAMARD = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])
# Three points in 2-d, small enough to do by hand: mean (1, 1), centred rows (-1, -1), (0, 1),
# (1, 0); unbiased covariance 1/2 [[2, 1], [1, 2]] = [[1, .5], [.5, 1]].
TRIANGLE = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]])


# --- the loss against closed forms ----------------------------------------------------------------
def test_a_spread_decorrelated_batch_seen_twice_costs_nothing():
    s, v, c = vicreg_terms(HADAMARD, HADAMARD)
    assert (s.item(), v.item()) == (0.0, 0.0)  # identical views; every std sqrt(4/3) > 1
    assert c.item() == pytest.approx(0.0, abs=1e-7)
    assert vicreg_loss(HADAMARD, HADAMARD).item() == pytest.approx(0.0, abs=1e-6)


def test_invariance_is_the_mean_squared_difference_over_batch_and_dims():
    s, v, c = vicreg_terms(HADAMARD, HADAMARD + 0.5)  # a shift: spread and covariance unchanged
    assert s.item() == pytest.approx(0.25)
    assert v.item() == 0.0 and c.item() == pytest.approx(0.0, abs=1e-7)
    assert vicreg_loss(HADAMARD, HADAMARD + 0.5).item() == pytest.approx(25 * 0.25, rel=1e-6)
    # -H: each entry differs by 2 (squared 4); lambda weighs only this term
    assert vicreg_loss(HADAMARD, -HADAMARD, 3.0, 0.0, 0.0).item() == pytest.approx(12.0)


def test_a_collapsed_batch_pays_the_variance_hinge_in_full_on_both_branches():
    constant = torch.full((5, 4), 0.7)  # every image at one point: every variance 0
    s, v, c = vicreg_terms(constant, constant)
    # each dim: max(0, gamma - sqrt(0 + eps)) = 1 - 0.01; mean over dims, then both branches
    assert v.item() == pytest.approx(2 * (1 - math.sqrt(EPS)), rel=1e-6)
    assert (s.item(), c.item()) == (0.0, 0.0)
    assert vicreg_loss(constant, constant).item() == pytest.approx(25 * 2 * 0.99, rel=1e-6)
    half = vicreg_loss(constant, constant, mu=12.5, gamma=2.0)  # the official code's mu, gamma 2
    assert half.item() == pytest.approx(12.5 * 2 * (2 - 0.01), rel=1e-6)


def test_the_2x2_covariance_term_by_hand():
    # off-diagonal entries 0.5 and 0.5: (0.25 + 0.25) / d with d = 2
    assert covariance_term(TRIANGLE).item() == pytest.approx(0.25)
    # each dim's unbiased variance is 1: std sqrt(1 + eps) just above gamma = 1, under gamma = 2
    assert variance_term(TRIANGLE).item() == 0.0
    assert variance_term(TRIANGLE, gamma=2.0).item() == pytest.approx(2 - math.sqrt(1 + EPS))
    # The second view shifted by 1: s = 1, v = 0, c + c' = 0.5
    loss = vicreg_loss(TRIANGLE, TRIANGLE + 1.0, lambda_=25.0, mu=25.0, nu=1.0)
    assert loss.item() == pytest.approx(25 * 1 + 1 * 0.5, rel=1e-6)
    # nu weighs the covariance of both branches: a swapped second view has the same covariance
    loss = vicreg_loss(TRIANGLE, TRIANGLE[:, [1, 0]], lambda_=0.0, mu=0.0, nu=3.0)
    assert loss.item() == pytest.approx(3 * 0.5, rel=1e-6)


def test_off_diagonal_is_every_entry_but_the_diagonal():
    matrix = torch.arange(25.0).view(5, 5)
    expected = matrix[~torch.eye(5, dtype=torch.bool)]
    assert torch.equal(off_diagonal(matrix), expected)


def _algorithm_1(z_a, z_b, lam, mu, nu):
    """The paper's Algorithm 1, spelled out with loops over dimensions."""
    n, d = z_a.shape
    sim = sum(((z_a[i] - z_b[i]) ** 2).sum() for i in range(n)) / (n * d)
    std = 0.0
    cov = 0.0
    for z in (z_a, z_b):
        std += sum(max(0.0, 1 - math.sqrt(z[:, j].var().item() + EPS)) for j in range(d)) / d
        centred = z - z.mean(0)
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov += ((centred[:, i] * centred[:, j]).sum().item() / (n - 1)) ** 2 / d
    return lam * sim.item() + mu * std + nu * cov


def test_vicreg_loss_is_algorithm_1():
    torch.manual_seed(0)
    z_a = torch.randn(6, 5, dtype=torch.float64) * 0.6  # stds both sides of gamma = 1
    z_b = z_a + 0.3 * torch.randn(6, 5, dtype=torch.float64)
    expected = _algorithm_1(z_a, z_b, 25.0, 25.0, 1.0)
    assert vicreg_loss(z_a, z_b).item() == pytest.approx(expected, rel=1e-10)
    assert vicreg_loss(z_a, z_b).dtype == torch.float64  # float64 stays float64


def test_the_loss_is_float32_under_bf16_autocast():
    torch.manual_seed(0)
    z_1, z_2 = torch.randn(16, 32), torch.randn(16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = vicreg_loss(z_1.bfloat16(), z_2.bfloat16())
    exact = vicreg_loss(z_1.bfloat16().float(), z_2.bfloat16().float())
    assert autocast.dtype == torch.float32
    assert autocast.item() == pytest.approx(exact.item(), rel=1e-6)


# --- gradients and training -----------------------------------------------------------------------
def _tiny_encoder() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())


def test_every_parameter_gets_a_finite_gradient_even_at_collapse():
    torch.manual_seed(0)
    model = VICReg(_tiny_encoder(), 16, width=32)
    expander = [m for m in model.online_projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in expander] == [(16, 32), (32, 32), (32, 32)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.online_projector) == 2
    output = model(torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4))
    assert output.online_projection.shape == (8, 32) and not output.online_projection.requires_grad
    output.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # Zero variance: without eps under the root, sqrt's gradient there would be infinite (NaN).
    z = torch.full((4, 3), 2.0, requires_grad=True)
    vicreg_loss(z, z.detach() + 1.0).backward()
    assert torch.isfinite(z.grad).all()


def test_vicreg_is_a_registered_method_with_the_papers_settings():
    assert METHODS["vicreg"] == "VICReg"
    defaults = settings_class("vicreg")()
    paper = (defaults.expander_dim, defaults.lambda_, defaults.mu, defaults.nu, defaults.gamma)
    assert paper == (8192, 25.0, 25.0, 1.0, 1.0) and defaults.eps == EPS
    assert preset("imagenet-paper", "vicreg").method.expander_dim == 8192
    for name in ("fashion-mnist", "cifar10-cpu", "vit-tiny-fashion-mnist"):  # the CPU presets
        assert preset(name, "vicreg").method.expander_dim == 1024, name
    config = configure("fashion-mnist", ["method=vicreg", "mu=12.5", "method.nu=2"])
    assert (config.method.mu, config.method.nu) == (12.5, 2.0)
    with pytest.raises(ConfigError, match="expander_dim"):
        configure("fashion-mnist", ["expander_dim=64"])  # a BYOL run has no expander
    with pytest.raises(ConfigError, match="expander_dim"):
        configure("fashion-mnist", ["method=vicreg", "expander_dim=0"]).validate()
    model = build_method(config.method, _tiny_encoder(), 16)
    assert isinstance(model, VICReg) and model.weights == (25.0, 12.5, 2.0)


def test_it_trains_through_the_loop_step_with_lars():
    config = preset("fashion-mnist", "vicreg").replace(expander_dim=64)
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = build_optimizer(model, "lars", 0.1, 1e-6)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in model.online_parameters()}
    assert model.momentum_pairs() == []  # no target
    before = [p.detach().clone() for p in model.online_encoder.parameters()]
    views = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    output = train_step(model, optimizer, *views, lr=0.1, tau=0.99)
    assert torch.isfinite(output.loss) and output.online_projection.shape == (8, 64)
    after = model.online_encoder.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_loss_falls_when_trained_on_noisy_views():
    torch.manual_seed(0)
    images = torch.randn(64, 3, 4, 4)
    model = VICReg(_tiny_encoder(), 16, width=32)
    optimizer = torch.optim.SGD(model.online_parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(30):
        views = [images + 0.1 * torch.randn_like(images) for _ in range(2)]
        losses.append(train_step(model, optimizer, *views, lr=0.02, tau=1.0).loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# --- two processes train as one -------------------------------------------------------------------
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _step(model: nn.Module, images: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    """One float64 step's global loss and the gradients DDP leaves on the model."""
    trained = distributed.wrap(model, torch.device("cpu"))
    output = trained(images, images.flip(-1) + 0.1)
    output.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return output.loss.item(), grads


def _fresh_model() -> nn.Module:
    torch.manual_seed(3)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    return VICReg(encoder, 6, width=8).double()


def _images() -> torch.Tensor:
    return torch.randn(16, 3, 2, 2, generator=torch.Generator().manual_seed(4)).double()


def _rank(rank: int, port: int, out: Path) -> None:
    os.environ.update(  # as torchrun sets up a process
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    with distributed.process_group(torch.device("cpu")):
        model = convert_sync_batchnorm(_fresh_model(), torch.device("cpu"))  # global BN
        rows = slice(rank * 8, rank * 8 + 8)  # this rank's half of the global batch
        loss, grads = _step(model, _images()[rows])
    torch.save(dict(loss=loss, grads=grads), out / f"rank-{rank}.pt")


def test_two_processes_with_half_the_batch_each_compute_the_one_process_step(tmp_path):
    # The statistics of v and c span the global batch (gathered with gradients): the loss and
    # the averaged gradients match one process holding all 16 images, in float64.
    mp.spawn(_rank, args=(_free_port(), tmp_path), nprocs=WORLD, join=True)
    loss, grads = _step(_fresh_model(), _images())
    for rank in range(WORLD):
        ranked = torch.load(tmp_path / f"rank-{rank}.pt", weights_only=True)
        assert ranked["loss"] == pytest.approx(loss, rel=1e-10)
        assert ranked["grads"].keys() == grads.keys()
        for name, grad in grads.items():
            assert torch.allclose(ranked["grads"][name], grad, rtol=0, atol=1e-10), name
    # Statistics per process would be another loss: the mean of the two halves' own losses.
    halves = [_step(_fresh_model(), _images()[rows])[0] for rows in (slice(0, 8), slice(8, 16))]
    assert abs(sum(halves) / 2 - loss) > 1e-3


# --- end to end: byol pretrain --method vicreg, byol eval knn, byol.load_encoder ------------------
TINY = [
    "backbone=resnet18-narrow",  # 1/8-width ResNet-18: behaviour, not accuracy
    "image_size=16",
    "batch_size=64",
    "epochs=2",
    "expander_dim=64",
    "num_workers=0",
    "threads=1",
    "precision=fp32",  # oneDNN's bf16 weight gradient at 16 px has NaN taps (BENCHMARKS.md)
    "knn_references=false",
    "log_every_steps=1",
]


@pytest.fixture(scope="module")
def vicreg_run(small_folder, tmp_path_factory) -> Path:
    """`byol pretrain --method vicreg` on the small folder: 2 epochs of 4 steps."""
    run = tmp_path_factory.mktemp("runs") / "vicreg"
    settings = [f"dataset={small_folder}", *TINY]
    args = ["pretrain", "--quiet", "--preset", "fashion-mnist", "--method", "vicreg"]
    assert main([*args, "--run-dir", str(run), *[a for s in settings for a in ("--set", s)]]) == 0
    return run


def test_pretrain_vicreg_end_to_end_and_load_its_encoder(vicreg_run, small_folder):
    saved = json.loads((vicreg_run / "config.json").read_text())
    assert saved["method"]["name"] == "vicreg" and saved["method"]["expander_dim"] == 64
    checkpoint = torch.load(vicreg_run / "checkpoint.pt", weights_only=True)
    assert checkpoint["method"] == "vicreg" and checkpoint["step"] == 2 * 256 // 64
    records = [json.loads(line) for line in (vicreg_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    summary = json.loads((vicreg_run / "summary.json").read_text())
    assert 0 <= summary["knn_top1"] <= 100  # the run's own final kNN of its encoder
    # The exported file is the trained online encoder, and loads without the method's code.
    encoder, metadata = byol.load_encoder(vicreg_run / "encoder.safetensors")
    assert metadata["architecture"] == "resnet18-narrow"
    model_state = checkpoint["model"]
    trained = {k.removeprefix("online_encoder."): v for k, v in model_state.items()}
    assert all(torch.equal(v, trained[k]) for k, v in encoder.state_dict().items())
    features = encoder.eval()(torch.rand(2, 3, 16, 16))
    assert features.shape[0] == 2 and torch.isfinite(features).all()


# On the restructure branch probes.crop_flip_transform calls ViewSpec.paper, which the views
# rewrite has not landed yet; every method's `byol eval` stops there, VICReg's included.
def test_byol_eval_knn_scores_a_vicreg_run(vicreg_run):
    assert main(["eval", "knn", str(vicreg_run)]) == 0
    assert "| VICReg |" in (vicreg_run / "results.md").read_text()  # the row is its method's


def test_ablate_plans_with_vicreg_in_the_registry(tmp_path):
    from byol.experiments.ablate import _base_config, _plan
    from byol.experiments.tables import table

    overrides = ["expander_dim=64"]  # VICReg's own setting: the other methods' runs ignore it
    bases = {m: _base_config("batch-size", "fashion-mnist", overrides, m) for m in METHODS}
    plan = _plan(table("batch-size").rows, bases, 1, tmp_path)
    assert {variant.method for variant, _, _ in plan} == {"byol", "simclr", "barlow"}
    assert all(config.method.name != "vicreg" for _, config, _ in plan)  # not a paper table


def test_a_saved_vicreg_config_reads_back(tmp_path):
    config = preset("fashion-mnist", "vicreg").replace(mu=12.5)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    loaded = type(config).load(tmp_path / "config.json")
    assert loaded == config and isinstance(loaded.method, settings_class("vicreg"))
