"""Every registered method trains a step; stop-gradient and momentum semantics; EMA math."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from selfsup.config import load_config
from selfsup.methods.base import METHODS, Schedule
from selfsup.methods.build import build_model
from selfsup.methods.momentum import cosine_momentum, ema_update, frozen_copy
from tests.method_specs import spec, specs

# The methods with momentum targets (their entries say so): the test checks that they declare them.
MOMENTUM_METHODS = {name for name in METHODS.names() if spec(name).momentum_targets}


def momentum_target_names(model) -> set[str]:
    targets = {id(p) for module in model.momentum_targets() for p in module.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in targets}


def test_every_registered_method_has_a_test_entry():
    assert sorted(specs()) == METHODS.names()


@pytest.mark.parametrize("name", METHODS.names())
def test_training_step_updates_online_network_only(name):
    torch.manual_seed(0)
    cfg = load_config([f"method={name}", "views.crop_size=16", *spec(name).tiny])
    model = build_model(cfg)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    views = [torch.randn(8, 3, 16, 16) for _ in range(cfg.views.num)]
    out = model(views, schedule=Schedule(0, 10, 1))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    for n, p in model.named_parameters():
        if n in frozen:
            assert p.grad is None, f"{n} is a target parameter and must get no gradient"
        else:
            assert p.grad is not None, f"{n} gets no gradient"
    targets = momentum_target_names(model)
    assert bool(targets) == (name in MOMENTUM_METHODS)
    assert frozen == targets | spec(name).fixed_parameters
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    model.after_optimizer_step(0, 10)
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert any(changed)


# Options that switch on state a method's tiny heads leave off, so that the test below sees it.
STATE_ON = {"swav": ["method.queue_size=8"]}


@pytest.mark.parametrize("name", METHODS.names())
def test_an_eval_mode_forward_changes_no_state(name):
    """A validation loss in a user's loop (`model.eval()`, a forward under no_grad) leaves every parameter and
    buffer as it was: queues (MoCo, SwAV), DINO's centre and DirectPred's correlation F move only in training
    mode, as BatchNorm's running statistics do."""
    torch.manual_seed(0)
    cfg = load_config([f"method={name}", "views.crop_size=16", *spec(name).tiny, *STATE_ON.get(name, [])])
    model = build_model(cfg)
    views = [torch.randn(8, 3, 16, 16) for _ in range(cfg.views.num)]
    model(views, schedule=Schedule(0, 10, 1))  # a training step first: state that is off until then is on
    before = {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()]}
    model.eval()
    with torch.no_grad():
        out = model(views, schedule=Schedule(1, 10, 1))
    assert torch.isfinite(out["loss"])
    after = dict([*model.named_parameters(), *model.named_buffers()])
    assert [n for n, t in before.items() if not torch.equal(t, after[n])] == []


@pytest.mark.parametrize("name", ["byol", "directpred", "directcopy"])
def test_byol_target_follows_the_online_network_by_ema(name):
    """Backbone and projector targets both move by EMA (DirectPred and DirectCopy are BYOL with another
    predictor, and share its target update)."""
    torch.manual_seed(0)
    cfg = load_config([f"method={name}", "views.crop_size=16", *spec(name).tiny, "method.momentum=0.9"])
    model = build_model(cfg)
    for online_net, target_net in ((model.projector, model.target_projector), (model.backbone, model.target_backbone)):
        with torch.no_grad():  # the target starts as a copy: make it differ so that the update is visible
            for p in target_net.parameters():
                p.add_(torch.randn_like(p))
        online = [p.detach().clone() for p in online_net.parameters()]
        target = [p.detach().clone() for p in target_net.parameters()]
        model.after_optimizer_step(0, 100)  # tau = base momentum at step 0
        for t0, o0, t1 in zip(target, online, target_net.parameters(), strict=True):
            torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * o0)


@pytest.mark.parametrize("name", sorted(MOMENTUM_METHODS))
def test_every_momentum_target_follows_its_online_module_by_the_schedule(name):
    """The base's after_optimizer_step moves every declared target by EMA at momentum_at(step): cosine to
    final_momentum, except MoCo v2's constant momentum."""
    torch.manual_seed(0)
    model = build_model(load_config([f"method={name}", "views.crop_size=16", *spec(name).tiny]))
    pairs = model.momentum_pairs()
    with torch.no_grad():
        for _, target in pairs:
            for p in target.parameters():
                p.add_(torch.randn_like(p))
    before = [
        ([p.detach().clone() for p in o.parameters()], [p.detach().clone() for p in t.parameters()]) for o, t in pairs
    ]
    m = model.momentum_at(40, 100)
    if name == "moco":
        assert m == model.base_momentum == model.momentum_at(0, 100)
    else:
        assert m == cosine_momentum(40, 100, model.base_momentum, model.final_momentum) != model.base_momentum
    model.after_optimizer_step(40, 100)
    for (_, target), (o0, t0) in zip(pairs, before, strict=True):
        for o, t, t1 in zip(o0, t0, target.parameters(), strict=True):
            torch.testing.assert_close(t1, m * t + (1 - m) * o)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)


def test_ema_update_math_and_buffers():
    online, target = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        online.weight.fill_(2.0)
        target.weight.fill_(1.0)
        online.running_mean.fill_(5.0)
    ema_update(target, online, 0.75)
    torch.testing.assert_close(target.weight, torch.full((3,), 1.25))
    torch.testing.assert_close(target.running_mean, torch.full((3,), 5.0))
    copy = frozen_copy(online)
    assert not any(p.requires_grad for p in copy.parameters())


def test_moco_queue_is_a_ring_buffer_of_keys():
    cfg = load_config(["method=moco", "views.crop_size=16", *spec("moco").tiny, "method.queue_size=8"])
    model = build_model(cfg)
    first, second = torch.randn(5, 16), torch.randn(5, 16)
    model.enqueue(first)
    assert int(model.queue_ptr) == 5 and torch.equal(model.queue[:5], first)
    model.enqueue(second)
    assert int(model.queue_ptr) == 2
    torch.testing.assert_close(model.queue[5:], second[:3])
    torch.testing.assert_close(model.queue[:2], second[3:])
    torch.testing.assert_close(model.queue[2:5], first[2:])


def test_moco_step_scores_against_the_old_queue_then_enqueues_its_keys():
    torch.manual_seed(0)
    cfg = load_config(
        [
            "method=moco",
            "views.crop_size=16",
            *spec("moco").tiny,
            "method.queue_size=16",
            "method.symmetric=false",
            "method.temperature=0.2",
        ]
    )
    model = build_model(cfg)
    views = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    old_queue = model.queue.clone()
    loss = model(views, schedule=Schedule(0, 10))["loss"]
    keys = model.keys(views[1])  # the key encoder is deterministic here: no shuffle with one process
    torch.testing.assert_close(model.queue[:4], keys)
    torch.testing.assert_close(model.queue[4:], old_queue[4:])
    from selfsup.losses import info_nce

    expected = info_nce(model.projector(model.backbone(views[0])), keys, old_queue, 0.2)
    torch.testing.assert_close(loss, expected)
    loss.backward()  # the enqueue after the forward does not break the graph


def test_simsiam_predictor_trains_at_a_fixed_lr(tmp_path):
    from selfsup.cli import main
    from selfsup.runs.checkpoint import load_checkpoint

    run = tmp_path / "run"
    args = ["pretrain", "method=simsiam", "data=synthetic", "data.subset=64", "views.crop_size=16",
            "trainer.batch_size=32", "trainer.max_steps=2", "trainer.progress=false", "eval.every=0",
            *spec("simsiam").tiny, f"output_dir={run}"]  # fmt: skip
    assert main(args) == 0
    groups = load_checkpoint(run / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    peak = 0.03 * 32 / 256
    fixed = [g for g in groups if g.get("fixed_lr")]
    scheduled = [g for g in groups if not g.get("fixed_lr")]
    assert fixed and all(g["lr"] == pytest.approx(peak) for g in fixed)
    assert scheduled and all(g["lr"] < peak for g in scheduled)  # cosine-decayed at step 2 of 2


def test_moco_v3_can_freeze_a_vits_random_patch_projection():
    from selfsup.methods.moco_v3 import MoCoV3
    from selfsup.nets.backbones import build_backbone

    vit, _ = build_backbone("vit_tiny", image_size=16, patch_size=4)
    model = MoCoV3(vit, proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=32, freeze_patch_embed=True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {"backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias"} <= frozen
    before = model.backbone.patch_embed.proj.weight.detach().clone()
    model([torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)])["loss"].backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    assert torch.equal(model.backbone.patch_embed.proj.weight, before)


@pytest.mark.parametrize("name", ["simclr", "moco", "byol", "simsiam", "swav", "vicreg", "barlow", "moco_v3"])
def test_the_projector_is_chosen_by_config(name: str):
    """method.proj_layers / proj_hidden_dim / proj_output_dim build the projector every method with one uses."""
    for layers in (1, 3):
        cfg = load_config([f"method={name}", "views.crop_size=16", f"method.proj_layers={layers}"])
        cfg.method.proj_hidden_dim, cfg.method.proj_output_dim = 24, 12
        model = build_model(cfg)
        head = model.expander if name == "vicreg" else model.projector
        linears = [m for m in head if isinstance(m, nn.Linear)]
        assert len(linears) == layers and linears[-1].out_features == 12
        assert all(m.out_features == 24 for m in linears[:-1])
