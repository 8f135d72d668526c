"""Compose the Hydra config groups from `key=value` overrides and check them before anything runs.

Hydra's compose API is used directly (not @hydra.main) so the CLI keeps control of the working
directory, logging and error messages: every mistake becomes one UserError line with close matches.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from selfsup.errors import UserError
from selfsup.registry import close_matches_hint
from selfsup.settings import (
    AUTO_OR_COUNT,
    AUTO_TRUE_FALSE,
    BOOL,
    COUNT,
    FRACTION,
    POSITIVE,
    POSITIVE_INT,
    TEXT,
    Declaration,
    check_tree,
    check_value,
    declaration,
    int_in,
    one_of,
    optional,
)

CONFIG_MODULE = "selfsup.conf"
GROUPS = ("method", "data", "backbone", "optim", "eval")
PRECISIONS = ("auto", "32", "bf16", "16")
DEVICES = ("auto", "cpu", "cuda")
NONFINITE_POLICIES = ("stop", "skip", "rollback")  # what train/guards.py and the loop do on a non-finite step

# Settings renamed since runs were saved with them: old dotted key -> new (within the same section). A saved
# config (a run's config.yaml, the config a checkpoint records) is read with every old key under its new name
# (`renamed_settings`), so old runs load, resume and evaluate unchanged; a command naming an old key is told
# the new one (`check_keys`). Issue 38's naming rule: full words, `temperature` / `<role>_temperature`,
# `momentum` / `final_momentum` for the target network's EMA, `<thing>_momentum` for other EMAs, `queue_size`.
RENAMED_KEYS = {
    "method.moco_k": "method.queue_size",
    "method.moco_t": "method.temperature",
    "method.moco_m": "method.momentum",
    "method.queue_length": "method.queue_size",
    "method.student_temp": "method.student_temperature",
    "method.teacher_temp": "method.teacher_temperature",
    "method.warmup_teacher_temp": "method.warmup_teacher_temperature",
    "method.warmup_teacher_temp_epochs": "method.warmup_teacher_temperature_epochs",
}


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
        bare = key.lstrip("+~")
        if bare in RENAMED_KEYS:
            raise UserError(f"{bare} was renamed {RENAMED_KEYS[bare]}")
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


# What Hydra's override grammar reads as syntax inside an unquoted value (a path such as /tmp/a,b).
OVERRIDE_SYNTAX = frozenset(",[]{}()'\"=\n")


def override_error(overrides: list[str], err: HydraException) -> str:
    """Hydra's lexer text ("mismatched input '['") names no fix: the value holding characters its grammar
    reads as syntax is named instead, with how to quote it, or to rename where quoting cannot help."""
    for override in overrides:
        key, value = _split(override)
        found = sorted(OVERRIDE_SYNTAX.intersection(value))
        if not found or value[:1] in "[{'\"":
            continue
        if "\n" in found:
            return f"{key}={value!r} holds a newline: choose a name without one"
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        return (
            f"{key}={value!r} holds {', '.join(repr(c) for c in found)}, which overrides read as syntax: quote "
            f"the value as {key}='{quoted}' (kept whole by the shell, e.g. in double quotes), or choose a name "
            "without them"
        )
    return f"bad override: {str(err).splitlines()[0]}"


def _compose(overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name="config", overrides=[_quote_non_ascii(o) for o in overrides])
    except HydraException as err:
        raise UserError(override_error(overrides, err)) from None


def _named_backbone(override: str) -> list[str]:
    """`backbone=timm:<model>` and `backbone=package.module:factory` (backbones named, not shipped as options)
    select the `timm` or `factory` group with that name; every other override is kept as written."""
    from selfsup.nets.backbones import is_factory_path, is_timm_name

    key, value = _split(override)
    if key == "backbone" and (is_timm_name(value) or is_factory_path(value)):
        return [f"backbone={'timm' if is_timm_name(value) else 'factory'}", f"backbone.name={value}"]
    return [override]


def load_config(overrides: list[str]) -> DictConfig:
    """Compose, check and resolve the pretraining config for these overrides."""
    overrides = [part for o in overrides for part in _named_backbone(o)]
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
    """Apply dotted overrides to an already resolved config (a saved run's), with the same key checks.
    `data=NAME` puts that preset's data section in place (evaluate or export another dataset); the other
    groups are what the run's checkpoint was trained with, so choosing one is refused."""
    choices = [o for o in overrides if _split(o)[0] in GROUPS]
    for override in choices:
        key, value = _split(override)
        if key != "data":
            raise UserError(
                f"{key}={value}: a run's {key} is what its checkpoint was trained with; set single keys "
                f"({key}.<name>=...) or pretrain a new run with {key}={value}"
            )
        check_groups([override])
        cfg.data = compose_group(key, value).data
    check_keys(cfg, overrides)
    for override in (o for o in overrides if o not in choices):
        key, value = _split(override)
        OmegaConf.update(cfg, key.lstrip("+"), _parse_value(value), merge=True)
    resolve(cfg)
    check_values(cfg, override_keys(overrides))
    return cfg


def override_keys(overrides: list[str]) -> list[str]:
    """The dotted keys that `key=value` overrides set."""
    return [_split(o)[0].lstrip("+") for o in overrides]


NON_FINITE = re.compile(r"[+-]?(?:inf|nan)", re.IGNORECASE)


def _parse_value(value: str) -> object:
    """Parse a command-line value the way Hydra does for plain values (YAML scalars and lists)."""
    parsed = OmegaConf.create({"v": value}) if value == "" else OmegaConf.create(f"v: {value}")
    node = parsed._get_node("v")
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node)
    # YAML keeps nan and inf as text where Hydra's grammar reads numbers; read them as Hydra does, so a
    # saved run's overrides and a composed config's agree (a folder called "inf" is quoted in both).
    if isinstance(parsed.v, str) and NON_FINITE.fullmatch(value):
        return float(value)
    return parsed.v


def resolve(cfg: DictConfig) -> None:
    """Resolve interpolations now, so the saved config is exactly what ran. A mandatory value left unset
    (`???`, e.g. backbone.name of backbone=timm) is named itself, not through a key that interpolates it."""
    for key in leaf_keys(cfg):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, leaf):
            raise UserError(f"config key {key!r} has no value; set it on the command line ({key}=...)")
    try:
        OmegaConf.resolve(cfg)
        OmegaConf.to_container(cfg, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or None
        if key is None:  # a ${...} in a value given on the command line (output_dir=/tmp/a${b})
            raise UserError(
                f"{str(err).splitlines()[0]}: a value holding ${{...}} is read as an interpolation; write \\${{ for "
                "a literal one, or choose a name without it"
            ) from None
        raise UserError(f"config key {key!r} has no value; set it on the command line ({key}=...)") from None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


ROOT_SETTINGS: Declaration = {
    "seed": int_in(0, 2**32 - 1),  # what numpy's and Python's seeding (seed_everything) accept
    "device": one_of(*DEVICES),
    "output_dir": TEXT,
    "resume": one_of("same", "changed"),
}
ANALYSIS_SETTINGS: Declaration = {"every": COUNT}  # steps between training-dynamics records (0 = off)


@functools.cache
def trainer_settings() -> Declaration:
    """The `trainer.*` settings of the root config (train/ sits above this layer and reads them)."""
    from selfsup.nets.compile import COMPILE_MODES

    return {
        **{key: POSITIVE_INT for key in ("epochs", "batch_size", "accumulate", "checkpoint_every", "log_every")},
        **{key: POSITIVE_INT for key in ("devices", "num_nodes")},
        "max_steps": optional(POSITIVE_INT),
        "grad_clip": optional(POSITIVE),
        "checkpoint_every_steps": optional(POSITIVE_INT),
        "activation_checkpointing": BOOL,
        "nonfinite": one_of(*NONFINITE_POLICIES),
        "nonfinite_lr_factor": FRACTION,
        "nonfinite_max": COUNT,
        "precision": one_of(*PRECISIONS),
        "compile": one_of("true", "false", *COMPILE_MODES),
        "channels_last": AUTO_TRUE_FALSE,
        "sync_batchnorm": BOOL,
        "num_workers": AUTO_OR_COUNT,
        "progress": BOOL,
    }


def method_settings(name: str) -> Declaration:
    """`method.*`: the name, and the keyword arguments the method's constructor declares (its predictor's
    settings are the section `method.predictor`)."""
    import selfsup.methods  # noqa: F401  (registers every method)
    from selfsup.methods.base import METHODS

    check_value("method.name", name, one_of(*METHODS.names()))
    return {"name": TEXT, **declaration(METHODS.get(name))}


def sections(cfg: DictConfig) -> dict[str, Declaration]:
    """Every config section this layer checks, with its owner's declaration. `eval` is evaluation's own
    (selfsup.eval.settings), which sits above this layer."""
    from selfsup.data.sources import data_settings
    from selfsup.data.views import ViewsConfig
    from selfsup.nets.backbones import backbone_settings
    from selfsup.nets.predictors import PredictorSettings
    from selfsup.optim import optim_settings

    return {
        "": ROOT_SETTINGS,
        "trainer": trainer_settings(),
        "analysis": ANALYSIS_SETTINGS,
        "data": data_settings(),
        "backbone": backbone_settings(cfg.backbone.name),
        "optim": optim_settings(cfg.optim.name),
        "views": declaration(ViewsConfig),
        "method": method_settings(cfg.method.name),
        "method.predictor": declaration(PredictorSettings),
    }


def check_values(cfg: DictConfig, only: Sequence[str] | None = None) -> None:
    """Check each setting (of those `only` names, if given) against its owner's declaration, so that an
    undeclared key, a wrong value or a wrong type fails in one line naming the key, the value and what is
    allowed."""
    check_tree(cfg, sections(cfg), only=only, delegated=("eval",))


def validate(cfg: DictConfig) -> None:
    """Values that cannot work fail here, before any output directory is touched."""
    from selfsup.data.views import views_config
    from selfsup.methods.build import check_views
    from selfsup.nets.backbones import backbone_factory, check_timm_model, is_factory_path, is_timm_name
    from selfsup.optim import scaled_lr

    check_values(cfg)
    views_config(cfg.views)  # the per-view lists against views.num
    check_views(cfg)  # what the method takes, as pretrain's model building checks it
    if is_factory_path(cfg.backbone.name):
        backbone_factory(cfg.backbone.name)  # importable and callable, before any output is written
    if is_timm_name(cfg.backbone.name):
        check_timm_model(cfg.backbone.name)
    _require(
        cfg.optim.final_weight_decay is None or cfg.optim.weight_decay > 0,
        "optim.final_weight_decay schedules optim.weight_decay, which is 0: set optim.weight_decay > 0",
    )
    t = cfg.trainer
    peak_lr = scaled_lr(cfg.optim.base_lr, t.batch_size, cfg.optim.lr_scaling)
    _require(  # an absolute final_lr above a small peak (AdamW's 1e-4 range) would make the "decay" a rise
        cfg.optim.final_lr <= peak_lr,
        f"optim.final_lr={cfg.optim.final_lr} is above the peak lr {peak_lr:.4g} (optim.base_lr="
        f"{cfg.optim.base_lr} scaled to batch {t.batch_size}): the cosine would raise the lr; set optim.final_lr "
        "to 0 or below the peak",
    )
    processes = t.devices * t.num_nodes
    _require(
        t.batch_size % (processes * t.accumulate) == 0,
        f"trainer.batch_size={t.batch_size} must be divisible by processes x accumulate = {processes * t.accumulate}",
    )


def config_text(cfg: DictConfig) -> str:
    """The YAML a run directory's config.yaml holds for `cfg`."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def config_digest(cfg: DictConfig) -> str:
    """The SHA-256 of config.yaml as `save_config` writes it: every checkpoint keeps it, so that a resume
    finds a config.yaml edited or deleted since."""
    return hashlib.sha256(config_text(cfg).encode()).hexdigest()


def save_config(cfg: DictConfig, path: Path) -> None:
    from selfsup.runs.files import atomic_write_text

    atomic_write_text(path, config_text(cfg))


def _stored_leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of stored data, list items included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        yield prefix, node
        return
    for key, value in items:
        yield from _stored_leaves(value, f"{prefix}.{key}" if prefix else str(key))


def renamed_settings(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A copy of stored config data with each key of RENAMED_KEYS under its new name, in its place. Both
    names set is not something selfsup wrote."""
    data = copy.deepcopy(data)
    for old, new in RENAMED_KEYS.items():
        *sections, leaf = old.split(".")
        node: Any = data
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        new_leaf = new.rpartition(".")[2]
        if new_leaf in node:
            raise UserError(f"{where} sets both {old} and {new} (its new name); restore it")
        items = [(new_leaf if key == leaf else key, value) for key, value in node.items()]
        node.clear()
        node.update(items)
    return data


def stored_config(data: Any, where: str) -> DictConfig:
    """A config from stored data (a run's config.yaml, a checkpoint's config) with nothing for OmegaConf to
    resolve: a saved config holds the values it ran with (they were resolved before it was written), and
    resolving `${...}` from a file would run its resolvers (`${oc.env:...}` copies the environment into
    results). A value left to be filled in (`???`) is refused alike. Settings renamed since it was written
    are read under their new names (RENAMED_KEYS)."""
    if not isinstance(data, dict):
        raise UserError(f"{where} is not a run's config (a mapping of settings); restore it or remove the run")
    for key, value in _stored_leaves(data):
        if isinstance(value, str) and ("${" in value or value == "???"):
            raise UserError(f"{where} sets {key} to {value!r}, which is not a value it ran with; restore it")
    return OmegaConf.create(renamed_settings(data, where))


def load_run_config(run_dir: Path) -> DictConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(
            f"no config.yaml in {run_dir}: is it a selfsup run directory (output_dir of `selfsup pretrain`)?"
        )
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as err:  # a damaged or foreign file
        raise UserError(f"{path} is not readable YAML ({type(err).__name__}); restore it or remove the run") from None
    cfg = stored_config(data, str(path))
    # Evaluation settings added since the run was made take their defaults, so old runs stay evaluable.
    try:
        cfg.eval = OmegaConf.merge(_compose([]).eval, cfg.get("eval", {}))
    except OmegaConfBaseException as err:  # an eval section edited or damaged into something selfsup never wrote
        where = getattr(err, "full_key", None) or "eval"
        raise UserError(f"{path} has a setting selfsup does not know or cannot read at {where}; restore it") from None
    return cfg
