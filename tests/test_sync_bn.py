"""Scale-out on CPU (gloo): BatchNorm over the global batch, and a 2-process pretraining run that ends with the
weights of a 1-process run on the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from selfsup.nets.sync_bn import GlobalBatchNorm, convert_sync_batchnorm

WORLD, LOCAL = 2, 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    net.append(nn.BatchNorm1d(5))
    with torch.no_grad():  # non-trivial affine parameters
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net


def global_batch() -> torch.Tensor:
    return torch.randn(WORLD * LOCAL, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 3 + 1


def loss_weights() -> torch.Tensor:
    """A fixed random readout: unlike sum(y^2), which BatchNorm makes nearly constant, its gradients are O(1)."""
    return torch.randn(WORLD * LOCAL, 5, generator=torch.Generator().manual_seed(2))


def _bn_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        net = convert_sync_batchnorm(make_net(), "cpu")
        x = global_batch()[rank * LOCAL : (rank + 1) * LOCAL]
        y = net(x)
        # The loss of the global batch is the sum of the per-process losses; its gradient wrt each
        # parameter is the sum of the per-process gradients.
        (y * loss_weights()[rank * LOCAL : (rank + 1) * LOCAL]).sum().backward()
        for p in net.parameters():
            dist.all_reduce(p.grad)
        if rank == 0:
            torch.save({"y": y.detach(), "grads": [p.grad for p in net.parameters()], "state": net.state_dict()}, out)
    finally:
        dist.destroy_process_group()


def test_global_batchnorm_on_two_processes_equals_batchnorm_on_the_whole_batch(tmp_path: Path):
    out = tmp_path / "bn.pt"
    mp.spawn(_bn_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    got = torch.load(out, weights_only=True)

    net = make_net()
    y = net(global_batch())
    (y * loss_weights()).sum().backward()
    torch.testing.assert_close(got["y"], y[:LOCAL].detach(), rtol=1e-4, atol=1e-5)
    assert max(p.grad.abs().max() for p in net.parameters()) > 0.1
    for g, p in zip(got["grads"], net.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5)
    for key, value in net.state_dict().items():  # running statistics (unbiased var), batch counts
        torch.testing.assert_close(got["state"][key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_conversion_keeps_parameters_and_state_dict_keys_and_is_plain_batchnorm_on_one_process():
    net = make_net()
    converted = convert_sync_batchnorm(make_net(), "cpu")
    assert isinstance(converted[1], GlobalBatchNorm) and isinstance(converted[5], GlobalBatchNorm)
    assert converted.state_dict().keys() == net.state_dict().keys()
    x = global_batch()
    torch.testing.assert_close(converted(x), net(x))  # no process group: ordinary batch statistics
    torch.testing.assert_close(converted[1].running_mean, net[1].running_mean)


PRETRAIN = [
    "pretrain",
    "data=synthetic",
    "data.subset=64",
    "views.crop_size=16",
    # Views that are a function of the image alone, so both runs see the same pixels whatever their RNG.
    "views.crop_scale=[1.0,1.0]",
    "views.flip_p=0",
    "views.jitter_p=0",
    "views.grayscale_p=0",
    "method.proj_hidden_dim=32",
    "method.proj_output_dim=16",
    "trainer.batch_size=32",
    "trainer.epochs=2",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.log_every=1",
    "eval.every=0",
    "analysis.every=0",
    "device=cpu",
    # fp32: on a CPU with native bf16 the default is bf16 autocast, whose rounding of 16- and 32-image
    # convolutions differs by more than any tolerance that would still test the reduction
    "trainer.precision=32",
    # identity blocks at init keep 4 steps well-conditioned enough for rtol 1e-3. With full-depth random
    # blocks the two runs differ by up to 1.7% of a tensor's largest value after 4 steps, but so do two
    # one-process runs that differ only in their thread count (1.5%): float32 reduction order, amplified,
    # not a sync-BN difference (measured 2026-12-02, benchmarks/RESULTS.md "sync BN with full-depth init").
    "backbone.zero_init_residual=true",
]


def test_two_process_run_ends_with_the_weights_of_a_one_process_run(tmp_path: Path):
    """SimCLR couples the batch twice, through negatives gathered across processes and through BatchNorm;
    with sync_batchnorm both equal a single process's, so 4 SGD steps later the weights agree. Also what a
    2-process CLI run logs and records."""
    runs = {}
    for devices in (1, 2):
        run = tmp_path / f"p{devices}"
        proc = subprocess.run(
            [sys.executable, "-m", "selfsup.cli", *PRETRAIN, f"trainer.devices={devices}", f"output_dir={run}"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[devices] = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert "SyncBatchNorm" in proc.stderr and "2 process(es) x 16 per batch" in proc.stderr
    one, two = runs[1], runs[2]
    assert one["step"] == two["step"] == 4
    assert (two["cost"]["devices"], two["cost"]["images_seen"]) == (2, 128)
    for devices in (1, 2):
        records = [json.loads(line) for line in (tmp_path / f"p{devices}" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4]
    start = torch.load(tmp_path / "p1" / "checkpoints" / "epoch-0000.pt", weights_only=True)["model"]
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-3, atol=1e-5, msg=key)
    moved = max((one["model"][k].float() - start[k].float()).abs().max() for k in start if start[k].is_floating_point())
    assert moved > 1e-3  # the weights did train, so agreeing is not trivial
