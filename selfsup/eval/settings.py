"""The `eval.*` settings, each section declared by the task that owns it, and the saved-run config with the
evaluation command's overrides checked against them.

Pretraining's config layer sits below evaluation, so it leaves `eval` to this module: commands that start a
run or an evaluation call `check_eval_settings` before they write anything."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from selfsup.config import apply_overrides, load_config, load_run_config, override_keys
from selfsup.errors import UserError
from selfsup.eval.detection import DETECTION_SETTINGS
from selfsup.eval.finetune import finetune_settings
from selfsup.eval.knn import KNN_SETTINGS
from selfsup.eval.linear import LINEAR_SETTINGS
from selfsup.eval.segmentation import SEGMENTATION_SETTINGS
from selfsup.methods.build import check_buildable
from selfsup.nets.backbones import check_stored_backbone
from selfsup.settings import BOOL, COUNT, POSITIVE, POSITIVE_INT, Declaration, check_tree, optional

MONITOR_SETTINGS: Declaration = {
    "every": COUNT,  # online kNN monitor every N pretraining epochs (0 = off)
    "val_loss_every": COUNT,
    "online_linear": BOOL,  # a linear classifier trained alongside pretraining, scored with the kNN monitor
    "online_linear_lr": POSITIVE,
    "batch_size": POSITIVE_INT,  # feature extraction
    "train_subset": optional(POSITIVE_INT),  # the kNN bank / linear train set
}


def eval_sections() -> dict[str, Declaration]:
    return {
        "eval": MONITOR_SETTINGS,
        "eval.knn": KNN_SETTINGS,
        "eval.linear": LINEAR_SETTINGS,
        "eval.finetune": finetune_settings(),
        "eval.detection": DETECTION_SETTINGS,
        "eval.segmentation": SEGMENTATION_SETTINGS,
    }


def check_eval_settings(cfg: DictConfig, only: Sequence[str] | None = None) -> None:
    """Every `eval.*` setting (or those `only` names) against the declaration of its task."""
    check_tree(cfg.eval, eval_sections(), prefix="eval", only=only)


def check_pretraining_eval(cfg: DictConfig) -> None:
    """`eval.*` as a pretraining run reads it: every setting, and the online linear probe, which is scored
    with the kNN monitor and so needs it on."""
    check_eval_settings(cfg)
    if cfg.eval.online_linear and not cfg.eval.every:
        raise UserError("eval.online_linear is scored with the kNN monitor: set eval.every > 0 (e.g. eval.every=10)")


def evaluation_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """A saved run's config with an evaluation command's overrides, each checked against its declaration
    (pretraining settings by the config layer, `eval.*` here) before any work. A factory backbone is taken
    from the command line only (`check_stored_backbone`)."""
    cfg = apply_overrides(load_run_config(run_dir), overrides)
    named = "backbone.name" in override_keys(overrides)
    check_stored_backbone(cfg.backbone.name, str(Path(run_dir) / "config.yaml"), named_by_command=named)
    check_eval_settings(cfg, only=override_keys(overrides))
    return cfg


def pretraining_config(overrides: list[str]) -> DictConfig:
    """The pretraining config for `overrides` with every section checked, `eval.*` included (the online
    monitors read it), and the model built on the meta device: what commands that start runs use before they
    write or queue anything, so that `selfsup config` refuses what pretrain refuses."""
    cfg = load_config(overrides)
    check_pretraining_eval(cfg)
    check_buildable(cfg)
    return cfg
