"""Compose the Hydra config groups from `key=value` overrides and check them before anything runs.

Hydra's compose API is used directly (not @hydra.main) so the CLI keeps control of the working
directory, logging and error messages: every mistake becomes one UserError line with close matches.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from selfsup.errors import UserError
from selfsup.registry import close_matches_hint

CONFIG_MODULE = "selfsup.conf"
GROUPS = ("method", "data", "backbone", "optim", "eval")
PRECISIONS = ("auto", "32", "bf16", "16")
DEVICES = ("auto", "cpu", "cuda")
NONFINITE_POLICIES = ("stop", "skip", "rollback")  # what train/guards.py and the loop do on a non-finite step


def group_options(group: str) -> list[str]:
    """The options of a config group: the YAML files shipped in selfsup/conf/<group>/."""
    folder = resources.files(CONFIG_MODULE).joinpath(group)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _split(override: str) -> tuple[str, str]:
    if "=" not in override:
        raise UserError(f"expected key=value, got {override!r} (for example trainer.epochs=10)")
    key, value = override.split("=", 1)
    return key.strip(), value


def leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of a config, nodes and leaves alike (the names a user may override)."""
    keys = []
    for key in cfg.keys():
        path = f"{prefix}{key}"
        keys.append(path)
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            keys += leaf_keys(node, f"{path}.")
    return keys


def check_keys(cfg: DictConfig, overrides: list[str]) -> None:
    """Reject dotted overrides that name no existing key, suggesting the closest existing keys.

    Keys prefixed with '+' (Hydra's 'add a new key') are allowed through on purpose."""
    known = leaf_keys(cfg)
    for override in overrides:
        key, _ = _split(override)
        if key.startswith(("+", "~")) or key in GROUPS or key in known:
            continue
        # Also match on the last component, so `epochs=5` suggests `trainer.epochs`.
        hint = close_matches_hint(key, known)
        if not hint:
            tail = key.rsplit(".", 1)[-1]
            by_tail = [k for k in known if k.rsplit(".", 1)[-1] == tail]
            hint = f"; did you mean {', '.join(repr(k) for k in by_tail[:3])}?" if by_tail else ""
        raise UserError(f"unknown config key {key!r}{hint}")


def check_groups(overrides: list[str]) -> None:
    for override in overrides:
        key, value = _split(override)
        if key in GROUPS:
            options = group_options(key)
            if value not in options:
                raise UserError(
                    f"unknown {key} {value!r}{close_matches_hint(value, options)} (options: {', '.join(options)})"
                )


def _quote_non_ascii(override: str) -> str:
    """Hydra's override lexer takes unquoted values in ASCII only: a path such as output_dir=/tmp/ränn is
    passed as a quoted string instead (quotes and the backslashes before them escaped, as its grammar asks).
    Lists, dicts and values already quoted are left as written."""
    key, value = _split(override)
    if value.isascii() or value[:1] in "[{'\"":
        return override
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"{key}='{escaped}'"


def _compose(overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name="config", overrides=[_quote_non_ascii(o) for o in overrides])
    except HydraException as err:
        raise UserError(f"bad override: {str(err).splitlines()[0]}") from None


def _user_backbone(override: str) -> str:
    """`backbone=package.module:factory` (a user's own backbone, not a shipped option) sets backbone.name over
    the default backbone group; every other override is kept as written."""
    from selfsup.nets.backbones import is_factory_path

    key, value = _split(override)
    return f"backbone.name={value}" if key == "backbone" and is_factory_path(value) else override


def load_config(overrides: list[str]) -> DictConfig:
    """Compose, check and resolve the pretraining config for these overrides."""
    overrides = [_user_backbone(o) for o in overrides]
    check_groups(overrides)
    choices = [o for o in overrides if _split(o)[0] in GROUPS]
    check_keys(_compose(choices), overrides)
    cfg = _compose(overrides)
    resolve(cfg)
    validate(cfg)
    return cfg


def compose_group(group: str, option: str) -> DictConfig:
    """The default config with one group option chosen: how a task reads another dataset's settings."""
    return load_config([f"{group}={option}"])


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Apply dotted overrides to an already resolved config (a saved run's), with the same key checks."""
    check_keys(cfg, overrides)
    for override in overrides:
        key, value = _split(override)
        OmegaConf.update(cfg, key.lstrip("+"), _parse_value(value), merge=True)
    resolve(cfg)
    check_values(cfg, [_split(o)[0].lstrip("+") for o in overrides])
    return cfg


def _parse_value(value: str) -> object:
    """Parse a command-line value the way Hydra does for plain values (YAML scalars and lists)."""
    parsed = OmegaConf.create({"v": value}) if value == "" else OmegaConf.create(f"v: {value}")
    node = parsed._get_node("v")
    return OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) else parsed.v


def resolve(cfg: DictConfig) -> None:
    """Resolve interpolations now, so the saved config is exactly what ran."""
    try:
        OmegaConf.resolve(cfg)
        OmegaConf.to_container(cfg, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or "?"
        raise UserError(f"config key {key!r} has no value; set it on the command line ({key}=...)") from None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


class Rule(NamedTuple):
    """What a setting may hold: a test, the words for it in an error, and the options of a choice."""

    ok: Callable[[Any], bool]
    allowed: str
    options: tuple[str, ...] = ()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float: no rule admits nan or +-inf, which would only fail (or diverge) mid-run."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def cli_text(value: Any) -> str:
    """A value as one writes it on the command line: true, null, 32 (so YAML's 32 matches the option '32')."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def one_of(*options: str) -> Rule:
    return Rule(lambda v: cli_text(v) in options, f"one of {' | '.join(options)}", options)


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.ok(v), f"{rule.allowed} or null", rule.options)


POSITIVE_INT = Rule(lambda v: _is_int(v) and v >= 1, "a positive integer")
COUNT = Rule(lambda v: _is_int(v) and v >= 0, "an integer >= 0")
POSITIVE = Rule(lambda v: _is_number(v) and v > 0, "a positive number")
NON_NEGATIVE = Rule(lambda v: _is_number(v) and v >= 0, "a number >= 0")
PROBABILITY = Rule(lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
MOMENTUM = Rule(lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
FRACTION = Rule(lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")
AUTO_OR_COUNT = Rule(lambda v: v == "auto" or COUNT.ok(v), "auto or an integer >= 0")


@functools.cache
def value_rules() -> tuple[tuple[Rule, tuple[str, ...]], ...]:
    """Each rule with the keys it governs (fnmatch patterns; `*` also spans dots; no key matches two), for
    every pretraining and feature-evaluation setting. views.* are checked by views_config, the transfer
    tasks' eval.finetune|detection|segmentation.* by those tasks. Registries are imported here, not at the
    top, since they import torch."""
    import selfsup.methods  # noqa: F401  (registers every method)
    from selfsup.data.sources import BAD_IMAGES, dataset_names
    from selfsup.methods.base import METHODS
    from selfsup.nets.backbones import BACKBONES, is_factory_path
    from selfsup.nets.compile import COMPILE_MODES
    from selfsup.nets.predictors import PREDICTORS
    from selfsup.optim import OPTIMIZERS

    rules = {
        POSITIVE_INT: (
            *(f"trainer.{k}" for k in ("epochs", "batch_size", "accumulate", "checkpoint_every", "log_every")),
            *("trainer.devices", "trainer.num_nodes", "eval.batch_size", "eval.knn.k"),
            *("eval.linear.epochs", "eval.linear.batch_size"),
            *("method.*_dim", "method.proj_layers", "method.num_prototypes", "method.decoder_channels"),
            *("method.sinkhorn_iters", "method.image_size", "method.predictor.freq", "method.predictor.layers"),
            "method.moco_k",
        ),
        optional(POSITIVE_INT): ("trainer.max_steps", "trainer.checkpoint_every_steps", "*subset"),
        COUNT: (
            *("seed", "analysis.every", "eval.every", "eval.val_loss_every", "trainer.nonfinite_max"),
            "method.queue_length",
        ),
        AUTO_OR_COUNT: ("trainer.num_workers",),
        POSITIVE: (
            "optim.base_lr",
            "method.predictor.lr_scale",
            "eval.linear.lr",
            "*temperature",
            "method.*_temp",
            "method.moco_t",
            "*_eps",
        ),
        NON_NEGATIVE: (
            *("optim.weight_decay", "optim.final_lr", "optim.warmup_epochs", "eval.linear.weight_decay"),
            "eval.linear.final_lr",
            *("method.*_weight", "method.lambd", "method.beta", "method.*_epochs", "method.predictor.eps"),
            "method.predictor.symmetry_reg",
        ),
        optional(NON_NEGATIVE): ("method.capacity", "method.predictor.weight_decay"),
        MOMENTUM: ("*.momentum", "method.center_momentum", "method.moco_m", "method.predictor.rho"),
        PROBABILITY: ("method.final_momentum",),
        FRACTION: ("trainer.nonfinite_lr_factor",),
        BOOL: (
            *("trainer.progress", "trainer.sync_batchnorm", "trainer.activation_checkpointing", "data.download"),
            "backbone.zero_init_residual",
            *("optim.exclude_bias_and_norm", "eval.linear.normalize"),
            *("method.symmetric", "method.use_bn_in_head", "method.norm_last_layer", "method.fixed_predictor_lr"),
            "method.predictor.symmetric",
        ),
        TEXT: ("output_dir", "data.root", "data.train_split"),
        optional(TEXT): ("data.eval_train_split", "data.test_split", "backbone.weights"),
        one_of(*DEVICES): ("device",),
        one_of("same", "changed"): ("resume",),
        one_of(*PRECISIONS): ("trainer.precision",),
        one_of("auto", "true", "false"): ("trainer.channels_last", "backbone.cifar_stem", "data.crop_on_device"),
        one_of(*NONFINITE_POLICIES): ("trainer.nonfinite",),
        one_of("true", "false", *COMPILE_MODES): ("trainer.compile",),
        one_of(*dataset_names()): ("data.name",),
        one_of(*BAD_IMAGES): ("data.bad_images",),
        Rule(
            lambda v: v in BACKBONES.names() or (isinstance(v, str) and is_factory_path(v)),
            f"one of {', '.join(BACKBONES.names())} or a factory path package.module:function",
            tuple(BACKBONES.names()),
        ): ("backbone.name",),
        one_of(*OPTIMIZERS.names()): ("optim.name",),
        one_of("linear", "sqrt", "none"): ("optim.lr_scaling",),
        one_of(*METHODS.names()): ("method.name",),
        one_of("gaussian", "bernoulli"): ("method.likelihood",),
        one_of(*PREDICTORS): ("method.predictor.type",),
    }
    return tuple(rules.items())


def rule_for(key: str) -> Rule | None:
    """The rule that governs a dotted key, or None (views.*, transfer tasks, keys added with '+')."""
    return next((rule for rule, patterns in value_rules() if any(fnmatchcase(key, p) for p in patterns)), None)


def check_values(cfg: DictConfig, only: Sequence[str] | None = None) -> None:
    """Check each setting that has a rule (of those `only` names or holds, if given) against it, so that a
    wrong value or type fails in one line naming the key, the value and what is allowed."""
    for key in leaf_keys(cfg):
        rule = rule_for(key)
        if rule is None or (only is not None and not any(key == k or key.startswith(f"{k}.") for k in only)):
            continue
        value = OmegaConf.select(cfg, key)
        if not rule.ok(value):
            shown = repr(value) if isinstance(value, str) else cli_text(value)
            hint = close_matches_hint(value, list(rule.options)) if isinstance(value, str) else ""
            if isinstance(value, float) and not math.isfinite(value):
                hint = " (numbers must be finite)"
            raise UserError(f"{key} must be {rule.allowed}, got {shown}{hint}")


def validate(cfg: DictConfig) -> None:
    """Values that cannot work fail here, before any output directory is touched."""
    from selfsup.data.views import views_config
    from selfsup.nets.backbones import backbone_factory, is_factory_path

    check_values(cfg)
    views_config(cfg.views)
    if is_factory_path(cfg.backbone.name):
        backbone_factory(cfg.backbone.name)  # importable and callable, before any output is written
    t = cfg.trainer
    processes = t.devices * t.num_nodes
    _require(
        t.batch_size % (processes * t.accumulate) == 0,
        f"trainer.batch_size={t.batch_size} must be divisible by processes x accumulate = {processes * t.accumulate}",
    )


def save_config(cfg: DictConfig, path: Path) -> None:
    from selfsup.runs.files import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def load_run_config(run_dir: Path) -> DictConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(
            f"no config.yaml in {run_dir}: is it a selfsup run directory (output_dir of `selfsup pretrain`)?"
        )
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    # Evaluation settings added since the run was made take their defaults, so old runs stay evaluable.
    cfg.eval = OmegaConf.merge(_compose([]).eval, cfg.get("eval", {}))
    return cfg
