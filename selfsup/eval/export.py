"""`selfsup export features`: a checkpoint's frozen features as safetensors files that other tools read
(active-learning loops, notebooks, other languages) and that `selfsup eval linear|knn features=...` reads
back without the run.

One file per split, `<out>/<split>.safetensors`:

    features  float32 [N, D]  Method.representation() of each image (the backbone's pooled output; the
                              beta-VAE's posterior mean) after the evaluation transform (resize, centre crop,
                              normalisation)
    labels    int64   [N]     class index; -1 where the split is unlabeled (e.g. STL-10 unlabeled)
    indices   int64   [N]     the image's position in the split, as `data=<name>` lists it

and string metadata: format (selfsup-features/1), dataset, split, root, crop_size, mean and std (JSON
lists), classes (JSON list), checkpoint, checkpoint_sha256, method, backbone, feature_dim, selfsup_version,
git_commit, git_dirty (empty when unknown).
Read with `safetensors.torch.load_file` (tensors) and `safetensors.safe_open(...).metadata()`.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from selfsup.config import load_config
from selfsup.data.loader import Transformed, load_split
from selfsup.data.views import eval_transform, split_mean_std
from selfsup.errors import UserError
from selfsup.eval.features import Features, extract_features
from selfsup.eval.offline import load_method, score_features
from selfsup.eval.settings import evaluation_config
from selfsup.precision import resolve_device
from selfsup.runs.checkpoint import resolve_checkpoint
from selfsup.runs.files import atomic_write_bytes, atomic_write_text, file_sha256
from selfsup.runs.outputs import refuse_existing, require_directory
from selfsup.runs.provenance import source, source_metadata

FORMAT = "selfsup-features/1"


def export_features(
    run_dir: Path,
    checkpoint: str,
    splits: list[str] | None,
    out: Path,
    overrides: list[str] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write `<out>/<split>.safetensors` for each split (default: the data group's evaluation train and test
    splits) of the run's dataset, or of another data group given by overrides (data=stl10 ...). Existing
    files are replaced only with `overwrite`."""
    from safetensors.torch import save as safetensors_bytes

    run_dir = Path(run_dir)
    cfg = evaluation_config(run_dir, overrides or [])
    splits = splits or [s for s in (cfg.data.eval_train_split, cfg.data.test_split) if s]
    if not splits:
        raise UserError(f"data={cfg.data.name} names no evaluation splits; say which: splits=[train,...]")
    require_directory(Path(out))
    refuse_existing([Path(out) / f"{split}.safetensors" for split in splits], overwrite)
    ckpt_path = resolve_checkpoint(run_dir, checkpoint)
    device = torch.device(resolve_device(cfg.device))
    method, _ = load_method(cfg, ckpt_path)
    representation = method.representation().to(device)
    mean, std = split_mean_std(cfg.data, cfg.views)
    provenance = {
        "format": FORMAT,
        "dataset": cfg.data.name,
        "root": str(cfg.data.root),
        "crop_size": str(cfg.views.crop_size),
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        "checkpoint": str(ckpt_path),
        "checkpoint_sha256": file_sha256(ckpt_path),
        "method": cfg.method.name,
        "backbone": cfg.backbone.name,
        **source_metadata(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    written = []
    for split in splits:
        dataset = load_split(cfg.data, split, None, cfg.seed)
        feats = extract_features(
            representation,
            Transformed(dataset, eval_transform(cfg.views.crop_size)),
            mean,
            std,
            device,
            batch_size=cfg.eval.batch_size,
            num_workers=0,
        )
        tensors = {
            "features": feats.features.contiguous(),
            "labels": feats.labels.contiguous(),
            "indices": torch.arange(len(feats.labels), dtype=torch.int64),
        }
        metadata = {
            **provenance,
            "split": split,
            "role": "train" if split == cfg.data.eval_train_split else "test" if split == cfg.data.test_split else "",
            "feature_dim": str(feats.features.shape[1]),
            "classes": json.dumps(list(getattr(dataset, "classes", []))),
        }
        path = Path(out) / f"{split}.safetensors"
        atomic_write_bytes(path, safetensors_bytes(tensors, metadata))
        written.append(path)
    return written


def read_features(path: Path) -> tuple[Features, dict[str, str]]:
    """Features, labels and metadata of an exported split, checked for the format."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no features file {path}; write one with `selfsup export features run=DIR out=...`")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path} is not a readable safetensors file ({err})") from None
    if metadata.get("format") != FORMAT or not {"features", "labels"} <= tensors.keys():
        raise UserError(f"{path} is not a selfsup features file (format {FORMAT}: features, labels, indices)")
    return Features(tensors["features"].float(), tensors["labels"].long()), metadata


def check_split_roles(train_path: Path, train_meta: dict[str, str], test_path: Path, test_meta: dict[str, str]) -> None:
    """Refuse a test set that is the train set (one file or one split twice: a kNN then finds every test image
    in its bank) and files given in the wrong order, by the role each export recorded for its split."""
    same_data = all(train_meta.get(key) == test_meta.get(key) for key in ("dataset", "root", "split"))
    if Path(train_path).resolve() == Path(test_path).resolve() or same_data:
        raise UserError(
            f"features= gives the {train_meta.get('split')!r} split as both train and test: "
            "give the train split's file, then the test split's"
        )
    if train_meta.get("role") == "test" or test_meta.get("role") == "train":
        raise UserError(
            f"features= gives the test split {train_meta.get('split')!r} first: give the train split's file first, "
            f"then the test split's (features=[{test_path},{train_path}])"
        )


def evaluate_features(task: str, train_path: Path, test_path: Path, overrides: list[str]) -> dict[str, Any]:
    """kNN or a linear probe on exported features (eval.knn.* / eval.linear.* from the overrides); writes
    <task>.json next to the test file."""
    if task not in ("knn", "linear"):
        raise UserError(f"features= works with selfsup eval knn or linear, not {task}")
    cfg: DictConfig = load_config(overrides)
    (train, train_meta), (test, test_meta) = read_features(train_path), read_features(test_path)
    for path, feats, meta in ((train_path, train, train_meta), (test_path, test, test_meta)):
        if (feats.labels < 0).any():
            raise UserError(f"{path} holds the unlabeled split {meta.get('split')!r}; use features of a labeled split")
    if train_meta.get("checkpoint_sha256") != test_meta.get("checkpoint_sha256"):
        raise UserError(f"{train_path} and {test_path} come from different checkpoints; export both from one")
    check_split_roles(train_path, train_meta, test_path, test_meta)
    params, scores, extra = score_features(task, cfg, train, test)
    params.update(extra)  # the k that voted, the probe's effective lr
    result = {
        "task": task,
        "metrics": scores,
        "settings": params,
        "features": {"train": str(train_path), "test": str(test_path)},
        "checkpoint_sha256": test_meta.get("checkpoint_sha256"),
        "dataset": {"name": test_meta.get("dataset"), "train_split": train_meta.get("split"),
                    "test_split": test_meta.get("split"), "train_size": len(train.labels),
                    "test_size": len(test.labels)},
        **source(),
    }  # fmt: skip
    path = Path(test_path).parent / f"{task}.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    result["path"] = str(path)
    return result
