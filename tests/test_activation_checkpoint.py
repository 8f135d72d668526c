"""Activation checkpointing changes memory, not training: same gradients, BatchNorm statistics and weights,
far fewer tensors saved for backward."""

from __future__ import annotations

from pathlib import Path

import torch

from selfsup.cli import main
from selfsup.config import load_config
from selfsup.methods.build import build_model
from selfsup.nets.activation_checkpoint import CheckpointedSequential, enable_activation_checkpointing
from selfsup.train.loop import measure_flops

SMALL = ["data=synthetic", "views.crop_size=16", "method.proj_hidden_dim=32", "method.proj_output_dim=16"]


def views() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]


def saved_bytes(model, inputs) -> tuple[torch.Tensor, int]:
    """The loss, and the bytes of the tensors autograd keeps for backward during the forward."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(inputs)["loss"]
    return loss, total


def test_checkpointed_backbone_trains_exactly_as_the_plain_one_with_a_fraction_of_the_saved_activations(one_thread):
    cfg = load_config(SMALL)
    torch.manual_seed(0)
    plain = build_model(cfg)
    torch.manual_seed(0)
    checkpointed = build_model(cfg)
    assert enable_activation_checkpointing(checkpointed.backbone) == 8  # ResNet-18: 4 stages x 2 blocks
    assert isinstance(checkpointed.backbone.layer1, CheckpointedSequential)
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()

    losses = {}
    saved = {}
    for name, model in (("plain", plain), ("checkpointed", checkpointed)):
        model.train()
        losses[name], saved[name] = saved_bytes(model, views())
        losses[name].backward()
    assert torch.equal(losses["plain"], losses["checkpointed"])
    assert saved["checkpointed"] < 0.4 * saved["plain"]
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
    # BatchNorm ran twice per block in the checkpointed model, but updated its statistics once.
    for (name, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert measure_flops(plain, cfg) == measure_flops(checkpointed, cfg)  # model FLOPs, not recomputation


def test_pretraining_with_activation_checkpointing_ends_with_the_same_weights(tmp_path: Path, one_thread):
    args = [
        "pretrain",
        *SMALL,
        "data.subset=32",
        "trainer.batch_size=16",
        "trainer.max_steps=2",
        "trainer.num_workers=0",
        "trainer.progress=false",
        "eval.every=0",
        "analysis.every=0",
        "device=cpu",
    ]
    states = {}
    for flag in ("false", "true"):
        run = tmp_path / flag
        assert main([*args, f"trainer.activation_checkpointing={flag}", f"output_dir={run}"]) == 0
        states[flag] = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    plain, checkpointed = states["false"], states["true"]
    assert plain["step"] == checkpointed["step"] == 2
    for key, value in plain["model"].items():
        assert torch.equal(value, checkpointed["model"][key]), key
    assert plain["cost"]["flops_per_image"] == checkpointed["cost"]["flops_per_image"]
