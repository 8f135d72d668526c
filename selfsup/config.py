"""Compose the Hydra config groups from `key=value` overrides and check them before anything runs.

Hydra's compose API is used directly (not @hydra.main) so the CLI keeps control of the working
directory, logging and error messages: every mistake becomes one UserError line with close matches.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

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


def _compose(overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except HydraException as err:
        raise UserError(f"bad override: {str(err).splitlines()[0]}") from None


def load_config(overrides: list[str]) -> DictConfig:
    """Compose, check and resolve the pretraining config for these overrides."""
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


def validate(cfg: DictConfig) -> None:
    """Values that cannot work fail here, before any output directory is touched."""
    t = cfg.trainer
    for key in ("epochs", "batch_size", "accumulate", "checkpoint_every", "devices", "num_nodes", "log_every"):
        value = t[key]
        _require(isinstance(value, int) and value >= 1, f"trainer.{key} must be a positive integer, got {value!r}")
    _require(
        t.num_workers == "auto" or (isinstance(t.num_workers, int) and t.num_workers >= 0),
        f"trainer.num_workers must be auto or an integer >= 0, got {t.num_workers!r}",
    )
    _require(t.max_steps is None or t.max_steps >= 1, f"trainer.max_steps must be >= 1 or null, got {t.max_steps}")
    processes = t.devices * t.num_nodes
    _require(
        t.batch_size % (processes * t.accumulate) == 0,
        f"trainer.batch_size={t.batch_size} must be divisible by processes x accumulate = {processes * t.accumulate}",
    )
    _require(str(t.precision) in PRECISIONS, f"trainer.precision must be one of {PRECISIONS}, got {t.precision!r}")
    _require(cfg.device in DEVICES, f"device must be one of {DEVICES}, got {cfg.device!r}")
    _require(cfg.optim.base_lr > 0, f"optim.base_lr must be positive, got {cfg.optim.base_lr}")
    _require(cfg.optim.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {cfg.optim.weight_decay}")
    every = cfg.analysis.every
    _require(isinstance(every, int) and every >= 0, f"analysis.every must be an integer >= 0, got {every!r}")
    subset = cfg.data.subset
    _require(subset is None or (isinstance(subset, int) and subset >= 1), f"data.subset must be >= 1, got {subset!r}")


def save_config(cfg: DictConfig, path: Path) -> None:
    from selfsup.train.checkpoint import atomic_write_text

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
