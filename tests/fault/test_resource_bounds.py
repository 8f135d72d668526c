"""Issue 21 item 4: crop and batch sizes whose step cannot fit are refused in one line before anything that
large is allocated (views.crop_size=4096 on 32 px images used to be killed by the host's OOM killer, 100000
gave a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.errors import UserError
from selfsup.nets.backbones import build_backbone
from selfsup.train.guards import check_step_memory, saved_activation_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


def saved_bytes(net: torch.nn.Module, images: torch.Tensor) -> int:
    """What autograd actually keeps for backward, parameters excluded: the reference for the estimate."""
    weights = {t.untyped_storage().data_ptr() for t in net.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(images)
    return sum(seen.values())


@pytest.mark.parametrize(("cifar_stem", "size"), [(True, 32), (False, 96)])
def test_activation_estimate_matches_what_autograd_saves(cifar_stem, size):
    net, _ = build_backbone("resnet18", cifar_stem=cifar_stem)
    actual = saved_bytes(net.train(), torch.rand(6, 3, size, size, requires_grad=True))
    assert saved_activation_bytes(net, size, 6) == pytest.approx(actual, rel=0.05)


def test_check_step_memory_refuses_only_what_cannot_fit():
    check_step_memory(10, 11, "x", torch.device("cpu"))
    check_step_memory(10, None, "x", torch.device("cpu"))  # unknown free memory: no refusal
    with pytest.raises(UserError, match=r"needs at least 1\.0 GiB .* more than the 0\.5 GiB free on cpu; lower"):
        check_step_memory(2**30, 2**29, "views", torch.device("cpu"))


@pytest.mark.parametrize("crop", [4096, 100000])
def test_impossible_crop_sizes_are_refused_in_one_line(tmp_path: Path, capsys, crop):
    run = tmp_path / "run"
    args = ["pretrain", "data=synthetic", "data.subset=64", f"views.crop_size={crop}", "trainer.progress=false"]
    assert main([*args, "eval.every=0", "device=cpu", f"output_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"views of [{crop}, {crop}] px x 256 images per process needs at least" in err
    assert "lower views.crop_size or trainer.batch_size" in err
    assert not run.exists()
