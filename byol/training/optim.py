"""LARS (You et al., 2017) as BYOL uses it, and the parameter groups it needs.

Written by hand because torch ships no LARS; it follows the official BYOL (optax) update order:
weight decay, then trust ratio, then momentum.
"""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from byol.checkpoint import wrong_kind

# Tokens and embeddings a transformer adds to its input: like biases, they set offsets, not a
# scale that weight decay should shrink or a trust ratio should measure.
NO_DECAY_NAMES = ("pos_embed", "cls_token", "dist_token", "reg_token", "mask_token")


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of ``model``'s parameters kept out of weight decay and LARS adaptation: every 1-d
    tensor (biases, the scales and shifts of batch-, layer- and group-norm, layer-scale gammas),
    the position embeddings and class/register tokens, and whatever a timm module declares in its
    ``no_weight_decay()``."""
    names = set()
    for prefix, module in model.named_modules():
        declared = getattr(module, "no_weight_decay", None)
        if callable(declared):
            names |= {f"{prefix}.{n}" if prefix else n for n in declared()}
    for name, parameter in model.named_parameters():
        if parameter.ndim <= 1 or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES:
            names.add(name)
    return names


def parameter_groups(
    model: nn.Module, weight_decay: float, lr_scales: dict[nn.Module, float] | None = None
) -> list[dict]:
    """Two groups: weights (decayed, LARS-adapted) and the parameters ``no_decay_names`` picks
    (neither); each submodule named in ``lr_scales`` gets its own pair, whose ``lr_scale``
    multiplies the learning rate the training loop sets."""
    scaled = {id(p): scale for m, scale in (lr_scales or {}).items() for p in m.parameters()}
    excluded_names = no_decay_names(model)
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, False): [], (1.0, True): []}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        key = (scaled.get(id(parameter), 1.0), name in excluded_names)
        groups.setdefault(key, []).append(parameter)
    return [
        {
            "params": params,
            "weight_decay": 0.0 if excluded else weight_decay,
            "lars_exclude": excluded,
            "lr_scale": scale,
        }
        for (scale, excluded), params in groups.items()
    ]


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose update for each weight tensor is scaled by its trust ratio
    trust_coefficient * ||w|| / ||g + wd * w||; groups with ``lars_exclude`` skip the scaling."""

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if not group["lars_exclude"]:
                weight_norms = torch._foreach_norm(params)
                update_norms = torch._foreach_norm(grads)
                ratios = [
                    torch.where(
                        (w > 0) & (u > 0), group["trust_coefficient"] * w / u, torch.ones_like(w)
                    )
                    for w, u in zip(weight_norms, update_norms, strict=True)
                ]
                grads = torch._foreach_mul(grads, ratios)
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            buffers = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, grads)
            torch._foreach_add_(params, buffers, alpha=-group["lr"])
        return loss


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    trust_coefficient: float = 1e-3,
    lr_scales: dict[nn.Module, float] | None = None,
    kernels: str = "foreach",
) -> torch.optim.Optimizer:
    """LARS (the paper), SGD or AdamW over the same two groups (no decay on biases, norm layers,
    position embeddings and class tokens). ``kernels``: SGD and AdamW's implementation, for-loop,
    foreach or fused (LARS is foreach)."""
    groups = parameter_groups(model, weight_decay, lr_scales)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, trust_coefficient=trust_coefficient)
    chosen = dict(foreach=kernels == "foreach", fused=kernels == "fused")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, **chosen)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **chosen)
    raise ValueError(f"unknown optimizer {name!r}; choose lars, sgd or adamw")


def _same_kind(saved: Any, fresh: Any) -> bool:
    """Whether a saved hyper-parameter is of the kind this optimizer's own one is (a number for
    a number, a pair of numbers for Adam's betas...): a string where a momentum belongs would
    load, then fail at the first step."""
    if isinstance(fresh, bool) or fresh is None or isinstance(fresh, str):
        return type(saved) is type(fresh)
    if isinstance(fresh, (int, float)):
        return isinstance(saved, (int, float)) and not isinstance(saved, bool)
    if isinstance(fresh, (tuple, list)):
        return (
            isinstance(saved, (tuple, list))
            and len(saved) == len(fresh)
            and all(map(_same_kind, saved, fresh))
        )
    if torch.is_tensor(fresh):
        return torch.is_tensor(saved) and wrong_kind(saved, fresh) is None
    return True  # a kind we do not know of: load_state_dict's own checks apply


def _state_value_problem(name: str, value: Any, parameter: torch.Tensor) -> str | None:
    """Why an optimizer's state entry of ``parameter`` is unusable (None: it is usable)."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return None  # SGD's momentum buffer is None without momentum; Adam's step may be a number
    if not torch.is_tensor(value):
        return f"an optimizer {name} that is a {type(value).__name__}, not a tensor or a number"
    if not value.dim():  # a counter (Adam's step): a number of any dtype
        why = wrong_kind(value, value.new_empty(()))
    else:
        why = wrong_kind(value, parameter)
        if why is None and value.shape != parameter.shape:
            why = f"of shape {tuple(value.shape)} for a parameter of {tuple(parameter.shape)}"
    return f"an optimizer {name} that is {why}" if why else None


def optimizer_state_problem(saved: Any, optimizer: torch.optim.Optimizer) -> str | None:
    """What makes ``saved`` unfit to be ``optimizer``'s state (None: nothing). Checked before
    ``load_state_dict``, which checks neither kinds nor shapes: every hyper-parameter of every
    group of the same kind as this optimizer's, every state tensor dense and strided, of its
    parameter's dtype and shape."""
    fresh = optimizer.state_dict()
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        return "no optimizer state"
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
        return "the state of another optimizer (other parameter groups)"
    parameters: dict[Any, torch.Tensor] = {}
    fills_flags = type(optimizer).__setstate__ is not torch.optim.Optimizer.__setstate__
    for live, own, group in zip(optimizer.param_groups, fresh["param_groups"], groups, strict=True):
        if not isinstance(group, dict):
            return f"an optimizer parameter group that is a {type(group).__name__}"
        for key, value in own.items():
            if key == "params":
                continue
            if key not in group:
                if fills_flags and (value is None or isinstance(value, bool)):
                    continue  # a flag an older torch did not save: __setstate__ sets it
                return f"an optimizer parameter group without its {key}"
            if not _same_kind(group[key], value):
                return f"an optimizer {key}={group[key]!r} where a value like {value!r} belongs"
        ids = group.get("params")
        if not isinstance(ids, list) or len(ids) != len(live["params"]):
            return "the state of another optimizer (other parameters)"
        parameters.update(zip(ids, live["params"], strict=True))
    for key, entries in saved["state"].items():
        if key not in parameters:
            return f"optimizer state {key!r} for no parameter of this model"
        if not isinstance(entries, dict):
            return f"optimizer state {key!r} that is a {type(entries).__name__}, not a group"
        for name, value in entries.items():
            problem = _state_value_problem(str(name), value, parameters[key])
            if problem:
                return problem
    return None
