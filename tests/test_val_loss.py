"""eval.val_loss_every: the pretraining loss on held-out images, with no effect on training."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.cli import main
from selfsup.runs.checkpoint import load_checkpoint

MOCO = ["pretrain", "method=moco", "data=synthetic", "data.subset=64", "views.crop_size=16", "trainer.batch_size=32",
        "trainer.epochs=2", "trainer.progress=false", "eval.every=0", "trainer.num_workers=0",
        "method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.queue_size=64"]  # fmt: skip


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_held_out_loss_is_logged_every_n_epochs_and_leaves_training_unchanged(tmp_path, capsys):
    with_val, without = tmp_path / "with", tmp_path / "without"
    assert main([*MOCO, "eval.val_loss_every=1", f"output_dir={with_val}"]) == 0
    assert main([*MOCO, f"output_dir={without}"]) == 0
    assert "epoch 1: held-out loss" in capsys.readouterr().err
    losses = {r["epoch"]: r["val/loss"] for r in records(with_val) if "val/loss" in r}
    assert sorted(losses) == [1, 2] and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    # InfoNCE with 64 negatives plus the positive: near log(65) for weights this young, never 0.
    assert all(0.5 * torch.log(torch.tensor(65.0)) < v < 2 * torch.log(torch.tensor(65.0)) for v in losses.values())
    assert not any("val/loss" in r for r in records(without))
    # The queue the evaluation's forwards pushed into, the BatchNorm statistics and the RNG are all restored:
    # the two runs end with the same weights and buffers, bit for bit.
    a = load_checkpoint(with_val / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(without / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("crop_on_device, workers", [("auto", 0), ("false", 1)])
def test_evaluating_twice_gives_the_same_loss_and_changes_nothing(crop_on_device, workers):
    from lightning_fabric import Fabric

    from selfsup.config import load_config
    from selfsup.data.batched_colour import BatchAugment
    from selfsup.data.loader import DeviceCropLoader
    from selfsup.data.views import split_mean_std
    from selfsup.methods.base import Schedule
    from selfsup.methods.build import build_model
    from selfsup.train.val_loss import ValidationLoss

    cfg = load_config(
        [*MOCO[1:], "eval.val_loss_every=1", f"data.crop_on_device={crop_on_device}", f"trainer.num_workers={workers}"]
    )
    fabric = Fabric(accelerator="cpu", devices=1)
    augment = BatchAugment(cfg.views, *split_mean_std(cfg.data, cfg.views))
    validation = ValidationLoss(cfg, fabric, augment, local_batch=32, channels_last=False)
    # the training crop path: batched on the device for this in-memory dataset unless switched off
    assert isinstance(validation.loader, DeviceCropLoader) == (crop_on_device == "auto")
    method = build_model(cfg)
    method.train()
    buffers = {k: v.clone() for k, v in method.named_buffers()}
    rng = torch.get_rng_state()
    first, second = validation(method, method, Schedule(0, 10)), validation(method, method, Schedule(0, 10))
    assert first == second and torch.isfinite(torch.tensor(first))
    assert method.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, buffers[k]) for k, v in method.named_buffers())


def test_a_missing_or_too_small_held_out_split_is_a_one_line_error(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*MOCO, "eval.val_loss_every=1", "data.test_split=null", f"output_dir={run}"]) == 2
    assert "eval.val_loss_every needs a held-out split" in capsys.readouterr().err
    # synthetic test has 500 images: fewer than one batch of 512
    args = [a for a in MOCO if not a.startswith(("data.subset", "trainer.batch_size"))]
    assert main([*args, "trainer.batch_size=512", "eval.val_loss_every=1", f"output_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert "the 500 images of synthetic test are fewer than one global batch (512)" in err and "Traceback" not in err
    assert not run.exists()
