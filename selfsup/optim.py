"""Optimisers and learning-rate rules for pretraining: SGD, LARS, AdamW, lr scaling and warmup-cosine.

Schedules are pure functions of the step so the training loop sets the lr explicitly each step (with
`set_lr`) and a resumed run lands on exactly the same lr, with no scheduler state to checkpoint.
"""

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from selfsup.errors import UserError
from selfsup.registry import Registry
from selfsup.settings import BELOW_ONE, BOOL, MOMENTUM, NON_NEGATIVE, POSITIVE, Declaration, one_of, optional


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017, "Large Batch Training of Convolutional Networks").

    The optimiser of SimCLR, BYOL and Barlow Twins for large batches: each parameter tensor's update is
    rescaled by the trust ratio eta * ||p|| / ||g||, so every layer moves by a similar fraction of its norm
    whatever its gradient scale. Per step, for each parameter p with gradient:

        g = grad + weight_decay * p
        if ||p|| > 0 and ||g|| > 0: g = g * eta * ||p|| / ||g||
        mu = momentum * mu + g;  p = p - lr * mu

    A param group with `lars_exclude=True` (biases and norm weights, see `param_groups`) gets neither weight
    decay nor the trust ratio: plain momentum SGD, as in the SimCLR and BYOL implementations.
    """

    def __init__(
        self, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001
    ) -> None:
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0 or eta <= 0:
            raise ValueError(
                f"LARS needs lr >= 0, 0 <= momentum < 1, weight_decay >= 0, eta > 0; got "
                f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}, eta={eta}"
            )
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "lars_exclude": False}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one LARS update to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                g = p.grad
                if not group["lars_exclude"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = p.norm(), g.norm()
                    one = torch.ones_like(p_norm)
                    trust = torch.where((p_norm > 0) & (g_norm > 0), group["eta"] * p_norm / g_norm, one)
                    g = g.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                mu = state["momentum_buffer"]
                mu.mul_(group["momentum"]).add_(g)
                p.add_(mu, alpha=-group["lr"])
        return loss


def param_groups(
    model: nn.Module,
    weight_decay: float,
    exclude_bias_and_norm: bool = True,
    module_options: Sequence[tuple[nn.Module, dict[str, Any]]] = (),
) -> list[dict]:
    """Split trainable parameters into a decayed group and a group of 1-D tensors (biases, norm weights) and
    of the tensors a module names in timm's `no_weight_decay()` (a ViT's position embedding and CLS token).

    Decaying biases and BatchNorm/LayerNorm scales only shrinks them towards values that the following
    layers must undo, and LARS's trust ratio is meaningless for them (BYOL, SimCLR, Barlow Twins exclude
    them); ViT recipes (DeiT, MAE, DINO) leave the embeddings undecayed too. That group gets
    weight_decay=0 and lars_exclude=True. Each (module, options) of
    `module_options` (a predictor with its own lr or weight decay) gets groups of its own carrying the
    options: `weight_decay` replaces the decayed group's, `lr_scale` and `fixed_lr=True` (kept at the peak lr
    instead of the schedule) are read by `set_lr`. Empty groups are left out.
    """
    own = [(options, [p for p in module.parameters() if p.requires_grad]) for module, options in module_options]
    taken = {id(p) for _, params in own for p in params}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    undecayed = {id(p) for p in _named_no_weight_decay(model)}
    groups = []
    for options, params in [({}, rest), *own]:
        extra = {k: v for k, v in options.items() if k != "weight_decay"}
        decay = options.get("weight_decay", weight_decay)
        if not exclude_bias_and_norm:
            groups.append({"params": params, "weight_decay": decay, **extra})
            continue
        plain = [p for p in params if p.ndim <= 1 or id(p) in undecayed]
        decayed = [p for p in params if not (p.ndim <= 1 or id(p) in undecayed)]
        groups += [
            {"params": decayed, "weight_decay": decay, **extra},
            {"params": plain, "weight_decay": 0.0, "lars_exclude": True, **extra},
        ]
    return [g for g in groups if g["params"]]


def layer_index(name: str, backbone: nn.Module) -> tuple[int, int]:
    """(depth of a backbone parameter, the deepest depth) for layer-wise lr decay: a ViT's embeddings are 0,
    block i is i + 1, its final norm the deepest; a ResNet's stem is 0, layer k is k, anything after it the
    deepest (BEiT's and MAE's assignment)."""
    blocks = getattr(backbone, "blocks", None)
    if isinstance(blocks, nn.Sequential):
        deepest = len(blocks) + 1
        if name.startswith(("cls_token", "pos_embed", "patch_embed", "reg_token")):
            return 0, deepest
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1, deepest
        return deepest, deepest
    if all(hasattr(backbone, f"layer{k}") for k in range(1, 5)):
        if name.startswith(("conv1", "bn1")):
            return 0, 5
        if name.startswith("layer"):
            return int(name[len("layer")]), 5
        return 5, 5
    raise UserError(
        f"layer-wise lr decay needs a ViT or a ResNet backbone, not {type(backbone).__name__}: set layer_decay=1"
    )


def layerwise_lr_groups(backbone: nn.Module, lr: float, decay: float) -> list[tuple[list[nn.Parameter], float]]:
    """(parameters, lr) groups whose lr falls by `decay` per layer from the deepest (at `lr`) to the input:
    fine-tuning a pretrained network changes its early layers least. decay = 1: one group at `lr`."""
    params = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad]
    if decay == 1:
        return [([p for _, p in params], lr)]
    groups: dict[int, list[nn.Parameter]] = {}
    deepest = 0
    for name, param in params:
        index, deepest = layer_index(name, backbone)
        groups.setdefault(index, []).append(param)
    return [(group, lr * decay ** (deepest - index)) for index, group in sorted(groups.items())]


def _named_no_weight_decay(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that modules name in timm's `no_weight_decay()` convention (names relative to them)."""
    found = []
    for module in model.modules():
        names = getattr(module, "no_weight_decay", None)
        if callable(names):
            own = dict(module.named_parameters())
            found += [own[name] for name in names() if name in own]
    return found


def _sgd(params: Any, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _lars(params: Any, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _adamw(params: Any, lr: float, momentum: float, weight_decay: float, beta2: float = 0.999) -> torch.optim.Optimizer:
    """AdamW with betas (momentum, beta2): MAE's (0.9, 0.95), PyTorch's (0.9, 0.999) otherwise."""
    return torch.optim.AdamW(params, lr=lr, betas=(momentum, beta2), weight_decay=weight_decay)


OPTIMIZERS: Registry[Callable[[Any, float, float, float], torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("sgd")(_sgd)
OPTIMIZERS.register("lars")(_lars)
OPTIMIZERS.register("adamw")(_adamw)
LR_SCALING = ("linear", "sqrt", "none")

OPTIMIZER_OPTIONS: dict[str, Declaration] = {"adamw": {"beta2": BELOW_ONE}}  # each optimizer's own settings


def optim_settings(name: str) -> Declaration:
    """The `optim.*` settings of optimizer `name`: the common ones and its own (OPTIMIZER_OPTIONS)."""
    return {**OPTIM_SETTINGS, **OPTIMIZER_OPTIONS.get(name, {})}


OPTIM_SETTINGS: Declaration = {
    "name": one_of(*OPTIMIZERS.names()),
    "base_lr": POSITIVE,  # lr = base_lr x batch / 256 under the linear rule
    "lr_scaling": one_of(*LR_SCALING),
    "momentum": MOMENTUM,  # SGD and LARS: momentum; AdamW: beta1
    "weight_decay": NON_NEGATIVE,
    "final_lr": NON_NEGATIVE,
    "warmup_epochs": NON_NEGATIVE,
    "final_weight_decay": optional(NON_NEGATIVE),  # null: constant; else a cosine to it (DINO's ViT: 0.04 -> 0.4)
    "exclude_bias_and_norm": BOOL,
}


def build_optimizer(
    name: str, params: Any, lr: float, momentum: float, weight_decay: float, **options: float
) -> torch.optim.Optimizer:
    """Build an optimiser by name ("sgd", "lars", "adamw") from parameters or param groups; `options` are the
    optimiser's own settings (AdamW's beta2).

    Per-group keys from `param_groups` (weight_decay, lars_exclude, lr_scale) override the defaults given
    here; keys an optimiser does not know are carried along untouched.
    """
    factory = OPTIMIZERS.get(name.lower())
    if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0:
        raise UserError(
            f"optimizer needs lr >= 0, 0 <= momentum < 1 and weight_decay >= 0; got lr={lr}, "
            f"momentum={momentum}, weight_decay={weight_decay}"
        )
    return factory(params, lr, momentum, weight_decay, **options)


def scaled_lr(base_lr: float, batch_size: int, rule: str = "linear") -> float:
    """Learning rate for a batch size: "linear" base_lr * batch_size / 256 (Goyal et al. 2017),
    "sqrt" base_lr * sqrt(batch_size) (SimCLR's rule with LARS, e.g. 0.075 * sqrt(B)), "none" base_lr."""
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1 to scale the lr; got {batch_size}")
    if rule == "linear":
        return base_lr * batch_size / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size)
    if rule == "none":
        return base_lr
    raise UserError(f"unknown lr scaling rule '{rule}'; set optim.lr_scaling to {', '.join(LR_SCALING)}")


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, final_lr: float, start_lr: float = 0.0
) -> float:
    """Learning rate at `step`: linear warmup from start_lr to base_lr over warmup_steps, then a half-cosine
    from base_lr down to final_lr at total_steps (and final_lr after it).

    Warmup avoids the early instability of large-batch training at full lr (Goyal et al. 2017); the cosine
    decay is SGDR without restarts (Loshchilov & Hutter 2017), used by SimCLR, BYOL, MoCo v2/v3 and DINO.
    """
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise UserError(
            f"lr schedule needs total_steps >= 1 and 0 <= warmup_steps <= total_steps; got "
            f"total_steps={total_steps}, warmup_steps={warmup_steps}: shorten the warmup"
        )
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return start_lr + (base_lr - start_lr) * step / warmup_steps
    if step >= total_steps:
        return final_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return final_lr + (base_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def poly_decay(step: int, total_steps: int, power: float = 0.9) -> float:
    """(1 - step / total_steps)^power: the "poly" multiplier of DeepLab's segmentation training."""
    return (1.0 - min(step, total_steps) / total_steps) ** power


def step_decay(epoch: int, milestones: Sequence[int], gamma: float) -> float:
    """gamma^(milestones reached by `epoch`): the multiplier of a step schedule (detection's lr_step_epochs)."""
    return gamma ** sum(epoch >= m for m in milestones)


WARMUP_MAX_FRACTION = 0.1


def bounded_warmup(warmup_steps: int, total_steps: int) -> tuple[int, str | None]:
    """Warmup steps capped at WARMUP_MAX_FRACTION of the run, and a note when capped: a 10-epoch warmup (the
    papers' setting for 100-1000 epochs) would spend most of a short run below the peak lr."""
    cap = int(total_steps * WARMUP_MAX_FRACTION)
    if warmup_steps <= cap:
        return warmup_steps, None
    share = f"{WARMUP_MAX_FRACTION:.0%}"
    return cap, f"warmup shortened from {warmup_steps} to {cap} steps (at most {share} of the run's {total_steps})"


def cosine_weight_decay(step: int, total_steps: int, base: float, final: float) -> float:
    """DINO's weight-decay schedule: a half-cosine from `base` at step 0 to `final` at the last step."""
    progress = min(step / max(total_steps, 1), 1.0)
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def scale_weight_decay(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Every group's weight decay at `factor` times its own (recorded in the group on the first call, so it is
    saved and resumed with the optimizer); undecayed groups stay at 0."""
    for group in optimizer.param_groups:
        base = group.setdefault("base_weight_decay", group["weight_decay"])
        group["weight_decay"] = base * factor


def set_lr(optimizer: torch.optim.Optimizer, lr: float, peak_lr: float | None = None) -> None:
    """Set every group's lr to lr * group.get("lr_scale", 1.0), so a group (e.g. a predictor) can run at
    a fixed multiple of the scheduled lr; groups marked `fixed_lr` get peak_lr * lr_scale instead."""
    for group in optimizer.param_groups:
        base = lr
        if group.get("fixed_lr"):
            if peak_lr is None:
                raise ValueError("a fixed_lr parameter group needs set_lr(..., peak_lr=...)")
            base = peak_lr
        group["lr"] = base * group.get("lr_scale", 1.0)
