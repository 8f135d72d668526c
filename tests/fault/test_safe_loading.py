"""Backbone weights as safetensors: export through the CLI, strict loading from .safetensors or any method's
.pt checkpoint, and mismatch errors that name both architectures.

Runs are made without training (a checkpoint of the initial weights, as pretraining writes one), so the
module takes seconds; 16-px crops make the backbones use the CIFAR stem."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file

import selfsup.methods  # noqa: F401  (registers every method)
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.errors import UserError
from selfsup.methods.build import build_method
from selfsup.nets.backbones import build_backbone
from selfsup.nets.weights import build_backbone_from_config, describe_mismatch, load_backbone_weights
from selfsup.runs.checkpoint import backbone_state, load_checkpoint, save_checkpoint
from selfsup.runs.files import file_sha256
from selfsup.runs.provenance import source_metadata
from tests.fault.cli_errors import one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["data=synthetic", "views.crop_size=16", "method.proj_hidden_dim=32"]


def make_run(run: Path, *overrides: str) -> Path:
    """A run directory whose checkpoints/last.pt is what pretraining writes (at the initial weights)."""
    cfg = load_config([*SMALL, f"output_dir={run}", *overrides])
    backbone, feature_dim = build_backbone_from_config(cfg, init_weights=False)
    method = build_method(cfg, backbone, feature_dim)
    state = {"model": method.state_dict(), "config": OmegaConf.to_container(cfg)}
    save_checkpoint(state, run / "checkpoints" / "last.pt")
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("simclr") / "run")


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("weights") / "backbone.safetensors"
    assert main(["export", "backbone", f"run={run}", f"out={out}"]) == 0
    return out


def fresh_backbone(cifar_stem: bool = True, name: str = "resnet18") -> torch.nn.Module:
    return build_backbone(name, cifar_stem=cifar_stem)[0]


def assert_same_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    assert state.keys() == weights.keys()
    assert all(torch.equal(state[k], weights[k]) for k in state)


def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def test_export_writes_the_backbone_and_its_provenance(run: Path, exported: Path, capsys):
    ckpt = run / "checkpoints" / "last.pt"
    metadata, tensors = read_safetensors(exported)
    assert metadata == {
        "backbone": "resnet18",
        "architecture": "resnet18 (cifar_stem=true)",
        "cifar_stem": "true",
        "feature_dim": "512",
        "method": "simclr",
        "source_sha256": file_sha256(ckpt),
        **source_metadata(),  # selfsup_version, and this checkout's commit when tests run from one
    }
    expected = backbone_state(load_checkpoint(ckpt))
    assert tensors.keys() == expected.keys() and all(torch.equal(tensors[k], expected[k]) for k in expected)
    assert [p.name for p in exported.parent.iterdir()] == ["backbone.safetensors"]  # no temp file left behind
    # The CLI says what it wrote and where.
    out = exported.parent / "again.safetensors"
    assert main(["export", "backbone", f"run={run}", "checkpoint=last", f"out={out}"]) == 0
    assert capsys.readouterr().out == (
        f"resnet18 (cifar_stem=true) backbone (512-d features) of simclr checkpoint last in {run} -> {out}\n"
    )
    again_metadata, again = read_safetensors(out)
    assert again_metadata == metadata and all(torch.equal(again[k], tensors[k]) for k in tensors)


def test_load_from_safetensors_and_from_a_checkpoint_of_any_method(run: Path, exported: Path, tmp_path: Path):
    weights = backbone_state(load_checkpoint(run / "checkpoints" / "last.pt"))
    for path in (exported, run / "checkpoints" / "last.pt"):
        module = fresh_backbone()
        assert not torch.equal(module.conv1.weight, weights["conv1.weight"])  # another random init
        load_backbone_weights(module, path)
        assert_same_weights(module, weights)
    # BYOL's checkpoint also holds its momentum target's backbone: only the online one is taken.
    byol = make_run(tmp_path / "byol", "method=byol", "method.predictor.hidden_dim=32")
    state = load_checkpoint(byol / "checkpoints" / "last.pt")
    assert any(k.startswith("target_backbone.") for k in state["model"])
    module = fresh_backbone()
    load_backbone_weights(module, byol / "checkpoints" / "last.pt")
    assert_same_weights(module, backbone_state(state))


def test_backbone_weights_option_initialises_the_backbone_of_a_new_run(run: Path, exported: Path):
    cfg = load_config([*SMALL, f"backbone.weights={exported}"])
    backbone, feature_dim = build_backbone_from_config(cfg, init_weights=True)
    assert feature_dim == 512
    assert_same_weights(backbone, backbone_state(load_checkpoint(run / "checkpoints" / "last.pt")))
    # A resumed run or an evaluation loads a checkpoint over the backbone: the file is not read, nor needed.
    cfg = load_config([*SMALL, "backbone.weights=/nowhere/backbone.safetensors"])
    build_backbone_from_config(cfg, init_weights=False)
    with pytest.raises(UserError) as err:
        build_backbone_from_config(cfg, init_weights=True)
    assert str(err.value) == "backbone weights file /nowhere/backbone.safetensors does not exist"


def test_mismatch_names_both_architectures_and_counts_the_keys(exported: Path):
    cases = [
        (
            ["views.crop_size=224"],  # ImageNet stem: a 7x7 first convolution
            "but backbone=resnet18 (cifar_stem=false): 1 shape mismatch (conv1.weight: 64x3x3x3 vs 64x3x7x7 expected)",
        ),
        (
            # resnet34 has 8 more basic blocks (3-4-6-3 vs 2-2-2-2), 12 tensors each (2 convs, 2 x 5 BN entries)
            ["backbone=resnet34"],
            "but backbone=resnet34 (cifar_stem=true): "
            "96 missing (layer1.2.conv1.weight, layer1.2.bn1.weight, layer1.2.bn1.bias, ...)",
        ),
    ]
    for overrides, ending in cases:
        cfg = load_config([*SMALL, *overrides, f"backbone.weights={exported}"])
        with pytest.raises(UserError) as err:
            build_backbone_from_config(cfg, init_weights=True)
        assert str(err.value) == f"weights in {exported} are for resnet18 (cifar_stem=true) {ending}"


def test_describe_mismatch_lists_counts_and_the_first_keys():
    expected = {"a": (2, 3), "b": (4,), "c": (), "d": (1,), "e": (1,), "f": (1,), "g": (1,)}
    got = {"a": torch.zeros(3, 2), "b": torch.zeros(4), "c": torch.zeros(1), "x": (5,)}
    assert describe_mismatch(expected, got) == (
        "4 missing (d, e, f, ...), 1 unexpected (x), "
        "2 shape mismatches (a: 3x2 vs 2x3 expected, c: 1 vs scalar expected)"
    )
    assert describe_mismatch(expected, expected) == ""


def test_unreadable_or_foreign_weight_files(tmp_path: Path, exported: Path):
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(exported.read_bytes()[:-100])
    foreign = tmp_path / "foreign.safetensors"
    save_file({"fc.weight": torch.zeros(10, 512)}, str(foreign))  # no selfsup metadata
    wrong_kind = tmp_path / "weights.bin"
    wrong_kind.write_bytes(b"\0" * 8)
    not_a_checkpoint = tmp_path / "random.pt"
    torch.save({"weights": torch.zeros(1)}, not_a_checkpoint)
    cases = {
        truncated: f"{truncated} is not a readable safetensors file "
        "(Error while deserializing header: incomplete metadata, file not fully covered)",
        foreign: f"weights in {foreign} are for an unrecorded architecture (no selfsup metadata) but do not fit "
        "this backbone: 120 missing (conv1.weight, bn1.weight, bn1.bias, ...), 1 unexpected (fc.weight)",
        wrong_kind: f"backbone weights {wrong_kind} must be a .safetensors file (selfsup export backbone) or a "
        "selfsup .pt checkpoint",
        not_a_checkpoint: f"{not_a_checkpoint} is not a selfsup checkpoint (no 'model' / 'format_version' entries)",
    }
    for path, message in cases.items():
        with pytest.raises(UserError) as err:
            load_backbone_weights(fresh_backbone(), path)
        assert str(err.value) == message


def test_export_cli_errors_leave_no_file(run: Path, tmp_path: Path, capsys):
    usage = "selfsup export backbone run=DIR [checkpoint=last] out=FILE.safetensors [overwrite=true] [backbone.name=F]"
    features = (
        "selfsup export features run=DIR [checkpoint=last] [splits=[train,test]] out=DIR [overwrite=true] [data=...]"
    )
    out = tmp_path / "b.safetensors"
    assert one_line_error(capsys, ["export"]) == f"say what to export: {usage}, or {features}"
    assert one_line_error(capsys, ["export", "features", f"run={run}"]) == f"usage: {features}"
    assert one_line_error(capsys, ["export", "backbone", f"run={run}"]) == f"usage: {usage}"
    assert one_line_error(capsys, ["export", "backbone", f"run={run}", f"out={out}", "k=3"]) == (
        f"usage: {usage}; unexpected k=3"
    )
    pt = tmp_path / "b.pt"
    assert one_line_error(capsys, ["export", "backbone", f"run={run}", f"out={pt}"]) == (
        f"out={pt} must end in .safetensors (the format the file is written in)"
    )
    assert one_line_error(capsys, ["export", "backbone", f"run={run}", "checkpoint=epoch-0009", f"out={out}"]) == (
        f"no checkpoint 'epoch-0009' in {run / 'checkpoints'} (available: last)"
    )
    assert list(tmp_path.iterdir()) == []


def test_pretraining_from_exported_weights_starts_every_network_from_them(exported: Path, tmp_path: Path):
    """Through the CLI, with BYOL: the online backbone and the EMA target copied from it both start from
    the file (epoch-0000 is the starting point)."""
    run = tmp_path / "byol"
    args = ["pretrain", *SMALL, "method=byol", "data.subset=32", "trainer.batch_size=16", "trainer.max_steps=1"]
    args += ["trainer.num_workers=0", "trainer.progress=false", "eval.every=0", "analysis.every=0", "device=cpu"]
    assert main([*args, f"backbone.weights={exported}", f"output_dir={run}"]) == 0
    start = load_checkpoint(run / "checkpoints" / "epoch-0000.pt")["model"]
    _, weights = read_safetensors(exported)
    for key, tensor in weights.items():
        assert torch.equal(start[f"backbone.{key}"], tensor), key
        assert torch.equal(start[f"target_backbone.{key}"], tensor), key
