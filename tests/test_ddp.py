"""Data parallelism on CPU (gloo): two processes give the loss and gradients of one process on the global batch.

Without SyncBatchNorm each process normalises its own half, so the one-process reference runs the network
on each half separately (exactly what the two processes compute) and the loss over the whole batch."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from selfsup.dist import gather_with_grad
from selfsup.losses import nt_xent
from selfsup.methods.base import METHODS, Schedule
from selfsup.methods.simclr import SimCLR
from selfsup.nets.backbones import build_backbone
from tests.fault.cli_errors import overriding
from tests.method_specs import OptOut, spec

WORLD, LOCAL, SIZE = 2, 4, 16


def make_model() -> SimCLR:
    torch.manual_seed(0)
    backbone, dim = build_backbone("resnet18", cifar_stem=True)
    return SimCLR(backbone, dim, temperature=0.5, proj_hidden_dim=64, proj_output_dim=16)


def global_views() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(WORLD * LOCAL, 3, SIZE, SIZE, generator=g) for _ in range(2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gloo_group(rank: int, port: int):
    """This spawned process as rank `rank` of a WORLD-process gloo group on localhost."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _worker(rank: int, port: int, out: str) -> None:
    with gloo_group(rank, port):
        model = DistributedDataParallel(make_model())
        views = [v[rank * LOCAL : (rank + 1) * LOCAL] for v in global_views()]
        loss = model(views, schedule=Schedule(0, 10))["loss"]
        loss.backward()
        gathered = gather_with_grad(torch.full((LOCAL, 1), float(rank)))
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        if rank == 0:
            grads = {n: p.grad for n, p in model.module.named_parameters()}
            torch.save({"loss": mean_loss / WORLD, "grads": grads, "gathered": gathered}, out)


def test_two_processes_match_one_process_on_the_global_batch(tmp_path: Path):
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    ddp = torch.load(out, weights_only=True)
    assert torch.equal(ddp["gathered"].flatten(), torch.tensor([0.0] * LOCAL + [1.0] * LOCAL))

    model = make_model()
    views = global_views()
    shards = [
        model.projector(model.backbone(torch.cat([v[r * LOCAL : (r + 1) * LOCAL] for v in views])))
        for r in range(WORLD)
    ]
    z1 = torch.cat([s[:LOCAL] for s in shards])
    z2 = torch.cat([s[LOCAL:] for s in shards])
    reference = nt_xent(z1, z2, 0.5)  # the loss over the global batch of 8 images
    reference.backward()
    torch.testing.assert_close(ddp["loss"], reference.detach(), rtol=1e-5, atol=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(ddp["grads"][name], param.grad, rtol=1e-4, atol=1e-6, msg=name)


# Every method, two processes vs one: with BatchNorm in eval mode the network is a per-sample function,
# so whatever couples samples (negatives gathered across processes, batch statistics of the loss, the
# MoCo queue) is the only thing that can make the two runs differ.
def two_process_methods() -> dict[str, list[str]]:
    """Each method's overrides for this test (its entry's tiny heads and two_processes), but those that opt out
    (a loss that couples no images of a batch: its reason is in the method's entry)."""
    entries = {name: spec(name) for name in METHODS.names()}
    taken = {n: e for n, e in entries.items() if not isinstance(e.two_processes, OptOut)}
    return {n: overriding(e.tiny, *e.two_processes) for n, e in taken.items()}


METHOD_HEADS = two_process_methods()


# Buffers written from the whole batch: they must end up equal too.
COUPLED_STATE = ("queue", "center", "predictor.corr", "predictor.weight")


def build_eval_mode(name: str):
    from selfsup.config import load_config
    from selfsup.methods.build import build_model
    from selfsup.nets.predictors import LinearPredictor

    torch.manual_seed(0)
    model = build_model(load_config([f"method={name}", "views.crop_size=8", *METHOD_HEADS[name]]))
    model.eval()
    model.training = True  # the method itself trains: its queue and centre move only in training mode
    for module in model.modules():  # per-sample in training mode too (no BatchNorm); it updates F there
        if isinstance(module, LinearPredictor):
            module.train()
    return model


def method_step(model, views) -> dict:
    loss = model(views, schedule=Schedule(0, 10, 1))["loss"]
    loss.backward()
    module = getattr(model, "module", model)
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.after_optimizer_step(0, 10)
    state = {k: v.clone() for k, v in module.state_dict().items() if k in COUPLED_STATE}
    return {"loss": loss.detach(), "grads": grads, "state": state}


def _methods_worker(rank: int, port: int, out: str) -> None:
    with gloo_group(rank, port):
        results = {}
        for name in METHOD_HEADS:
            model = DistributedDataParallel(build_eval_mode(name))
            views = [v[rank * LOCAL : (rank + 1) * LOCAL, :, :8, :8] for v in global_views()]
            result = method_step(model, views)
            dist.all_reduce(result["loss"])
            result["loss"] /= WORLD
            results[name] = result
        if rank == 0:
            torch.save(results, out)


def test_every_method_two_processes_match_one_process(tmp_path: Path):
    out = tmp_path / "methods.pt"
    mp.spawn(_methods_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    ddp = torch.load(out, weights_only=True)
    for name in METHOD_HEADS:
        ref = method_step(build_eval_mode(name), [v[:, :, :8, :8] for v in global_views()])
        torch.testing.assert_close(ddp[name]["loss"], ref["loss"], rtol=1e-5, atol=1e-6, msg=name)
        assert ddp[name]["grads"].keys() == ref["grads"].keys()
        # Gradients that are zero in exact arithmetic (the last bias under Barlow's batch standardisation)
        # carry float32 noise, so the absolute tolerance is relative to the model's largest gradient.
        scale = max(g.abs().max().item() for g in ref["grads"].values())
        for key, grad in ref["grads"].items():
            torch.testing.assert_close(ddp[name]["grads"][key], grad, rtol=1e-4, atol=1e-4 * scale, msg=f"{name} {key}")
        # MoCo's queue (keys of both processes in global order), DINO's center, DirectPred's F and predictor,
        # each moved by the step
        assert ddp[name]["state"].keys() == ref["state"].keys()
        initial = build_eval_mode(name).state_dict()
        assert all(not torch.equal(value, initial[key]) for key, value in ref["state"].items() if value.numel())
        for key, value in ref["state"].items():
            torch.testing.assert_close(ddp[name]["state"][key], value, rtol=1e-4, atol=1e-6, msg=f"{name} {key}")
