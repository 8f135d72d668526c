"""benchmarks/vs_lightly_accuracy.py's scoring, without lightly: the independent kNN against a brute-force
count, the difference table's 'no evidence at this budget' rows and the time-to-accuracy table (issue 20's long
schedule) on hand-made records; with lightly installed, that its side is the CIFAR-10 benchmark's recipe."""

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
            "knn": knn, "knn_random_init": 10.0, "loop_seconds": seconds, "curve": points}  # fmt: skip


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


def scored(side: str, knn: float, random_init: float, method: str = "simclr", tag: str = "") -> dict:
    return {"side": side, "tag": tag, "method": method, "seed": 0, "epochs": 8, "subset": 2000, "batch": 128,
            "knn": knn, "knn_random_init": random_init}  # fmt: skip


def test_a_side_at_or_below_its_random_init_is_no_evidence_not_a_difference(script):
    records = [
        scored("selfsup", 40.0, 30.0, "simclr"),
        scored("lightly", 36.5, 30.0, "simclr"),
        scored("selfsup", 35.0, 30.0, "byol"),
        scored("lightly", 29.0, 31.0, "byol"),  # below its own init
        scored("selfsup", 31.0, 31.0, "byol", tag="lr"),  # at its own init
        scored("selfsup", 45.0, 30.0, "vicreg"),  # no lightly side: no row
    ]
    rows = [line for line in script.difference_rows(records) if line.startswith("| cifar10")]
    assert rows == [
        "| cifar10 | byol | selfsup | 8 | 2000 | 128 | 35.00 | 29.00 | no evidence at this budget |",
        "| cifar10 | byol | selfsup (lr) | 8 | 2000 | 128 | 31.00 | 29.00 | no evidence at this budget |",
        "| cifar10 | simclr | selfsup | 8 | 2000 | 128 | 40.00 | 36.50 | +3.50 |",
    ]
    assert script.difference_rows(records[-1:]) == []


def test_time_to_accuracy_row_without_evidence_gives_no_share(script):
    lightly = record("lightly", 80.0, 300.0, [(150.0, 70.0), (300.0, 80.0)]) | {"knn_random_init": 85.0}
    selfsup = record("selfsup", 84.0, 120.0, [(60.0, 80.5), (120.0, 84.0)])
    assert script.time_to_accuracy_rows([lightly, selfsup])[-1].endswith("| - | no evidence at this budget |")


def spec(obj: object) -> object:
    """A transform's classes and arguments, recursively (to compare two transforms by value)."""
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, list | tuple):
        return [spec(o) for o in obj]
    if isinstance(obj, dict):
        return {k: spec(v) for k, v in obj.items()}
    if hasattr(obj, "__dict__"):
        return type(obj).__module__, type(obj).__qualname__, spec(vars(obj))
    return obj


def test_lightly_side_is_the_cifar10_benchmarks_views_split_bn_and_refusals(script):
    pytest.importorskip("lightly", reason="lightly is not installed")
    from lightly.models.batchnorm import SplitBatchNorm
    from lightly.transforms import (
        BYOLTransform,
        BYOLView1Transform,
        BYOLView2Transform,
        DINOTransform,
        SimCLRTransform,
        SimSiamTransform,
        SwaVTransform,
    )

    # as lightly's docs/source/getting_started/benchmarks/cifar10_benchmark.py writes them
    byol = BYOLTransform(
        view_1_transform=BYOLView1Transform(input_size=32, gaussian_blur=0.0),
        view_2_transform=BYOLView2Transform(input_size=32, gaussian_blur=0.0),
    )
    simclr = SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
    expected = {
        "simclr": simclr,
        "moco": simclr,
        "byol": byol,
        "barlow": byol,
        "simsiam": SimSiamTransform(input_size=32, gaussian_blur=0.0),
        "swav": SwaVTransform(
            crop_sizes=[32],
            crop_counts=[2],
            crop_min_scales=[0.14],
            crop_max_scales=[1.0],
            cj_strength=0.5,
            gaussian_blur=0,
        ),  # fmt: skip
        "dino": DINOTransform(global_crop_size=32, n_local_views=0, cj_strength=0.5, gaussian_blur=(0, 0, 0)),
    }
    assert set(expected) == set(script.LIGHTLY_METHODS)
    for method, reference in expected.items():
        assert spec(script.lightly_transform(method, 32)) == spec(reference), method
    assert spec(script.lightly_transform("byol", 32)) != spec(simclr)  # the comparison sees a different recipe

    def split_norms(net: torch.nn.Module) -> int:
        return sum(isinstance(m, SplitBatchNorm) and m.num_splits == 8 for m in net.modules())

    assert split_norms(script.lightly_backbone("moco")) > 0 and split_norms(script.lightly_backbone("simclr")) == 0
    moco = script.LightlyModel("moco", batch=16, epochs=1)
    assert split_norms(moco.backbone) == split_norms(moco.backbone_m) > 0
    for method, batch in (("vicreg", 128), ("moco", 12)):
        with pytest.raises(SystemExit):
            script.LightlyModel(method, batch=batch, epochs=1)
