"""Every registered method through the CLI on synthetic data (multi-crop methods with 2 global + 2 local
crops) trains, logs the collapse monitors that tests/test_learning.py bounds, and resumes bitwise: a run
stopped after its first epoch and resumed from that checkpoint ends with the same weights, buffers (momentum
encoders, queues, centres, analytic predictors) and optimizer state as the run that went on. Whatever a
method keeps outside its state dict, or draws from an RNG the checkpoint does not hold, fails here. The
method's `tiny` and `resume` overrides come from its test entry (tests/method_specs.py)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.methods.base import METHODS
from selfsup.runs.checkpoint import load_checkpoint
from tests.fault.cli_errors import overriding
from tests.method_specs import opted_in, spec

# 24-px crops for the learning recipes' small backbones (a 64-d CNN; MAE's small ViT), which keep each run's
# four checkpoints small: a ResNet-18's made this test four times slower.
RUN = ["data=synthetic", "data.subset=32", "views.crop_size=24", "trainer.batch_size=16", "device=cpu"]
RUN += ["trainer.progress=false", "eval.every=0", "analysis.every=0", "trainer.num_workers=0"]
RUN += ["trainer.precision=32", "trainer.epochs=2", "trainer.checkpoint_every=1", "trainer.log_every=1"]
MULTI_CROP = ["views.local_crops=2", "views.local_crop_size=8"]


def equal_states(a: dict, b: dict) -> list[str]:
    """The keys of two state dicts (tensors, nested) that differ; [] when bitwise equal."""
    if a.keys() != b.keys():
        return [f"keys {sorted(set(a) ^ set(b))}"]
    differ = []
    for key, value in a.items():
        if isinstance(value, dict):
            differ += [f"{key}.{k}" for k in equal_states(value, b[key])]
        elif isinstance(value, torch.Tensor):
            differ += [] if torch.equal(value, b[key]) else [str(key)]
        elif value != b[key]:
            differ.append(str(key))
    return differ


@pytest.mark.parametrize("name", METHODS.names())
def test_a_method_resumed_after_its_first_epoch_ends_bitwise_equal(name: str, tmp_path: Path):
    entry = spec(name)
    tiny = overriding([*entry.learning.backbone, *entry.tiny], *opted_in(entry.resume))
    args = ["pretrain", *RUN, f"method={name}", *tiny]
    args += MULTI_CROP if METHODS.get(name).multi_crop else []
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*args, f"output_dir={straight}"]) == 0
    shutil.copytree(straight, resumed)
    for file in ("last.pt", "epoch-0002.pt"):
        (resumed / "checkpoints" / file).unlink()
    assert main([*args, f"output_dir={resumed}"]) == 0
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (straight, resumed))
    first = load_checkpoint(straight / "checkpoints" / "epoch-0001.pt")
    assert a["step"] == b["step"] == 2 * first["step"] > 0
    assert equal_states(a["model"], b["model"]) == []
    assert equal_states(a["optimizer"]["state"], b["optimizer"]["state"]) == []
    assert any(not torch.equal(first["model"][k], a["model"][k]) for k in a["model"])  # epoch 2 trained
    assert all(torch.isfinite(v).all() for v in a["model"].values() if v.is_floating_point())
    steps = [r for r in map(json.loads, (straight / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r]
    for monitor, _, _ in entry.learning.monitors:
        values = [r.get(f"train/{monitor}") for r in steps]
        assert len(values) == a["step"] and all(v is not None and math.isfinite(v) for v in values), monitor
