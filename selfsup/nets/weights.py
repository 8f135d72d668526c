"""Backbone weights on their own: export a run's backbone as safetensors, start a backbone from such a file.

safetensors holds tensors and string metadata only, so reading a file runs no code (unlike a pickle), and
the metadata records the architecture the weights were made for, which a mismatch error then names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from selfsup.errors import UserError
from selfsup.nets.backbones import (
    TIMM_PREFIX,
    TIMM_VITS,
    VIT_POOLS,
    architecture,
    build_backbone,
    check_stored_backbone,
    is_timm_name,
    training_options,
)
from selfsup.runs.checkpoint import backbone_state, load_checkpoint, resolve_checkpoint
from selfsup.runs.files import atomic_write_bytes, file_sha256
from selfsup.runs.outputs import refuse_existing, require_file
from selfsup.runs.provenance import source_metadata
from selfsup.settings import cli_text

ARCHITECTURE_KEYS = ("cifar_stem", "image_size", "patch_size", "pool")  # recorded in exported files' metadata
SHOWN_KEYS = 3  # keys listed per kind of mismatch; the counts say how many there are in all
FORMATS = (".safetensors", ".pt")


def describe_mismatch(
    expected: Mapping[str, torch.Tensor | Sequence[int]], got: Mapping[str, torch.Tensor | Sequence[int]]
) -> str:
    """'' when two state dicts (tensors or shapes) have the same keys and shapes; otherwise the counts and
    first few keys of each difference, e.g. '2 missing (a, b), 1 shape mismatch (c: 64x3x7x7 vs 64x3x3x3
    expected)', so that an error says how far apart the two architectures are."""
    want, have = _shapes(expected), _shapes(got)
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    wrong = [f"{k}: {_dims(have[k])} vs {_dims(want[k])} expected" for k in want if k in have and have[k] != want[k]]
    parts = [
        _listing(missing, f"{len(missing)} missing"),
        _listing(unexpected, f"{len(unexpected)} unexpected"),
        _listing(wrong, f"{len(wrong)} shape mismatch{'es' if len(wrong) > 1 else ''}"),
    ]
    return ", ".join(p for p in parts if p)


def _shapes(state: Mapping[str, torch.Tensor | Sequence[int]]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _listing(items: list[str], label: str) -> str:
    if not items:
        return ""
    more = ", ..." if len(items) > SHOWN_KEYS else ""
    return f"{label} ({', '.join(items[:SHOWN_KEYS])}{more})"


def _architecture(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(backbone name, the options that fix its weights' shapes) of a run's config: a DictConfig or a
    checkpoint's config dict."""
    return architecture(cfg["backbone"], cfg["views"]["crop_size"])


def _describe(name: str, options: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{k}={cli_text(v)}" for k, v in options.items())
    return f"{name} ({shown})" if shown else name


def timm_metadata(name: str, options: Mapping[str, Any]) -> dict[str, str]:
    """For a backbone built by timm: the model name and the create_model arguments (JSON) under which
    `timm.create_model(timm_model, **json.loads(timm_kwargs))` loads the exported weights as they are."""
    if name in TIMM_VITS:
        kwargs = {
            "num_classes": 0,
            "img_size": options["image_size"],
            "patch_size": options["patch_size"],
            "global_pool": VIT_POOLS[options["pool"]],
            "dynamic_img_size": True,
        }
        return {"timm_model": TIMM_VITS[name], "timm_kwargs": json.dumps(kwargs)}
    if is_timm_name(name):
        return {"timm_model": name.removeprefix(TIMM_PREFIX), "timm_kwargs": json.dumps({"num_classes": 0})}
    return {}


def export_backbone(
    run_dir: str | Path, checkpoint: str, out_path: str | Path, overwrite: bool = False, backbone: str | None = None
) -> dict[str, str]:
    """Write the backbone of a run's checkpoint (any method) to a safetensors file, atomically (replacing an
    existing one only with `overwrite`); returns its metadata: backbone, cifar_stem, feature_dim, method,
    source_sha256 and the provenance of runs/provenance.py (selfsup_version, git_commit, git_dirty).
    `backbone` (the command's backbone.name=) replaces the checkpoint's: a `package.module:factory` backbone
    is built only when named so (`check_stored_backbone`)."""
    out = Path(out_path)
    if out.suffix != ".safetensors":
        raise UserError(f"out={out} must end in .safetensors (the format the file is written in)")
    require_file(out, "backbone.safetensors")
    refuse_existing([out], overwrite)
    source = resolve_checkpoint(Path(run_dir), checkpoint)
    state = load_checkpoint(source)
    weights = backbone_state(state)
    config = state["config"]
    check_stored_backbone(config["backbone"]["name"], str(source), named_by_command=backbone is not None)
    if backbone is not None:
        config = {**config, "backbone": {**config["backbone"], "name": backbone}}
    name, options = _architecture(config)
    module, feature_dim = build_backbone(name, **options)
    problem = describe_mismatch(module.state_dict(), weights)
    if problem:
        raise UserError(f"the backbone in {source} does not fit {_describe(name, options)}: {problem}")
    metadata = {
        "backbone": name,
        "architecture": _describe(name, options),
        **{key: cli_text(value) for key, value in options.items()},
        **timm_metadata(name, options),
        "feature_dim": str(feature_dim),
        "method": state["config"]["method"]["name"],
        "source_sha256": file_sha256(source),
        **source_metadata(),
    }
    atomic_write_bytes(out, safetensors_bytes({k: v.contiguous() for k, v in weights.items()}, metadata))
    return metadata


def read_backbone_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The backbone weights in a .safetensors file or a selfsup .pt checkpoint (of any method), and a
    description of the architecture they were made for."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise UserError(
            f"backbone weights {path} must be a .safetensors file (selfsup export backbone) or a selfsup .pt checkpoint"
        )
    if not path.is_file():
        raise UserError(f"backbone weights file {path} does not exist")
    if path.suffix == ".pt":
        state = load_checkpoint(path)
        made_for = _describe(*_architecture(state["config"])) if "config" in state else "an unrecorded architecture"
        return backbone_state(state), made_for
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as err:
        raise UserError(f"{path} is not a readable safetensors file ({err})") from None
    if "backbone" not in metadata:
        return weights, "an unrecorded architecture (no selfsup metadata)"
    options = {k: v for k, v in metadata.items() if k in ARCHITECTURE_KEYS}
    return weights, _describe(metadata["backbone"], options)


def load_backbone_weights(module: nn.Module, path: str | Path, target: str | None = None) -> None:
    """Load backbone weights (read_backbone_weights) into `module` strictly: any missing, unexpected or
    differently shaped key is a UserError naming the architecture of the file and `target`, the module's."""
    weights, made_for = read_backbone_weights(path)
    problem = describe_mismatch(module.state_dict(), weights)
    if problem:
        fit = f"but backbone={target}" if target else "but do not fit this backbone"
        raise UserError(f"weights in {path} are for {made_for} {fit}: {problem}")
    check_weight_values(module.state_dict(), weights, path)
    module.load_state_dict(weights)


def check_weight_values(own: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights that load_state_dict would take silently but that cannot train: integers cast into a
    float parameter (an int32 conv1 becomes zeros) and NaN or inf, which the run would checkpoint as its
    random init before its first step failed."""
    for key, tensor in weights.items():
        if not own[key].is_floating_point():  # BatchNorm's step counter is an integer
            continue
        if not tensor.is_floating_point():
            raise UserError(f"{path} holds {key} as {tensor.dtype}, not floating point: give float weights")
        if not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path} holds NaN or inf in {key}: give weights with finite values")


def build_backbone_from_config(cfg: DictConfig, init_weights: bool) -> tuple[nn.Module, int]:
    """The backbone a run's config describes, and its feature dimension. With `init_weights` (a new
    pretraining run) it starts from `backbone.weights` when that is set; a resumed run or an evaluation
    loads a checkpoint over the weights anyway, so it does not need the file to still exist."""
    name, options = _architecture(cfg)
    backbone, feature_dim = build_backbone(name, **options, **training_options(cfg.backbone))
    weights = cfg.backbone.get("weights")
    if init_weights and weights is not None:
        load_backbone_weights(backbone, weights, target=_describe(name, options))
    return backbone, feature_dim
