"""Generated bad input (issue 37): hypothesis draws values that each declared setting's rule must refuse, and
corrupts small valid files of the formats selfsup reads; every case must fail as a UserError of one line,
naming the setting or the file, with nothing created or changed on disk.

The invalid values come from a rule's `allowed` words (its error text, the spec a user reads), not from its
test, so a rule whose test is weakened is caught. Profiles: "ci" (the default, derandomized) and "long"
(SELFSUP_FUZZ=long, the benchmark whose example count RESULTS.md records)."""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_formats import write_cifar10, write_fashion_mnist
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save as safetensors_bytes

from selfsup.config import apply_overrides, group_options, load_config, load_run_config, sections
from selfsup.data.loader import load_split
from selfsup.errors import UserError
from selfsup.eval.export import FORMAT as FEATURES_FORMAT
from selfsup.eval.export import read_features
from selfsup.eval.settings import check_eval_settings, eval_sections
from selfsup.eval.transfer import recorded_settings
from selfsup.nets.weights import load_backbone_weights
from selfsup.runs.checkpoint import load_checkpoint
from selfsup.settings import Rule, cli_text
from tests.fault.cli_errors import one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")
PROFILE = os.environ.get("SELFSUP_FUZZ", "ci")
settings.register_profile(
    "fuzz-ci", max_examples=4, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile("fuzz-long", max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
FUZZ = settings.get_profile(f"fuzz-{PROFILE}")
CLI_EXAMPLES = {"ci": 20, "long": 500}[PROFILE]

# ---------------------------------------------------------------------------------------------------------
# Settings: every declared rule, and values its words exclude


NAMED_BACKBONES = {"timm": "timm:convnext_atto", "factory": "torchvision.models:resnet18"}


def choices_for(group: str, option: str) -> tuple[str, ...]:
    name = (f"backbone.name={NAMED_BACKBONES[option]}",) if group == "backbone" and option in NAMED_BACKBONES else ()
    return (f"{group}={option}", *name)


@functools.cache
def base_config(choices: tuple[str, ...]) -> DictConfig:
    return load_config(["data=synthetic", *choices])


@functools.cache
def declared_settings() -> list[tuple[tuple[str, ...], str, Rule]]:
    """(group choices, dotted key, rule) of every declared setting: the default config's sections, each
    method's, backbone's and optimizer's own, and evaluation's; one entry per key and rule text."""
    found: dict[tuple[str, str], tuple[tuple[str, ...], str, Rule]] = {}
    configs = [()] + [choices_for(g, o) for g in ("method", "backbone", "optim") for o in group_options(g)]
    for choices in configs:
        cfg = base_config(choices)
        for section, declared in {**sections(cfg), **eval_sections()}.items():
            if section and OmegaConf.select(cfg, section) is None:
                continue  # method.predictor of a method without one
            for key, rule in declared.items():
                name = f"{section}.{key}" if section else key
                found.setdefault((name, rule.allowed), (choices, name, rule))
    return sorted(found.values(), key=lambda s: s[1])


def render(value: object) -> str:
    """A value as override text that reads back as that value (strings quoted, so 'true' stays text)."""
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return cli_text(value)


words = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,10}", fullmatch=True)
floats = st.floats(allow_nan=True, allow_infinity=True)
nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])
BOUNDS = re.compile(r"(?:a number|an integer) in ([\[(])(-?[\d.]+), (-?[\d.]+)([\])])|an integer in (\d+)\.\.(\d+)")


def outside(low: float, high: float, closed_low: bool, closed_high: bool, integer: bool) -> st.SearchStrategy:
    """Numbers outside [low, high] (open ends excluded alike); for an integer rule, any float as well."""
    below = st.floats(max_value=low, exclude_max=closed_low, allow_nan=False)
    above = st.floats(min_value=high, exclude_min=closed_high, allow_nan=False) if math.isfinite(high) else below
    if not integer:
        return st.one_of(below, above, nonfinite)
    ints = st.integers(max_value=math.ceil(low) - (1 if closed_low else 0))
    if math.isfinite(high):
        ints |= st.integers(min_value=math.floor(high) + (1 if closed_high else 0))
    return st.one_of(ints, floats)


NUMERIC = {
    "a positive integer": (1, math.inf, True, True, True),
    "a positive number": (0, math.inf, False, True, False),
}
AT_LEAST = re.compile(r"(a number|an integer) >= (-?\d+)")


def bad_numbers(allowed: str) -> st.SearchStrategy | None:
    """Numbers (and non-numbers) outside a numeric rule's range, or None if `allowed` is not numeric."""
    if allowed == "a finite number":
        return nonfinite | words | st.booleans() | st.lists(st.integers(), max_size=3)
    allowed = re.sub(r" \([^)]*\)$", "", allowed)  # a reason in brackets: "an integer >= 8 (px; ...)"
    if allowed in NUMERIC:
        spec = NUMERIC[allowed]
    elif match := AT_LEAST.fullmatch(allowed):
        spec = (int(match[2]), math.inf, True, True, match[1] == "an integer")
    elif match := BOUNDS.fullmatch(allowed):
        if match[5] is not None:
            spec = (int(match[5]), int(match[6]), True, True, True)
        else:
            spec = (float(match[2]), float(match[3]), match[1] == "[", match[4] == "]", "integer" in allowed)
    else:
        return None
    return outside(*spec) | words | st.booleans() | st.lists(st.integers(min_value=1), min_size=1, max_size=3)


def valid_numbers(allowed: str) -> st.SearchStrategy:
    """Values a list-element rule accepts (a list of them is wrong only by its length or order)."""
    return st.floats(min_value=0.01, max_value=0.9) if "number" in allowed else st.integers(1, 9)


def bad_values(allowed: str, options: tuple[str, ...]) -> st.SearchStrategy:
    """Values that a rule described by `allowed` (its error text) must refuse. A rule text this does not
    know fails the fuzzer, so a new kind of rule comes with its invalid values."""
    if allowed.endswith(" or null"):
        return bad_values(allowed.removesuffix(" or null"), options)
    if allowed.startswith("auto or "):
        return bad_values(allowed.removeprefix("auto or "), options).filter(lambda v: v != "auto")
    if (numbers := bad_numbers(allowed)) is not None:
        return numbers
    if allowed.startswith("one of "):
        scalars = st.one_of(words, st.integers(), floats, st.booleans())
        return st.one_of(scalars, st.lists(scalars, min_size=1, max_size=2)).filter(
            lambda v: isinstance(v, list) or cli_text(v) not in options
        )
    if allowed == "a non-empty string":
        return st.one_of(st.just(""), st.integers(), floats, st.booleans(), st.lists(words, min_size=1, max_size=2))
    if allowed == "true or false":
        return st.one_of(words, st.integers(), floats, st.none(), st.lists(st.booleans(), min_size=1, max_size=2))
    if match := re.fullmatch(r"a list \[low, high\] with 0 < low <= high( <= 1)?", allowed):
        good = st.floats(min_value=0.01, max_value=1.0)
        high = st.floats(min_value=1.0, exclude_min=True, allow_nan=False) if match[1] else st.nothing()
        return st.one_of(
            st.lists(good, max_size=4).filter(lambda v: len(v) != 2),
            st.tuples(good, good).filter(lambda p: p[0] > p[1]).map(list),
            st.tuples(st.floats(max_value=0, allow_nan=False), good).map(list),
            st.tuples(good, high | nonfinite).map(list),
            good,
            st.lists(words, min_size=2, max_size=2),
        )
    if match := re.fullmatch(r"a list of (\d+ )?values, each (.+)", allowed):
        length = int(match[1]) if match[1] else None
        element = match[2].removesuffix(" or null")
        bad = bad_values(element, options)
        sized = 1 if length is None else length
        wrong_element = st.tuples(
            st.lists(valid_numbers(element), min_size=sized - 1, max_size=sized - 1), bad, st.randoms()
        ).map(lambda t: (lambda items: t[2].shuffle(items) or items)([*t[0], t[1]]))
        wrong_length = st.lists(valid_numbers(element), max_size=5).filter(lambda v: v != [] and len(v) != length)
        return st.one_of(wrong_element, valid_numbers(element), *([wrong_length] if length else []))
    if allowed.endswith(", or a list of such"):
        bad = bad_values(allowed.removesuffix(", or a list of such"), options)
        return bad.filter(lambda v: not isinstance(v, list)) | st.lists(bad, min_size=1, max_size=3)
    if allowed.startswith("null (from jitter_strength), a list [brightness, contrast, saturation, hue]"):
        factor = st.floats(min_value=0, max_value=0.5)
        four = st.lists(factor, min_size=4, max_size=4)
        broken = st.one_of(
            st.lists(factor, min_size=1, max_size=6).filter(lambda v: len(v) != 4),
            st.tuples(four, st.integers(0, 3), st.floats(max_value=0, exclude_max=True, allow_nan=False)).map(
                lambda t: [*t[0][: t[1]], t[2], *t[0][t[1] + 1 :]]
            ),
            st.tuples(four, st.floats(min_value=0.5, exclude_min=True, allow_nan=False)).map(
                lambda t: [*t[0][:3], t[1]]
            ),
        )
        return st.one_of(broken, st.tuples(four, broken).map(list), words, floats)
    raise AssertionError(f"no invalid values known for rule {allowed!r}: add them to bad_values")


def saved(choices: tuple[str, ...]) -> DictConfig:
    """A plain copy of the composed config, as the checks read a run's config.yaml."""
    return OmegaConf.create(OmegaConf.to_container(base_config(choices)))


def refusal(choices: tuple[str, ...], override: str) -> str:
    """The one-line refusal of `override` by the checks that every command runs on a setting."""
    key = override.split("=")[0]
    with pytest.raises(UserError) as err:
        cfg = apply_overrides(saved(choices), [override])
        check_eval_settings(cfg, only=[key])
    return str(err.value)


@pytest.mark.parametrize(("choices", "key", "rule"), declared_settings(), ids=[s[1] for s in declared_settings()])
def test_every_setting_refuses_values_outside_its_rule(choices, key, rule):
    @FUZZ
    @given(bad_values(rule.allowed, rule.options))
    def refuses(value):
        message = refusal(choices, f"{key}={render(value)}")
        assert "\n" not in message and message.startswith(f"{key} must be "), message

    refuses()


def test_the_fuzzer_covers_every_section():
    covered = {key.rpartition(".")[0] for _, key, _ in declared_settings()}
    assert covered >= {"", "trainer", "analysis", "data", "backbone", "optim", "views", "method", *eval_sections()}


@settings(FUZZ, max_examples=CLI_EXAMPLES)
@given(data=st.data())
def test_selfsup_config_refuses_in_one_line_and_writes_nothing(data, capsys, tmp_path_factory, monkeypatch):
    """End to end through `selfsup config` (what `pretrain` validates with): exit 2, one stderr line naming
    the setting, no traceback, no file written in the working directory."""
    choices, key, rule = data.draw(st.sampled_from(declared_settings()))
    value = data.draw(bad_values(rule.allowed, rule.options))
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    message = one_line_error(capsys, ["config", "data=synthetic", *choices, f"{key}={render(value)}"])
    assert key in message, message
    assert not any(cwd.iterdir())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (  # was an AttributeError traceback: the backbone's settings were looked up by a name that is no string
            "backbone.name=0",
            # the registered names between: other tests register backbones of their own in the same process
            (
                "backbone.name must be one of resnet18, ",
                "timm:<model name> or a factory path package.module:function, got 0",
            ),
        ),
    ],
)
def test_settings_the_fuzzer_found(capsys, override, message):
    start, end = message
    error = one_line_error(capsys, ["config", "data=synthetic", override])
    assert error.startswith(start) and error.endswith(end), error


@pytest.mark.parametrize("text", ["inf", "-inf", "NaN", "2024"])
def test_a_text_setting_that_reads_as_a_number_is_refused_alike_with_the_quoting_hint(capsys, text):
    """The long profile found data.root=inf accepted on a saved run (YAML reads inf as text) but refused by
    the composed config (Hydra reads a number). Both read a number now, and both say how to quote it."""
    shown = cli_text(float(text) if text.lower().lstrip("+-") in ("inf", "nan") else int(text))
    hint = f"(text that reads as a number is quoted: \"data.root='{shown}'\")"
    composed = one_line_error(capsys, ["config", "data=synthetic", f"data.root={text}"])
    assert composed.startswith("data.root must be a non-empty string, got ") and composed.endswith(hint), composed
    assert refusal(("data=synthetic",), f"data.root={text}") == composed
    assert apply_overrides(saved(("data=synthetic",)), [f"data.root='{text}'"]).data.root == text


# ---------------------------------------------------------------------------------------------------------
# Files: small valid samples of each format, corrupted


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def outcome(root: Path, read: Callable[[], object]) -> str | None:
    """Run a reader on corrupted files under `root`: None if it read them (a flip in pixel bytes is still an
    image), else its one-line UserError; any other exception fails the test, and so does a change on disk."""
    before = snapshot(root)
    try:
        read()
        message = None
    except UserError as err:
        message = str(err)
        assert message and "\n" not in message, message
    assert snapshot(root) == before
    return message


def flip(data: bytes, at: int, value: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ (value or 1)]) + data[at + 1 :]


byte_damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 0.999), st.just(0)),
    st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(1, 255)),
)


def damage(data: bytes, how: tuple[str, float, int]) -> bytes:
    kind, where, value = how
    return data[: int(len(data) * where)] if kind == "truncate" else flip(data, int(where), value)


@functools.cache
def data_section(name: str) -> DictConfig:
    return load_config([f"data={name}"]).data


def read_split(name: str, root: Path) -> Callable[[], object]:
    def read() -> object:
        cfg = data_section(name).copy()
        cfg.root = str(root)
        return load_split(cfg, "train")

    return read


@FUZZ
@given(how=byte_damage, batch=st.integers(1, 5))
def test_a_damaged_cifar_batch_is_refused_in_one_line(tmp_path_factory, how, batch):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_per_batch=2)
    path = root / "cifar-10-batches-py" / f"data_batch_{batch}"
    path.write_bytes(damage(path.read_bytes(), how))
    message = outcome(root, read_split("cifar10", root))
    assert message is not None or how[0] == "flip", "a truncated pickle was read"


CIFAR_BREAKS = {
    "missing key": lambda b: {k: v for k, v in b.items() if k != "labels"},
    "ragged labels": lambda b: {**b, "labels": b["labels"][:-1]},
    "label out of range": lambda b: {**b, "labels": [10, *b["labels"][1:]]},
    "wrong shape": lambda b: {**b, "data": b["data"].reshape(-1)[:-3]},
    "wrong dtype": lambda b: {**b, "data": b["data"].astype(np.float32)},
    "not a dict": lambda b: [b["data"], b["labels"]],
    "labels as text": lambda b: {**b, "labels": "0,1"},
}


@pytest.mark.parametrize("kind", CIFAR_BREAKS)
def test_a_malformed_cifar_batch_is_refused_in_one_line(tmp_path, kind):
    write_cifar10(tmp_path, n_per_batch=2)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    with path.open("rb") as f:
        batch = pickle.load(f)
    path.write_bytes(pickle.dumps(CIFAR_BREAKS[kind](batch), protocol=2))
    assert outcome(tmp_path, read_split("cifar10", tmp_path)) is not None


@FUZZ
@given(how=byte_damage, file=st.sampled_from(["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]))
def test_a_damaged_idx_file_is_refused_in_one_line(tmp_path_factory, how, file):
    root = tmp_path_factory.mktemp("fashion")
    write_fashion_mnist(root, n_train=4, n_test=2)
    path = root / "FashionMNIST" / "raw" / file
    path.write_bytes(damage(path.read_bytes(), how))
    message = outcome(root, read_split("fashion_mnist", root))
    assert message is not None or how[0] == "flip", "a truncated idx file was read"


def features_bytes(metadata: dict[str, str]) -> bytes:
    tensors = {"features": torch.zeros(2, 3), "labels": torch.zeros(2, dtype=torch.long)}
    return safetensors_bytes(tensors, {"format": FEATURES_FORMAT, **metadata})


json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
).map(json.dumps)


@FUZZ
@given(how=byte_damage, settings_text=json_text | st.text(max_size=8))
def test_a_damaged_safetensors_export_is_refused_in_one_line(tmp_path_factory, how, settings_text):
    """Features and backbone exports: damaged bytes, and `settings` metadata that is any JSON or none."""
    root = tmp_path_factory.mktemp("export")
    path = root / "train.safetensors"
    path.write_bytes(damage(features_bytes({"settings": settings_text}), how))
    outcome(root, lambda: read_features(path))
    assert isinstance(recorded_settings({"settings": settings_text}), dict)
    weights = root / "backbone.safetensors"
    weights.write_bytes(damage(safetensors_bytes({"conv1.weight": torch.zeros(2, 3, 1, 1)}), how))
    outcome(root, lambda: load_backbone_weights(torch.nn.Conv2d(3, 2, 1), weights))


@FUZZ
@given(how=byte_damage)
def test_a_damaged_checkpoint_is_refused_in_one_line(tmp_path_factory, how):
    root = tmp_path_factory.mktemp("ckpt")
    path = root / "last.pt"
    torch.save({"model": {"w": torch.zeros(3)}, "format_version": 1}, path)
    path.write_bytes(damage(path.read_bytes(), how))
    message = outcome(root, lambda: load_checkpoint(path))
    assert message is not None or how[0] == "flip", "a truncated checkpoint was read"


def test_a_run_config_with_an_unknown_eval_setting_is_refused_in_one_line(tmp_path):
    """Found by the fuzzer on CI (a flipped byte turned eval.finetune.chunk_epochs into bhunk_epochs): merging
    the stored eval section into today's defaults was an OmegaConf traceback."""
    cfg = base_config(())
    cfg.eval.finetune = {**cfg.eval.finetune, "bhunk_epochs": 1}
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(UserError, match="eval.finetune.bhunk_epochs; restore it") as refused:
        load_run_config(tmp_path)
    assert "\n" not in str(refused.value)


@FUZZ
@given(how=byte_damage)
@example(how=("flip", 3, 128))  # was a UnicodeDecodeError traceback: config.yaml that is not UTF-8
def test_a_damaged_run_config_is_refused_in_one_line(tmp_path_factory, how):
    root = tmp_path_factory.mktemp("run")
    path = root / "config.yaml"
    path.write_text(OmegaConf.to_yaml(base_config(())))
    path.write_bytes(damage(path.read_bytes(), how))
    outcome(root, lambda: load_run_config(root))
