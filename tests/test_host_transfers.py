"""No host<->device transfer in the training step (issue 7), checked on CPU.

Every ATen op that on a GPU reads device memory on the host or copies host memory to the device is counted
by the selfsup line that made it, over a run of 2 steps and one of 4 with the same start, log and save. A
line whose count grows with the steps transfers in every step, and makes a GPU wait for Python once a step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selfsup.config import load_config
from selfsup.losses import nt_xent
from selfsup.methods.base import METHODS
from selfsup.train.host_transfers import HostTransferRecorder
from selfsup.train.loop import pretrain
from tests.method_specs import spec


def transfers(tmp_path: Path, method: str, steps: int) -> dict[str, int]:
    cfg = load_config(
        [
            "data=synthetic",
            "data.subset=64",  # 8 steps of 8 per epoch: both runs stay in epoch 0
            "views.crop_size=8",
            "trainer.batch_size=8",
            "optim.final_lr=0.0",  # SGD's 1e-3 is above SimSiam's peak at batch 8 (0.03 x 8/256), refused
            "device=cpu",
            f"method={method}",
            *spec(method).tiny,
            f"trainer.max_steps={steps}",
            "trainer.epochs=1",
            "trainer.log_every=100",  # one log, at the end
            "trainer.progress=false",
            "eval.every=0",
            "analysis.every=0",
            f"output_dir={tmp_path / str(steps)}",
        ]
    )
    with HostTransferRecorder() as recorder:
        pretrain(cfg)
    return dict(recorder.counts)


@pytest.mark.parametrize("method", METHODS.names())
def test_the_training_step_makes_no_host_transfer(tmp_path: Path, method: str):
    short, long = transfers(tmp_path, method, 2), transfers(tmp_path, method, 4)
    assert short, "the recorder saw none of the start's transfers: it is not recording"
    per_step = {line: (short.get(line, 0), n) for line, n in long.items() if n > short.get(line, 0)}
    assert not per_step, f"transfers that grow with the steps (2 steps, 4 steps): {per_step}"


def test_the_recorder_sees_a_scalar_written_by_index_and_a_value_read():
    logits = torch.zeros(4, 4)
    with HostTransferRecorder() as recorder:
        logits[torch.arange(4), torch.arange(4)] = float("-inf")
        float(logits.sum())
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), 0.5)
    ops = sorted(line.split()[0] for line in recorder.counts)
    assert ops == ["aten::_local_scalar_dense", "aten::lift_fresh"]  # and none from nt_xent
