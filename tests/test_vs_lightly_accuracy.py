"""benchmarks/vs_lightly_accuracy.py's scoring, without lightly: the independent kNN against a brute-force
count, and the time-to-accuracy table (issue 20's long schedule) on hand-made records."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling results.py
    try:
        spec = importlib.util.spec_from_file_location("vs_lightly_accuracy", BENCHMARKS / "vs_lightly_accuracy.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("vs_lightly_accuracy", None)
        sys.path.remove(str(BENCHMARKS))


def test_weighted_knn_matches_a_brute_force_vote(script):
    torch.manual_seed(0)
    train = torch.nn.functional.normalize(torch.randn(300, 8), dim=1)
    test = torch.nn.functional.normalize(torch.randn(40, 8), dim=1)
    train_y, test_y = np.random.default_rng(0).integers(0, 3, 300), np.random.default_rng(1).integers(0, 3, 40)
    correct = 0
    for query, label in zip(test, test_y, strict=True):
        sim = train @ query
        top = sim.argsort(descending=True)[:200]
        votes = np.zeros(3)
        for i in top.tolist():
            votes[train_y[i]] += float(torch.exp(sim[i] / 0.1))
        correct += int(votes.argmax() == label)
    assert script.weighted_knn(train, train_y, test, test_y) == pytest.approx(100.0 * correct / 40)


def record(side: str, knn: float, seconds: float, curve: list[tuple[float, float]]) -> dict:
    points = [{"epoch": 10 * (i + 1), "seconds": s, "knn": k} for i, (s, k) in enumerate(curve)]
    return {"side": side, "method": "simclr", "seed": 0, "epochs": 200, "subset": None, "batch": 512,
            "knn": knn, "loop_seconds": seconds, "curve": points}  # fmt: skip


def test_time_to_accuracy_is_selfsups_first_snapshot_at_lightlys_final_knn(script):
    lightly = record("lightly", 80.0, 300.0, [(150.0, 70.0), (300.0, 80.0)])
    selfsup = record("selfsup", 84.0, 120.0, [(30.0, 75.0), (60.0, 80.5), (90.0, 79.0), (120.0, 84.0)])
    assert script.time_to_reach(selfsup["curve"], 80.0) == 60.0
    assert script.time_to_reach(selfsup["curve"], 90.0) is None
    (row,) = [line for line in script.time_to_accuracy_rows([lightly, selfsup]) if line.startswith("| cifar10")]
    assert row == "| cifar10 | simclr | 0 | 200 | None | 512 | 80.00 in 300 s | 84.00 in 120 s | 60 s | 0.20 |"
    slow = record("selfsup", 79.0, 120.0, [(60.0, 75.0), (120.0, 79.0)])
    assert "not reached" in script.time_to_accuracy_rows([lightly, slow])[-1]
    assert script.time_to_accuracy_rows([lightly]) == []  # one side alone: nothing to compare
