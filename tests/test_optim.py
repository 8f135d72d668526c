"""Optimisers and lr rules: LARS against hand-computed steps and torch's SGD, schedules against torch's."""

import copy
import math

import pytest
import torch
from torch import nn

from selfsup.errors import UserError
from selfsup.optim import LARS, bounded_warmup, build_optimizer, param_groups, scaled_lr, set_lr, warmup_cosine


def test_lars_two_steps_by_hand():
    p = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))  # ||p|| = 5
    opt = LARS([p], lr=1.0, momentum=0.9, weight_decay=0.0, eta=0.001)
    p.grad = torch.tensor([0.3, 0.4], dtype=torch.float64)  # ||g|| = 0.5, trust = 0.001 * 5 / 0.5 = 0.01
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([2.997, 3.996], dtype=torch.float64))
    # ||p|| = 4.995 -> trust 0.00999, g' = [0.002997, 0.003996]; mu = 0.9 * [0.003, 0.004] + g'.
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([2.991303, 3.988404], dtype=torch.float64))


def test_lars_weight_decay_and_trust_ratio_by_hand():
    p = nn.Parameter(torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64))  # ||p|| = 5
    opt = LARS([p], lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.02)
    p.grad = torch.tensor([[0.9, -0.2], [0.8, -0.4]], dtype=torch.float64)
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)  # grad + 0.1 * p, ||g|| = sqrt(2)
    expected = p.detach() - 0.5 * (0.02 * 5 / math.sqrt(2)) * g
    opt.step()
    torch.testing.assert_close(p.detach(), expected)


def reference_lars(
    params: list[torch.Tensor],
    grads: list[list[torch.Tensor]],
    excluded: list[bool],
    lr: float,
    momentum: float,
    weight_decay: float,
    eta: float,
) -> list[torch.Tensor]:
    """LARS written out step by step, one tensor at a time, in float64."""
    params = [p.clone().double() for p in params]
    buffers = [torch.zeros_like(p) for p in params]
    for step_grads in grads:
        for i, grad in enumerate(step_grads):
            g = grad.double()
            if not excluded[i]:
                g = g + weight_decay * params[i]
                p_norm, g_norm = float(params[i].norm()), float(g.norm())
                if p_norm > 0 and g_norm > 0:
                    g = g * (eta * p_norm / g_norm)
            buffers[i] = momentum * buffers[i] + g
            params[i] = params[i] - lr * buffers[i]
    return params


def test_lars_matches_reference_with_excluded_group_and_zero_param():
    gen = torch.Generator().manual_seed(0)
    weight = nn.Parameter(torch.randn(4, 3, generator=gen))
    zero = nn.Parameter(torch.zeros(3, 3))  # ||p|| = 0: the trust ratio falls back to 1
    bias = nn.Parameter(torch.randn(4, generator=gen))
    start = [weight.detach().clone(), zero.detach().clone(), bias.detach().clone()]
    opt = LARS(
        [{"params": [weight, zero]}, {"params": [bias], "weight_decay": 0.0, "lars_exclude": True}],
        lr=0.3,
        momentum=0.9,
        weight_decay=1e-2,
        eta=0.01,
    )
    grads = [[torch.randn(p.shape, generator=gen) for p in (weight, zero, bias)] for _ in range(4)]
    for step_grads in grads:
        for p, g in zip((weight, zero, bias), step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
    expected = reference_lars(start, grads, [False, False, True], lr=0.3, momentum=0.9, weight_decay=1e-2, eta=0.01)
    for p, ref in zip((weight, zero, bias), expected, strict=True):
        torch.testing.assert_close(p.detach().double(), ref, rtol=1e-5, atol=1e-6)


def test_lars_excluded_group_is_momentum_sgd_without_decay():
    gen = torch.Generator().manual_seed(1)
    a = nn.Parameter(torch.randn(5, generator=gen))
    b = nn.Parameter(a.detach().clone())
    lars = LARS([{"params": [a], "lars_exclude": True}], lr=0.1, momentum=0.9, weight_decay=0.5)
    sgd = torch.optim.SGD([b], lr=0.1, momentum=0.9, weight_decay=0.0)
    for _ in range(5):
        g = torch.randn(5, generator=gen)
        a.grad, b.grad = g.clone(), g.clone()
        lars.step()
        sgd.step()
    torch.testing.assert_close(a, b)


def test_lars_closure_skips_missing_grads_and_resumes_from_state_dict():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    unused = nn.Parameter(torch.tensor([5.0]))
    opt = LARS([w, unused], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(5.0)
    assert unused.item() == 5.0
    resumed_w = nn.Parameter(w.detach().clone())
    resumed = LARS([resumed_w, nn.Parameter(torch.tensor([5.0]))], lr=0.1)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))  # as after torch.save / torch.load
    for param, optimizer in ((w, opt), (resumed_w, resumed)):
        param.grad = torch.tensor([0.5, 0.5])
        optimizer.step()
    torch.testing.assert_close(w, resumed_w)


def test_lars_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="momentum"):
        LARS([nn.Parameter(torch.ones(1))], lr=0.1, momentum=1.0)


def small_model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 3), nn.LayerNorm(3))
    model[0].bias.requires_grad_(False)  # frozen parameters are not optimised
    return model


def test_param_groups_split_biases_and_norms():
    model = small_model()
    groups = param_groups(model, weight_decay=1e-4)
    assert [set(map(id, g["params"])) for g in groups] == [
        {id(model[0].weight), id(model[3].weight)},
        {id(model[1].weight), id(model[1].bias), id(model[3].bias), id(model[4].weight), id(model[4].bias)},
    ]
    assert groups[0]["weight_decay"] == 1e-4 and not groups[0].get("lars_exclude", False)
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lars_exclude"] is True
    single = param_groups(model, weight_decay=1e-4, exclude_bias_and_norm=False)
    assert len(single) == 1 and len(single[0]["params"]) == 7 and single[0]["weight_decay"] == 1e-4
    assert len(param_groups(nn.Linear(3, 3, bias=False), 0.1)) == 1  # no empty group


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("LARS", LARS), ("adamw", torch.optim.AdamW)])
def test_build_optimizer_honours_param_groups(name, cls):
    model = small_model()
    opt = build_optimizer(name, param_groups(model, 0.05), lr=0.2, momentum=0.9, weight_decay=0.05)
    assert type(opt) is cls
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert all(g["lr"] == 0.2 for g in opt.param_groups)
    (model(torch.randn(2, 3, 3, 3)) * torch.tensor([1.0, 2.0, 4.0])).sum().backward()
    before = model[3].weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model[3].weight)


def test_build_optimizer_unknown_name_suggests_close_match():
    message = r"unknown optimizer 'lasr'; did you mean 'lars'\? \(known: adamw, lars, sgd\)"
    with pytest.raises(UserError, match=message):
        build_optimizer("lasr", [nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.9, weight_decay=0.0)
    with pytest.raises(UserError, match="momentum"):
        build_optimizer("sgd", [nn.Parameter(torch.ones(1))], lr=0.1, momentum=1.5, weight_decay=0.0)


def test_scaled_lr_rules():
    assert scaled_lr(0.3, 4096, "linear") == pytest.approx(4.8)  # SimCLR linear rule
    assert scaled_lr(0.075, 4096, "sqrt") == pytest.approx(4.8)  # SimCLR sqrt rule: 0.075 * 64
    assert scaled_lr(0.05, 512, "none") == 0.05
    assert scaled_lr(0.1, 256) == pytest.approx(0.1)
    with pytest.raises(UserError, match="linear, sqrt, none"):
        scaled_lr(0.1, 256, "cubic")


def test_warmup_cosine_endpoints_midpoint_and_monotonicity():
    kw = dict(total_steps=110, warmup_steps=10, base_lr=1.0, final_lr=0.01)
    assert warmup_cosine(0, **kw) == 0.0
    assert warmup_cosine(5, **kw) == pytest.approx(0.5)
    assert warmup_cosine(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine(60, **kw) == pytest.approx((1.0 + 0.01) / 2)  # cosine midpoint
    assert warmup_cosine(110, **kw) == pytest.approx(0.01)
    assert warmup_cosine(500, **kw) == pytest.approx(0.01)
    lrs = [warmup_cosine(s, **kw) for s in range(111)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11], strict=True))
    assert all(a >= b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))
    assert warmup_cosine(0, 10, 0, 0.5, 0.0) == 0.5  # no warmup starts at base_lr
    assert warmup_cosine(2, 10, 4, 1.0, 0.0, start_lr=0.2) == pytest.approx(0.6)


def test_warmup_cosine_matches_torch_schedulers():
    p = nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=0.8)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=20)
    for step in range(20):
        expected = opt.param_groups[0]["lr"]
        assert warmup_cosine(step, 100, 20, 0.8, 0.004, start_lr=0.08) == pytest.approx(expected)
        opt.step()
        warm.step()
    opt = torch.optim.SGD([p], lr=0.8)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=80, eta_min=0.004)
    for step in range(20, 101):
        assert warmup_cosine(step, 100, 20, 0.8, 0.004) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6)
        opt.step()
        cosine.step()


def test_warmup_cosine_rejects_bad_schedule():
    with pytest.raises(UserError, match="warmup_steps <= total_steps"):
        warmup_cosine(0, 10, 20, 0.1, 0.0)
    with pytest.raises(ValueError):
        warmup_cosine(-1, 10, 2, 0.1, 0.0)


def test_set_lr_honours_lr_scale():
    a, b = nn.Parameter(torch.ones(1)), nn.Parameter(torch.ones(1))
    opt = build_optimizer(
        "sgd", [{"params": [a]}, {"params": [b], "lr_scale": 10.0}], lr=1.0, momentum=0.9, weight_decay=0.0
    )
    set_lr(opt, 0.03)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.03), pytest.approx(0.3)]


def test_fixed_lr_modules_get_their_own_groups_that_stay_at_peak():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    groups = param_groups(model, weight_decay=1e-4, module_options=[(model[2], {"fixed_lr": True})])
    fixed = [g for g in groups if g.get("fixed_lr")]
    assert {id(p) for g in fixed for p in g["params"]} == {id(p) for p in model[2].parameters()}
    assert sorted(g["weight_decay"] for g in fixed) == [0.0, 1e-4]  # weight decayed, bias not
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = build_optimizer("sgd", groups, lr=0.5, momentum=0.9, weight_decay=1e-4)
    set_lr(opt, 0.01, peak_lr=0.5)
    assert sorted({g["lr"] for g in opt.param_groups}) == [0.01, 0.5]
    assert all(g["lr"] == 0.5 for g in opt.param_groups if g.get("fixed_lr"))
    with pytest.raises(ValueError, match="peak_lr"):
        set_lr(opt, 0.01)


def test_a_module_with_its_own_lr_scale_and_weight_decay():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    groups = param_groups(
        model, weight_decay=1e-4, module_options=[(model[2], {"lr_scale": 10.0, "weight_decay": 0.0})]
    )
    own = [g for g in groups if "lr_scale" in g]
    assert {id(p) for g in own for p in g["params"]} == {id(p) for p in model[2].parameters()}
    assert [g["weight_decay"] for g in own] == [0.0, 0.0]  # its own decay for the weight; never for the bias
    assert [g["weight_decay"] for g in groups if "lr_scale" not in g] == [1e-4, 0.0]
    opt = build_optimizer("sgd", groups, lr=0.5, momentum=0.9, weight_decay=1e-4)
    set_lr(opt, 0.02)
    assert sorted({round(g["lr"], 6) for g in opt.param_groups}) == [0.02, 0.2]


def test_warmup_is_capped_at_a_tenth_of_the_run_with_a_note():
    assert bounded_warmup(12, 120) == (12, None)
    assert bounded_warmup(0, 5) == (0, None)
    assert bounded_warmup(150, 120) == (12, "warmup shortened from 150 to 12 steps (at most 10% of the run's 120)")
    assert bounded_warmup(13, 120)[0] == 12


def test_a_vits_embeddings_are_not_decayed():
    from selfsup.nets.backbones import build_backbone

    vit, _ = build_backbone("vit_tiny", image_size=32, patch_size=4)
    decayed, plain = param_groups(vit, weight_decay=0.05)
    names = {id(p): n for n, p in vit.named_parameters()}
    assert {"pos_embed", "cls_token"} <= {names[id(p)] for p in plain["params"]}
    assert {names[id(p)] for p in decayed["params"]} == {n for n, p in vit.named_parameters() if p.ndim > 1} - {
        "pos_embed",
        "cls_token",
    }
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.05, 0.0)


def test_grad_clip_bounds_the_first_update(tmp_path):
    """SGD's first step moves the weights by lr x the gradient: clipped to norm c (well below the unclipped
    norm, about 15 here), the move is lr x c."""
    from selfsup.cli import main
    from selfsup.runs.checkpoint import load_checkpoint

    run = tmp_path / "run"
    args = ["pretrain", "data=synthetic", "data.subset=32", "views.crop_size=16", "trainer.batch_size=16"]
    args += ["trainer.max_steps=1", "trainer.precision=32", "device=cpu", "trainer.progress=false", "eval.every=0"]
    args += ["optim.warmup_epochs=0", "optim.weight_decay=0", "trainer.grad_clip=0.1", f"output_dir={run}"]
    assert main(args) == 0
    before, after = (load_checkpoint(run / "checkpoints" / f)["model"] for f in ("epoch-0000.pt", "last.pt"))
    weights = [k for k in before if before[k].is_floating_point() and "running_" not in k]
    moved = torch.cat([(after[k] - before[k]).flatten() for k in weights]).norm()
    lr = 0.12 * 16 / 256
    assert moved == pytest.approx(lr * 0.1, rel=1e-2)  # fp32 rounding of ~1e-7 steps: a 1% tolerance


def test_weight_decay_follows_its_cosine_and_resumes(tmp_path):
    from selfsup.cli import main
    from selfsup.optim import cosine_weight_decay
    from selfsup.runs.checkpoint import load_checkpoint

    assert [cosine_weight_decay(s, 4, 0.04, 0.4) for s in (0, 2, 4, 9)] == pytest.approx([0.04, 0.22, 0.4, 0.4])
    run = tmp_path / "run"
    args = ["pretrain", "data=synthetic", "data.subset=32", "views.crop_size=16", "trainer.batch_size=16"]
    args += ["trainer.max_steps=2", "device=cpu", "trainer.progress=false", "eval.every=0"]
    args += ["optim=adamw", "optim.weight_decay=0.04", "optim.final_weight_decay=0.4", f"output_dir={run}"]
    assert main(args) == 0
    groups = load_checkpoint(run / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    # the second step (step 1 of 2) ran at 0.4 - 0.36 x (1 + cos(pi / 2)) / 2 = 0.22; biases and norms at 0
    assert sorted(g["weight_decay"] for g in groups) == pytest.approx([0.0, 0.22])
    assert sorted(g["base_weight_decay"] for g in groups) == pytest.approx([0.0, 0.04])


def test_layerwise_lr_decay_falls_from_the_top_layer_to_the_embeddings():
    from selfsup.nets.backbones import build_backbone
    from selfsup.optim import layerwise_lr_groups

    vit, _ = build_backbone("vit_tiny", image_size=16, patch_size=4)  # 12 blocks: depths 0 (embeddings) .. 13
    groups = layerwise_lr_groups(vit, 1.0, 0.5)
    assert [lr for _, lr in groups] == pytest.approx([0.5 ** (13 - d) for d in range(14)])
    names = {id(p): n for n, p in vit.named_parameters()}
    assert {names[id(p)] for p in groups[0][0]} == {
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
    }
    assert {names[id(p)].split(".")[1] for p in groups[1][0]} == {"0"} and {names[id(p)] for p in groups[-1][0]} == {
        "norm.weight",
        "norm.bias",
    }
    assert sum(len(g) for g, _ in groups) == len(list(vit.parameters()))
    resnet, _ = build_backbone("resnet18", cifar_stem=True)
    # stem, layer1..layer4; depth 5 (the new head, trained at the full lr) holds no backbone parameter
    expected = [0.1 / 32, 0.1 / 16, 0.1 / 8, 0.1 / 4, 0.1 / 2]
    assert [lr for _, lr in layerwise_lr_groups(resnet, 0.1, 0.5)] == pytest.approx(expected)
    assert layerwise_lr_groups(resnet, 0.1, 1.0)[0][1] == 0.1
