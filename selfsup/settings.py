"""Declared settings: what each configurable part accepts, written once beside the part that owns it.

An owner (the trainer, the views, the optimizer, each method, each evaluation task, bench, submit) declares
its settings either as a mapping of key -> `Rule`, or through the `Annotated` types of its constructor's
keywords or its dataclass fields (`proj_hidden_dim: PositiveInt = 2048`), so that the type, the default and
the allowed values of a library argument sit in one place. `check_section` reads a config section against
its declaration: an undeclared key, a wrong type or a value out of range fails in one line naming the key,
the value and what is allowed. Nothing is matched by pattern, so a key added to a config group without a
declaration fails for its author on the first run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Annotated, Any, NamedTuple

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from selfsup.errors import SettingError, UserError
from selfsup.registry import close_matches_hint


class Rule(NamedTuple):
    """What a setting may hold: a test, the words for it in an error, and the options of a choice."""

    ok: Callable[[Any], bool]
    allowed: str
    options: tuple[str, ...] = ()
    is_list: bool = False  # written a,b or [a,b] as a command-level key


Declaration = Mapping[str, Rule]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
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
    return Rule(lambda v: v is None or rule.ok(v), f"{rule.allowed} or null", rule.options, rule.is_list)


def int_in(low: int, high: int) -> Rule:
    """An integer in [low, high]: for settings whose range the code behind them cannot go beyond."""
    return Rule(lambda v: is_int(v) and low <= v <= high, f"an integer in [{low}, {high}]")


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def list_of(rule: Rule, length: int | None = None) -> Rule:
    """A list of values that each pass `rule` (of `length` entries, if given)."""
    size = "" if length is None else f"{length} "
    return Rule(
        lambda v: _is_list(v) and (length is None or len(v) == length) and all(rule.ok(x) for x in v),
        f"a list of {size}values, each {rule.allowed}",
        rule.options,
        is_list=True,
    )


def scalar_or_list(rule: Rule) -> Rule:
    """One value for all, or a list of them (per-view probabilities)."""
    return Rule(lambda v: rule.ok(v) or list_of(rule).ok(v), f"{rule.allowed}, or a list of such")


POSITIVE_INT = Rule(lambda v: is_int(v) and v >= 1, "a positive integer")
COUNT = Rule(lambda v: is_int(v) and v >= 0, "an integer >= 0")
POSITIVE = Rule(lambda v: is_number(v) and v > 0, "a positive number")
NON_NEGATIVE = Rule(lambda v: is_number(v) and v >= 0, "a number >= 0")
NUMBER = Rule(is_number, "a finite number")
PROBABILITY = Rule(lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
BELOW_ONE = Rule(lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")
MOMENTUM = BELOW_ONE
FRACTION = Rule(lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
TEXT = Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")
AUTO_OR_COUNT = Rule(lambda v: v == "auto" or COUNT.ok(v), "auto or an integer >= 0")
AUTO_TRUE_FALSE = one_of("auto", "true", "false")
RANGE = Rule(
    lambda v: list_of(NUMBER, 2).ok(v) and 0 < v[0] <= v[1],
    "a list [low, high] with 0 < low <= high",
)
SCALE_RANGE = Rule(lambda v: RANGE.ok(v) and v[1] <= 1, "a list [low, high] with 0 < low <= high <= 1")

# Types for constructor keywords and dataclass fields that declare their rule with their type.
PositiveInt = Annotated[int, POSITIVE_INT]
Count = Annotated[int, COUNT]
Positive = Annotated[float, POSITIVE]
NonNegative = Annotated[float, NON_NEGATIVE]
Probability = Annotated[float, PROBABILITY]
Momentum = Annotated[float, MOMENTUM]
Flag = Annotated[bool, BOOL]


def _rule_of(hint: Any) -> Rule | None:
    """The Rule inside an `Annotated[T, Rule]` hint, or inside `Annotated[...] | None` as an optional rule."""
    if typing.get_origin(hint) is Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Rule)), None)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        inner = [a for a in args if a is not type(None)]
        rule = _rule_of(inner[0]) if len(inner) == 1 else None
        return optional(rule) if rule is not None and len(args) == 2 else rule
    return None


@functools.cache
def declaration(owner: Any) -> dict[str, Rule]:
    """The settings an owner declares through `Annotated[T, Rule]` types: a dataclass's fields, or the
    keyword parameters of a callable or of a class's constructor. Parameters without a Rule (the backbone a
    method wraps) are not settings."""
    if isinstance(owner, type) and not dataclasses.is_dataclass(owner):
        owner = owner.__init__
    hints = typing.get_type_hints(owner, include_extras=True)
    return {name: rule for name, hint in hints.items() if (rule := _rule_of(hint)) is not None}


def check_value(key: str, value: Any, rule: Rule) -> None:
    """One setting against its rule, failing in one line with the key, the value and what is allowed."""
    if rule.ok(value):
        return
    shown = repr(value) if isinstance(value, str) else cli_text(value)
    hint = close_matches_hint(value, list(rule.options)) if isinstance(value, str) else ""
    if isinstance(value, float) and not math.isfinite(value):
        hint = " (numbers must be finite)"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and rule.ok(cli_text(value)):
        hint = f" (text that reads as a number is quoted: \"{key}='{cli_text(value)}'\")"
    if rule.is_list and rule.options and _is_list(value):
        bad = next((str(v) for v in value if cli_text(v) not in rule.options), None)
        hint = f": {bad!r} is not one{close_matches_hint(bad, list(rule.options))}" if bad is not None else hint
    raise UserError(f"{key} must be {rule.allowed}, got {shown}{hint}")


def check_arguments(owner: str, values: Mapping[str, Any], declared: Declaration) -> None:
    """A library call's arguments (those `declared` names) against their rules: the first out of its rule
    fails in one line naming the owner, as a SettingError, a ValueError ("SimCLR: temperature must be a
    positive number, got -1")."""
    for key, value in values.items():
        rule = declared.get(key)
        if rule is None:
            continue
        try:
            check_value(key, value, rule)
        except UserError as err:
            raise SettingError(f"{owner}: {err}") from None


def check_section(prefix: str, values: Mapping[str, Any], declared: Declaration) -> None:
    """Every key of a config section (nested sections excluded by the caller) against its declaration."""
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if key not in declared:
            full = [f"{prefix}.{k}" if prefix else k for k in declared]
            hint = close_matches_hint(name, full)
            raise UserError(
                f"unknown setting {name}{hint} (the settings of {prefix or 'the root'}: {', '.join(declared)})"
            )
        check_value(name, value, declared[key])


def parse_text(key: str, text: str, rule: Rule) -> Any:
    """A command-level `key=value` (bench, submit) read as a YAML scalar, as config overrides are, and checked
    against its rule; text that the rule takes as written (a partition named 123) stays text."""
    try:
        value = OmegaConf.create(f"v: {text}").v if text else text
    except OmegaConfBaseException:
        value = text
    if rule.ok(value):
        return value
    if rule.ok(text):
        return text
    check_value(key, value, rule)
    return value


def check_tree(
    node: DictConfig,
    sections: Mapping[str, Declaration],
    prefix: str = "",
    only: Sequence[str] | None = None,
    delegated: Collection[str] = (),
) -> None:
    """Every setting of a config tree against the declaration of its section (`sections`: dotted prefix ->
    declaration, "" for the root). A nested node is a section of its own where one is declared under its name,
    and otherwise a value that its parent's declaration must name. With `only`, just the keys named there (and
    the keys under them) are checked: a saved run's config may hold settings since retired. Sections named in
    `delegated` are left to owners above the caller's layer (evaluation checks `eval`)."""
    values = {}
    for key in node.keys():
        name = f"{prefix}.{key}" if prefix else str(key)
        child = node._get_node(key)
        if name in delegated:
            continue
        if isinstance(child, DictConfig) and name in sections:
            check_tree(child, sections, name, only, delegated)
        elif only is None or any(name == k or name.startswith(f"{k}.") or k.startswith(f"{name}.") for k in only):
            values[key] = OmegaConf.to_container(child) if isinstance(child, (DictConfig, ListConfig)) else node[key]
    check_section(prefix, values, sections[prefix])


def parse_list(value: str) -> list[str]:
    """`[knn,linear]`, `knn,linear` or `knn` -> ['knn', 'linear']; an unbalanced bracket is refused."""
    text = value.strip()
    if text.startswith("[") != text.endswith("]") or text.count("[") > 1 or text.count("]") > 1:
        raise UserError(f"{value!r} is not a list: write [a,b] or a,b")
    return [item.strip() for item in text.strip("[]").split(",") if item.strip()]


T = typing.TypeVar("T")


def from_keys(cls: type[T], keys: Mapping[str, str], prefix: str) -> T:
    """A dataclass of declared settings from command-level `name=value` text (bench, submit): lists written
    a,b or [a,b], the rest read as YAML scalars; an unknown name or a bad value fails in one line."""
    declared = declaration(cls)
    values: dict[str, Any] = {}
    for name, text in keys.items():
        rule = declared.get(name)
        if rule is None:
            values[name] = text  # check_section names it, with close matches
        elif rule.is_list:
            values[name] = parse_list(text)
        else:
            values[name] = parse_text(f"{prefix}.{name}" if prefix else name, text, rule)
    check_section(prefix, values, declared)
    return cls(**values)
