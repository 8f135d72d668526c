"""Parameters frozen for part of a run (SwAV's prototypes, DINO's last layer) get no gradient (None), so the
optimizer skips them as the official code's does (`p.grad = None` after backward): AdamW's weight decay,
moments and step count leave them alone until their release. Checked in a plain loop, against a hand-written
reference of the official code (which the former zero gradient fails), and through `selfsup pretrain` with a
resume between the frozen epoch and the release."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.config import load_config
from selfsup.methods.base import Method, Schedule
from selfsup.methods.build import build_model
from selfsup.runs.checkpoint import load_checkpoint
from selfsup.train.loop import training_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")
FROZEN, STEPS = 2, 4  # one step per epoch: frozen at steps 0-1, released at 2
METHODS = {
    "swav": ["method=swav", "method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.num_prototypes=12"],
    "dino": ["method=dino", "method.proj_hidden_dim=32", "method.bottleneck_dim=8", "method.out_dim=24"],
}
FREEZE = {"swav": "method.freeze_prototypes_epochs", "dino": "method.freeze_last_layer_epochs"}
OFFICIAL_NAME = {"swav": "prototypes", "dino": "last_layer"}  # what the official code cancels, by name
FROZEN_KEY = {"swav": "prototypes.weight", "dino": "head.last_layer.parametrizations.weight.original1"}
Drop = Callable[[Method, Schedule], None]


def build(name: str) -> Method:
    torch.manual_seed(0)
    return build_model(load_config([*METHODS[name], "views.crop_size=16", f"{FREEZE[name]}={FROZEN}"]))


def multi_crop(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return [torch.randn(6, 3, size, size, generator=g) for size in (16, 16, 8, 8)]


def official(name: str) -> Drop:
    """The official code's cancellation, written out: `p.grad = None` by name while frozen."""

    def drop(model: Method, schedule: Schedule) -> None:
        for n, p in model.named_parameters():
            if OFFICIAL_NAME[name] in n and schedule.step < FROZEN:
                p.grad = None

    return drop


def zero_gradient(name: str) -> Drop:
    """The former behaviour: a zero gradient while frozen, which AdamW still steps."""

    def drop(model: Method, schedule: Schedule) -> None:
        for n, p in model.named_parameters():
            if OFFICIAL_NAME[name] in n and schedule.step < FROZEN and p.grad is not None:
                p.grad.zero_()

    return drop


def selfsup_drop(model: Method, schedule: Schedule) -> None:
    model.drop_frozen_gradients(schedule)


def train(
    model: Method,
    drop: Drop,
    on_step: Callable[[int, torch.optim.Optimizer, dict[str, torch.Tensor]], None] | None = None,
) -> None:
    """The training loop's order: forward, backward, drop, clip, AdamW with weight decay, after-step hooks.
    `on_step(step, optimizer, before)` sees the parameters as they were before the optimizer step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05)
    for step in range(STEPS):
        schedule = Schedule(step, STEPS, 1)
        optimizer.zero_grad(set_to_none=True)
        model(multi_crop(step), schedule=schedule)["loss"].backward()
        drop(model, schedule)
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer.step()
        if on_step is not None:
            on_step(step, optimizer, before)
        model.after_optimizer_step(step, STEPS)


@pytest.mark.parametrize("name", ["swav", "dino"])
def test_swav_dino_frozen_parameters_untouched_by_adamw_then_released(name: str):
    """While frozen the parameter has no gradient, no AdamW state, and the step leaves it bitwise unchanged
    (weight decay included); from the release AdamW counts its steps from 1."""
    model = build(name)
    frozen = dict(model.named_parameters())[FROZEN_KEY[name]]
    named = {id(p) for n, p in model.named_parameters() if OFFICIAL_NAME[name] in n and p.requires_grad}
    assert {id(p) for p in model.frozen_parameters(Schedule(FROZEN - 1, STEPS, 1)) if p.requires_grad} == named
    assert model.frozen_parameters(Schedule(FROZEN, STEPS, 1)) == []

    def check(step: int, optimizer: torch.optim.Optimizer, before: dict[str, torch.Tensor]) -> None:
        if step < FROZEN:
            assert frozen.grad is None and frozen not in optimizer.state, step
            assert torch.equal(frozen, before[FROZEN_KEY[name]]), f"step {step}: a frozen parameter moved"
        else:
            assert int(optimizer.state[frozen]["step"]) == step - FROZEN + 1
            assert not torch.equal(frozen, before[FROZEN_KEY[name]]), f"step {step}: released but still"
        moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
        assert len(moved) > 1, "the rest of the model trains throughout"

    train(model, selfsup_drop, check)


@pytest.mark.parametrize("name", ["swav", "dino"])
def test_swav_dino_steps_equal_the_official_grad_none_under_adamw(name: str):
    """STEPS AdamW steps through the freeze and the release equal the official code's (its gradients set to
    None by name); the former zero gradient departs from it (weight decay while frozen, AdamW's step count and
    moments at the release), so the comparison can fail."""
    models = {drop: build(name) for drop in ("selfsup", "official", "zero")}
    train(models["selfsup"], selfsup_drop)
    train(models["official"], official(name))
    train(models["zero"], zero_gradient(name))
    reference = models["official"].state_dict()
    for key, value in models["selfsup"].state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=1e-5, atol=1e-6, msg=key)
    zero = models["zero"].state_dict()[FROZEN_KEY[name]]
    with pytest.raises(AssertionError):
        torch.testing.assert_close(zero, reference[FROZEN_KEY[name]], rtol=1e-5, atol=1e-6)


TINY = ["data=synthetic", "data.subset=32", "views.crop_size=16", "trainer.batch_size=16", "device=cpu"]
TINY += ["trainer.progress=false", "eval.every=0", "trainer.num_workers=0", "trainer.precision=32"]
TINY += ["optim=adamw", "optim.weight_decay=0.05", "trainer.grad_clip=3.0", "trainer.epochs=2"]
TINY += ["trainer.checkpoint_every=1"]


@pytest.mark.parametrize("name", ["swav", "dino"])
def test_swav_dino_pretrain_skips_frozen_parameters_and_resumes_bitwise(name: str, tmp_path: Path):
    """`selfsup pretrain` with AdamW: after the frozen first epoch the parameter is its initial value (SwAV's
    renormalisation aside) with no optimizer state; after the second it has moved and AdamW counted only the
    second epoch's steps. A run resumed from the frozen epoch's checkpoint ends bitwise equal."""
    args = [*TINY, *METHODS[name], f"{FREEZE[name]}=1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["pretrain", *args, f"output_dir={straight}"]) == 0
    states = [load_checkpoint(straight / "checkpoints" / f"epoch-{e:04d}.pt") for e in range(3)]
    key = FROZEN_KEY[name]
    torch.testing.assert_close(states[1]["model"][key], states[0]["model"][key], rtol=0, atol=1e-6)
    if name == "dino":  # no renormalisation: bitwise
        assert torch.equal(states[1]["model"][key], states[0]["model"][key])
    assert (states[2]["model"][key] - states[1]["model"][key]).abs().max() > 1e-3

    method = build_model(load_config(args))
    optimizer, _ = training_optimizer(method, load_config(args))
    frozen = dict(method.named_parameters())[key]
    others = [p for n, p in method.named_parameters() if p.requires_grad and n != key]
    steps_per_epoch = states[1]["step"]
    optimizer.load_state_dict(states[1]["optimizer"])
    assert frozen not in optimizer.state
    assert {int(optimizer.state[p]["step"]) for p in others} == {steps_per_epoch}
    optimizer.load_state_dict(states[2]["optimizer"])
    assert int(optimizer.state[frozen]["step"]) == steps_per_epoch
    assert {int(optimizer.state[p]["step"]) for p in others} == {2 * steps_per_epoch}

    shutil.copytree(straight, resumed)
    for file in ("last.pt", "epoch-0002.pt"):
        (resumed / "checkpoints" / file).unlink()
    assert main(["pretrain", *args, f"output_dir={resumed}"]) == 0
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (straight, resumed))
    assert a["step"] == b["step"] == 2 * steps_per_epoch
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for index, sa in a["optimizer"]["state"].items():
        assert all(torch.equal(sa[k], b["optimizer"]["state"][index][k]) for k in sa), index
