"""Training-dynamics measures on matrices and embeddings with known answers, and their records in a run."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from selfsup.analysis.dynamics import (
    alignment,
    asymmetry,
    commutator,
    dynamics_record,
    effective_rank,
    eigenspace_alignment,
    eigenvector_cosines,
    embedding_std,
    predictor_jacobian,
    uniformity,
)
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.methods.build import build_model
from tests.fault.cli_errors import overriding


def random_rotation(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_collapsed_embeddings_have_rank_one_and_zero_spread():
    z = torch.tensor([1.0, -2.0, 0.5, 3.0]).repeat(64, 1)
    assert effective_rank(z) == pytest.approx(1.0)
    assert embedding_std(z) == pytest.approx(0.0, abs=1e-12)
    assert uniformity(z) == pytest.approx(0.0, abs=1e-12)  # every pair at distance 0: log E exp(0)
    assert alignment(z, z) == pytest.approx(0.0)


def test_effective_rank_of_known_spectra():
    u, v = random_rotation(8, 0), random_rotation(8, 1)
    equal = u @ torch.diag(torch.full((8,), 3.0, dtype=torch.float64)) @ v.T
    assert effective_rank(equal) == pytest.approx(8.0)
    s = torch.tensor([4.0, 2.0, 1.0, 1.0, 0, 0, 0, 0], dtype=torch.float64)
    p = s[:4] / s.sum()
    assert effective_rank(u @ torch.diag(s) @ v.T) == pytest.approx(math.exp(-(p * p.log()).sum().item()))


def test_spread_alignment_and_uniformity_against_direct_formulas():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(50, 16, generator=g), torch.randn(50, 16, generator=g)
    n1, n2 = z1 / z1.norm(dim=1, keepdim=True), z2 / z2.norm(dim=1, keepdim=True)
    assert alignment(z1, z2) == pytest.approx(((n1 - n2) ** 2).sum(1).mean().item(), rel=1e-5)
    pairs = [((n1[i] - n1[j]) ** 2).sum() for i in range(50) for j in range(i + 1, 50)]
    assert uniformity(z1) == pytest.approx(torch.stack(pairs).mul(-2).exp().mean().log().item(), rel=1e-5)
    assert embedding_std(z1) == pytest.approx(n1.std(0).mean().item(), rel=1e-5)
    # Gaussian directions are spread on the sphere: per-dimension std near 1/sqrt(d).
    assert embedding_std(torch.randn(4000, 16, generator=g)) == pytest.approx(1 / 4, rel=0.05)


def test_asymmetry_of_known_matrices():
    assert asymmetry(torch.tensor([[2.0, 1.0], [1.0, 3.0]])) == 0.0
    # [[1, 1], [0, 1]]: ||W - W^T|| = sqrt(2), ||W|| = sqrt(3)
    assert asymmetry(torch.tensor([[1.0, 1.0], [0.0, 1.0]])) == pytest.approx(math.sqrt(2 / 3))
    assert asymmetry(torch.tensor([[0.0, 1.0], [-1.0, 0.0]])) == pytest.approx(2.0)  # antisymmetric


def test_a_predictor_sharing_the_eigenvectors_of_F_is_aligned_and_commutes():
    u = random_rotation(6, 3)
    corr = u @ torch.diag(torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)) @ u.T
    w = u @ torch.diag(torch.tensor([1.0, 0.9, 0.7, 0.5, 0.4, 0.2], dtype=torch.float64)) @ u.T
    assert commutator(w, corr) == pytest.approx(0.0, abs=1e-12)
    assert eigenspace_alignment(w, corr) == pytest.approx(1.0)
    cosines, values = eigenvector_cosines(w, corr)
    assert torch.allclose(cosines, torch.ones(6, dtype=torch.float64))
    assert torch.allclose(values, torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64))


def test_a_predictor_in_another_basis_is_misaligned_by_a_known_amount():
    # F = diag(2, 1); W rotates by 90 degrees: W e1 = e2, so cos(W u, u) = 0 for both eigenvectors.
    corr = torch.diag(torch.tensor([2.0, 1.0]))
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    assert eigenspace_alignment(rotation, corr) == pytest.approx(0.0)
    # W F - F W = [[0, 1], [1, 0]]: sqrt(2) / (||W|| ||F||) = sqrt(2) / (sqrt(2) sqrt(5))
    assert commutator(rotation, corr) == pytest.approx(1 / math.sqrt(5))
    # A 45-degree mix of the eigenvectors: W = [[1, 1], [1, 1]] maps e1 to (1, 1): cosine 1/sqrt(2).
    assert eigenspace_alignment(torch.ones(2, 2), corr) == pytest.approx(1 / math.sqrt(2))


def test_dynamics_record_of_a_linear_predictor_method_and_bn_statistics_untouched():
    cfg = load_config(["method=directpred", "data=synthetic", "views.crop_size=16"])
    method = build_model(cfg)
    method.train()
    views = [torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)]
    method(views)  # one forward: F is initialised from this batch
    method.predictor.after_optimizer_step(0)
    running = method.backbone.bn1.running_mean.clone()
    record = dynamics_record(method, views)
    assert torch.equal(method.backbone.bn1.running_mean, running) and method.training
    d = cfg.method.proj_output_dim
    assert len(record["dynamics/predictor_eigenvalues"]) == d == len(record["dynamics/correlation_eigenvalues"])
    # DirectPred sets W from F's eigenvectors: aligned, commuting and symmetric by construction.
    assert record["dynamics/eigenspace_alignment"] == pytest.approx(1.0, abs=1e-4)
    assert record["dynamics/commutator"] == pytest.approx(0.0, abs=1e-4)
    assert record["dynamics/predictor_asymmetry"] == pytest.approx(0.0, abs=1e-6)
    assert 1.0 <= record["dynamics/effective_rank"] <= 16


def test_the_jacobian_of_a_predictor_matches_finite_differences():
    """The linearisation of an MLP predictor (Linear-BN-ReLU-Linear in eval mode) at the batch mean, against
    central differences in float64; for a linear layer it is the weight itself."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 6).double()
    z = torch.randn(32, 6, dtype=torch.float64)
    torch.testing.assert_close(predictor_jacobian(linear, z), linear.weight.detach(), atol=1e-12, rtol=0)

    cfg = load_config(
        ["method=byol", "views.crop_size=16", "method.proj_output_dim=6", "method.predictor.hidden_dim=8"]
    )
    mlp = build_model(cfg).predictor.eval()
    with torch.no_grad():  # BN running statistics away from their initial 0 / 1, so that eval mode matters
        mlp[1].running_mean.uniform_(-0.5, 0.5)
        mlp[1].running_var.uniform_(0.5, 2.0)
    centre, h = z.mean(0), 1e-5
    mlp64 = mlp.double()
    columns = []
    for i in range(6):
        step = torch.zeros(6, dtype=torch.float64)
        step[i] = h
        columns.append((mlp64((centre + step)[None]) - mlp64((centre - step)[None]))[0] / (2 * h))
    reference = torch.stack(columns, dim=1)
    with torch.no_grad():  # as dynamics_record calls it
        jacobian = predictor_jacobian(mlp64, z)
    torch.testing.assert_close(jacobian, reference, atol=1e-6, rtol=1e-6)


def test_dynamics_record_of_an_mlp_predictor_method_linearises_it():
    cfg = load_config(["method=byol", "views.crop_size=16", "method.proj_hidden_dim=32", "method.proj_output_dim=8"])
    cfg.method.predictor.hidden_dim = 16
    method = build_model(cfg)
    method.train()
    views = [torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)]
    method(views)
    running = method.predictor[1].running_mean.clone()
    record = dynamics_record(method, views)
    assert torch.equal(method.predictor[1].running_mean, running) and method.training
    for key in ("predictor_eigenvalues", "correlation_eigenvalues", "eigenvector_cosines"):
        assert len(record[f"dynamics/{key}"]) == 8
    assert all(0 <= c <= 1 + 1e-9 for c in record["dynamics/eigenvector_cosines"])
    assert min(record["dynamics/correlation_eigenvalues"]) > -1e-6  # F = E[z z^T] is PSD
    assert 0 < record["dynamics/predictor_asymmetry"]  # an MLP's Jacobian is not symmetric


def test_pretraining_logs_dynamics_every_n_steps(tmp_path: Path):
    run = tmp_path / "run"
    args = [
        "pretrain",
        "method=simsiam",
        "method.predictor.type=linear",
        "data=synthetic",
        "data.subset=64",
        "views.crop_size=16",
        "trainer.batch_size=16",
        "trainer.epochs=1",
        "trainer.num_workers=0",
        "trainer.progress=false",
        "eval.every=0",
        "analysis.every=2",
        "device=cpu",
        f"output_dir={run}",
    ]
    assert main(args) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    dynamics = [r for r in records if "dynamics/effective_rank" in r]
    assert [r["step"] for r in dynamics] == [2, 4]
    assert all(0 <= r["dynamics/predictor_asymmetry"] for r in dynamics)
    assert main([*overriding(args[:-1], "analysis.every=-1"), f"output_dir={tmp_path / 'bad'}"]) == 2


def test_the_dynamics_analysis_is_left_out_of_the_cost(tmp_path: Path, monkeypatch):
    """The analysis runs inside the training loop but is not training: its time stays out of device_seconds."""
    import selfsup.train.loop as loop

    def slow_record(method: object, views: object) -> dict[str, float]:
        time.sleep(2.0)
        return {}

    monkeypatch.setattr(loop, "dynamics_record", slow_record)
    run = tmp_path / "run"
    args = ["pretrain", "data=synthetic", "data.subset=32", "views.crop_size=16", "method.proj_hidden_dim=32"]
    args += ["method.proj_output_dim=16", "trainer.batch_size=16", "trainer.epochs=1", "trainer.num_workers=0"]
    args += ["trainer.progress=false", "eval.every=0", "analysis.every=1", "device=cpu", f"output_dir={run}"]
    assert main(args) == 0
    cost = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["cost"]
    assert 0 < cost["device_seconds"] < 4.0  # two steps, each followed by 2 s of analysis
