"""The formulas of arXiv:2006.07733 Sections 3.1 and 3.3, each against a closed form or a
hand-computed case."""

import math

import pytest
import torch
from torch import nn

from byol import BYOL, LARS, byol_loss, collapse_metric, learning_rate, parameter_groups, target_tau
from byol.backbones import BACKBONES, build_backbone, torchvision_model
from byol.methods.heads import mlp
from byol.training.schedules import scaled_learning_rate


# --- loss -------------------------------------------------------------------------------------
def test_loss_is_two_minus_two_cosine():
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    z = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    # cos = 24/25 for the first pair, 0 for the second; loss averages over the batch
    expected = ((2 - 2 * 24 / 25) + (2 - 0)) / 2
    assert byol_loss(p, z).item() == pytest.approx(expected)


def test_loss_equals_squared_distance_of_normalised_vectors():
    torch.manual_seed(0)
    p, z = torch.randn(16, 8), torch.randn(16, 8)
    distance = (p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)).pow(2).sum(1)
    assert byol_loss(p, z).item() == pytest.approx(distance.mean().item(), rel=1e-6)


def test_loss_extremes_and_scale_invariance():
    x = torch.randn(4, 8)
    assert byol_loss(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(x, -x).item() == pytest.approx(4.0)


def test_symmetric_loss_is_the_sum_of_both_view_orders():
    torch.manual_seed(0)
    model = BYOL(nn.Sequential(nn.Flatten(), nn.Linear(12, 6)), 6, 16, 4, 16)
    v1, v2 = torch.randn(8, 3, 2, 2), torch.randn(8, 3, 2, 2)
    total = model(v1, v2).loss
    with torch.no_grad():
        z1 = model.online_projector(model.online_encoder(v1))
        z2 = model.online_projector(model.online_encoder(v2))
        t1 = model.target_projector(model.target_encoder(v1))
        t2 = model.target_projector(model.target_encoder(v2))
        one_way = byol_loss(model.predictor(z1), t2)
        other_way = byol_loss(model.predictor(z2), t1)
    assert total.item() == pytest.approx((one_way + other_way).item(), rel=1e-5)
    assert total.item() > max(one_way.item(), other_way.item())  # summed, not averaged
    assert 0 <= total.item() <= 8


# --- stop-gradient and EMA --------------------------------------------------------------------
def _tiny_byol() -> BYOL:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    return BYOL(encoder, 4 * 2 * 2, 8, 4, 8)


def test_no_gradient_reaches_the_target():
    model = _tiny_byol()
    model(torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)).loss.backward()
    for p in [*model.target_encoder.parameters(), *model.target_projector.parameters()]:
        assert p.grad is None and not p.requires_grad
    online = model.online_parameters()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in online)


def test_target_starts_as_a_copy_of_online():
    model = _tiny_byol()
    online = [*model.online_encoder.parameters(), *model.online_projector.parameters()]
    target = [*model.target_encoder.parameters(), *model.target_projector.parameters()]
    assert len(online) == len(target)
    for a, b in zip(online, target, strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


def test_ema_update_of_a_known_pair():
    model = _tiny_byol()
    with torch.no_grad():
        for p in [*model.online_encoder.parameters(), *model.online_projector.parameters()]:
            p.fill_(1.0)
        for p in [*model.target_encoder.parameters(), *model.target_projector.parameters()]:
            p.fill_(3.0)
    model.update_target(0.75)  # xi <- 0.75 * 3 + 0.25 * 1 = 2.5
    for p in [*model.target_encoder.parameters(), *model.target_projector.parameters()]:
        assert torch.allclose(p, torch.full_like(p, 2.5))
    model.update_target(1.0)  # tau = 1: the target does not move
    for p in model.target_encoder.parameters():
        assert torch.allclose(p, torch.full_like(p, 2.5))
    model.update_target(0.0)  # tau = 0: the target becomes the online network
    for p in model.target_encoder.parameters():
        assert torch.allclose(p, torch.ones_like(p))


def test_predictor_is_online_only():
    model = _tiny_byol()
    predictor_ids = {id(p) for p in model.predictor.parameters()}
    assert predictor_ids <= {id(p) for p in model.online_parameters()}
    target_ids = {
        id(p) for m in (model.target_encoder, model.target_projector) for p in m.parameters()
    }
    assert not predictor_ids & target_ids


# --- schedules --------------------------------------------------------------------------------
def test_tau_schedule_endpoints_and_midpoint():
    assert target_tau(0, 1000, 0.996) == pytest.approx(0.996)
    assert target_tau(1000, 1000, 0.996) == pytest.approx(1.0)
    assert target_tau(500, 1000, 0.996) == pytest.approx(1 - 0.004 / 2)
    k, K = 123, 1000
    closed = 1 - (1 - 0.99) * (math.cos(math.pi * k / K) + 1) / 2
    assert target_tau(k, K, 0.99) == pytest.approx(closed)
    taus = [target_tau(k, 100, 0.9) for k in range(101)]
    assert all(a <= b for a, b in zip(taus, taus[1:], strict=False))


def test_learning_rate_warmup_and_cosine_decay():
    peak, warmup, total = 0.4, 10, 110
    assert learning_rate(0, total, warmup, peak) == 0.0
    assert learning_rate(5, total, warmup, peak) == pytest.approx(0.2)  # linear warm-up
    assert learning_rate(10, total, warmup, peak) == pytest.approx(peak)
    assert learning_rate(60, total, warmup, peak) == pytest.approx(peak / 2)  # cosine midpoint
    assert learning_rate(110, total, warmup, peak) == pytest.approx(0.0, abs=1e-12)
    k = 35
    closed = peak * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (total - warmup)))
    assert learning_rate(k, total, warmup, peak) == pytest.approx(closed)


def test_linear_scaling_rule():
    assert scaled_learning_rate(0.2, 4096) == pytest.approx(3.2)
    assert scaled_learning_rate(0.2, 256) == pytest.approx(0.2)


# --- LARS -------------------------------------------------------------------------------------
def test_parameter_groups_exclude_biases_and_batch_norm():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    adapted, excluded = parameter_groups(net, weight_decay=1e-3)
    assert {id(p) for p in adapted["params"]} == {id(net[0].weight), id(net[3].weight)}
    expected_excluded = {id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[3].bias)}
    assert {id(p) for p in excluded["params"]} == expected_excluded
    assert adapted["weight_decay"] == 1e-3 and not adapted["lars_exclude"]
    assert excluded["weight_decay"] == 0.0 and excluded["lars_exclude"]


def test_lars_trust_ratio_step_matches_closed_form():
    weight = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    weight.grad = torch.tensor([0.6, 0.8])
    wd, eta, lr = 0.1, 1e-3, 2.0
    optimizer = LARS([{"params": [weight], "weight_decay": wd}], lr=lr, trust_coefficient=eta)
    update = torch.tensor([0.6, 0.8]) + wd * torch.tensor([3.0, 4.0])  # g + wd w = [0.9, 1.2]
    trust = eta * 5.0 / update.norm()  # 1e-3 * 5 / 1.5
    expected = torch.tensor([3.0, 4.0]) - lr * trust * update
    optimizer.step()
    assert torch.allclose(weight.detach(), expected, atol=1e-7)


def test_lars_momentum_accumulates():
    weight = nn.Parameter(torch.tensor([1.0]))
    optimizer = LARS([{"params": [weight], "lars_exclude": True}], lr=0.1, momentum=0.9)
    for _ in range(2):
        weight.grad = torch.tensor([1.0])
        optimizer.step()
    # v1 = 1, v2 = 0.9 * 1 + 1 = 1.9; w = 1 - 0.1 * (1 + 1.9)
    assert weight.item() == pytest.approx(1 - 0.1 * 2.9)


def test_lars_excluded_group_is_plain_sgd_with_momentum():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5))
    b = nn.Parameter(a.detach().clone())
    lars = LARS([{"params": [a], "lars_exclude": True, "weight_decay": 0.0}], lr=0.3)
    sgd = torch.optim.SGD([b], lr=0.3, momentum=0.9)
    for _ in range(3):
        grad = torch.randn(5)
        a.grad, b.grad = grad.clone(), grad.clone()
        lars.step()
        sgd.step()
    assert torch.allclose(a, b, atol=1e-6)


def test_lars_zero_weight_uses_unit_trust_ratio():
    weight = nn.Parameter(torch.zeros(3))
    weight.grad = torch.ones(3)
    LARS([weight], lr=0.5).step()
    assert torch.allclose(weight.detach(), torch.full((3,), -0.5))


# --- architecture -----------------------------------------------------------------------------
def test_projector_and_predictor_shape():
    head = mlp(2048, 4096, 256)
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head[0].in_features == 2048 and head[0].out_features == 4096
    assert head[3].out_features == 256


@pytest.mark.parametrize("name, dim", [("resnet18", 512), ("resnet50", 2048)])
def test_backbone_feature_dims_and_cifar_stem(name, dim):
    encoder, feature_dim = build_backbone(name, cifar_stem=True)
    assert feature_dim == dim
    assert encoder.conv1.kernel_size == (3, 3) and encoder.conv1.stride == (1, 1)
    assert isinstance(encoder.maxpool, nn.Identity)
    with torch.no_grad():
        assert encoder.eval()(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_every_backbone_state_dict_loads_into_torchvision():
    for name in BACKBONES:
        # On the meta device: names and shapes are what loading checks, and no weights are drawn.
        with torch.device("meta"):
            encoder, _ = build_backbone(name)
            plain = torchvision_model(name)
        result = plain.load_state_dict(encoder.state_dict(), strict=False)
        assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys


def test_collapse_metric_healthy_and_collapsed():
    torch.manual_seed(0)
    spread = torch.randn(4096, 256)  # isotropic: per-dim std of unit vectors is 1/sqrt(d)
    assert collapse_metric(spread).item() == pytest.approx(1.0, abs=0.02)
    collapsed = torch.ones(4096, 256) + 1e-4 * torch.randn(4096, 256)
    assert collapse_metric(collapsed).item() < 0.01


def test_predictor_lr_scale_multiplies_only_the_predictors_step():
    from byol.training.optim import build_optimizer
    from byol.training.step import accumulated_step

    views = torch.randn(2, 8, 3, 4, 4).unbind(0)
    deltas = {}
    for scale in (1.0, 10.0):
        torch.manual_seed(0)
        model = _tiny_byol()
        before = {k: v.clone() for k, v in model.named_parameters()}
        optimizer = build_optimizer(model, "lars", 1.0, 1e-6, lr_scales={model.predictor: scale})
        accumulated_step(model, optimizer, [views], lr=1.0, tau=0.99)
        deltas[scale] = {k: (v - before[k]).norm().item() for k, v in model.named_parameters()}
    assert float(deltas[1.0]["predictor.0.weight"]) > 1e-4  # the predictor did move
    for name, delta in deltas[10.0].items():
        expected = 10.0 if name.startswith("predictor.") else 1.0
        # abs: a bias right before batch norm gets no gradient, only rounding noise
        assert float(delta) == pytest.approx(
            expected * float(deltas[1.0][name]), rel=1e-4, abs=1e-5
        ), name
