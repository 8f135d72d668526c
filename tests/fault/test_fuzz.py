"""Generated bad input (issue 37): hypothesis draws values that each declared setting's rule must refuse, and
corrupts small valid files of the formats selfsup reads; every case must fail as a UserError of one line,
naming the setting or the file, with nothing created or changed on disk.

The invalid values come from a rule's `allowed` words (its error text, the spec a user reads), not from its
test, so a rule whose test is weakened is caught. Profiles: "ci" (the default, derandomized) and "long"
(SELFSUP_FUZZ=long, the benchmark whose example count RESULTS.md records)."""

from __future__ import annotations

import functools
import io
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
from fixtures_formats import write_cifar10, write_fashion_mnist, write_imagefolder, write_stl10, write_svhn
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save as safetensors_bytes
from scipy.io import savemat

from selfsup.config import apply_overrides, group_options, load_config, load_run_config, sections
from selfsup.data.detection import build_detection_dataset
from selfsup.data.format_samples import write_coco, write_pennfudan, write_voc_segmentation
from selfsup.data.images import shown
from selfsup.data.loader import load_split
from selfsup.data.matfile import MatFileError, check_mat5
from selfsup.data.segmentation import voc_segmentation
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
    return load_config([f"data={name}", "data.root=."]).data  # root: the tests set it (imagefolder has none)


def read_split(name: str, root: Path, split: str = "train", items: tuple[int, ...] = ()) -> Callable[[], object]:
    """Read a split as the CLI loads it, and decode `items` of it (image files are decoded when indexed)."""

    def read() -> object:
        cfg = data_section(name).copy()
        cfg.root = str(root)
        dataset = load_split(cfg, split)
        return [dataset[i] for i in items]

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


# ---------------------------------------------------------------------------------------------------------
# Image datasets, detection and segmentation: damaged files of each, read through the CLI's entry points


@FUZZ
@given(how=byte_damage)
# Each was a segmentation fault in scipy's reader: the complex flag set on X (the next variable's header read as
# its imaginary part), an element type scipy has no entry for.
@example(how=("flip", 145, 8))
@example(how=("flip", 184, 2))
def test_a_damaged_svhn_file_is_refused_in_one_line(tmp_path_factory, how):
    root = tmp_path_factory.mktemp("svhn")
    write_svhn(root, n_train=2, n_test=1)
    path = root / "train_32x32.mat"
    path.write_bytes(damage(path.read_bytes(), how))
    outcome(root, read_split("svhn", root, items=(0, 1)))


@FUZZ
@given(how=byte_damage, file=st.sampled_from(["train_X.bin", "train_y.bin", "unlabeled_X.bin"]))
def test_a_damaged_stl10_file_is_refused_in_one_line(tmp_path_factory, how, file):
    root = tmp_path_factory.mktemp("stl10")
    write_stl10(root, n_train=2, n_test=1, n_unlabeled=1)
    path = root / "stl10_binary" / file
    path.write_bytes(damage(path.read_bytes(), how))
    message = outcome(root, read_split("stl10", root, "train+unlabeled", items=(0, 2)))
    assert message is not None or how[0] == "flip", "a truncated STL-10 file was read"


@FUZZ
@given(how=byte_damage, ext=st.sampled_from(["png", "jpg"]))
# Each was a segmentation fault (torchvision's PNG decoder on damaged pixel data), which killed the process.
@example(how=("flip", 42, 1), ext="png")
@example(how=("flip", 300, 128), ext="png")
@example(how=("truncate", 0.0, 0), ext="png")  # an empty file
def test_a_damaged_image_in_an_image_folder_is_refused_in_one_line(tmp_path_factory, how, ext):
    root = tmp_path_factory.mktemp("folder")
    write_imagefolder(root, ["a", "b"], 1, ext=ext, splits=("train",))
    path = root / "train" / "a" / f"000.{ext}"
    path.write_bytes(damage(path.read_bytes(), how))
    message = outcome(root, read_split("imagefolder", root, items=(0, 1)))
    assert message is None or message.startswith(f"cannot decode image {path} ("), message


# File names a folder of images may hold: spaces, non-ASCII, a newline, bytes that are not UTF-8, a leading dot
# or dash, upper-case extensions; the messages that name them must still be one line.
odd_names = st.one_of(
    st.text(st.characters(exclude_characters="/\0", exclude_categories=("Cs",)), min_size=1, max_size=12),
    st.sampled_from(["a b", "ünï", "new\nline", "tab\t", os.fsdecode(b"\xff\xfe"), ".hidden", "-dash", "x" * 200]),
)


@FUZZ
@given(name=odd_names, ext=st.sampled_from([".png", ".JPG", ".jpeg", ".Png"]), how=byte_damage | st.none())
@example(name="new\nline", ext=".png", how=("truncate", 0.5, 0))  # would be a message of two lines
@example(name=os.fsdecode(b"\xff"), ext=".jpg", how=("truncate", 0.5, 0))
def test_an_image_folder_with_odd_names_and_an_empty_class_is_read_or_refused_in_one_line(
    tmp_path_factory, name, ext, how
):
    """Class a holds one image under an odd name (damaged or not), class b nothing, class c a good image."""
    root = tmp_path_factory.mktemp("odd")
    write_imagefolder(root, ["a", "c"], 1, splits=("train",))
    (root / "train" / "b").mkdir()
    (root / "train" / "a" / "000.png").rename(path := root / "train" / "a" / f"{name}{ext}")
    (root / "train" / "a" / "dir.png").mkdir()  # a folder named like an image is no image
    if how is not None:
        path.write_bytes(damage(path.read_bytes(), how))
    message = outcome(root, read_split("imagefolder", root, items=(0, 1)))
    assert message is None or message.startswith(f"cannot decode image {shown(path)} ("), message
    cfg = data_section("imagefolder").copy()
    cfg.root = str(root)
    dataset = load_split(cfg, "train")
    assert dataset.classes == ["a", "b", "c"] and dataset.labels.tolist() == [0, 2]


@FUZZ
@given(how=byte_damage, file=st.sampled_from(["image", "mask"]))
@example(how=("flip", 825, 1), file="mask")  # was a segmentation fault, as in image folders
def test_a_damaged_pennfudan_png_is_refused_in_one_line(tmp_path_factory, how, file):
    root, _ = write_pennfudan(tmp_path_factory.mktemp("pennfudan"), count=2)
    path = root / ("PNGImages/FudanPed00001.png" if file == "image" else "PedMasks/FudanPed00001_mask.png")
    path.write_bytes(damage(path.read_bytes(), how))
    outcome(root, lambda: build_detection_dataset("pennfudan", root, "train")[0])


VOC_FILES = {
    "image": "VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg",
    "mask": "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png",
    "list": "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt",
    "SBD mask": "benchmark_RELEASE/dataset/cls/2008_000002.mat",
    "SBD list": "benchmark_RELEASE/dataset/train.txt",
}


def mat_bytes(**arrays: object) -> bytes:
    buffer = io.BytesIO()
    savemat(buffer, arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("arrays", "at", "value", "reason"),
    [
        ({"a": [[1.0, 2.0]], "b": [[3.0]]}, 176, 1, "an array's values at byte 184 has element type 8"),
        # complex: b's header is read as a's imaginary part
        ({"a": [[1.0, 2.0]], "b": [[3.0]]}, 145, 8, "the imaginary part of an array at byte 208 has element type 14"),
        ({"s": "text"}, 156, 8, "an array has dimensions [], not two or more sizes"),  # text of no dimensions
    ],
)
def test_mat_files_that_crashed_scipy_are_refused_before_it_reads_them(arrays, at, value, reason):
    """Each damage made scipy's .mat reader (SVHN, SBD) crash the process; the check before it refuses them."""
    good = mat_bytes(**arrays)
    check_mat5(good)
    with pytest.raises(MatFileError) as refused:
        check_mat5(flip(good, at, value))
    assert str(refused.value).startswith(reason), refused.value


def read_voc_segmentation(root: Path) -> Callable[[], object]:
    """train_aug (VOC's lists and masks with SBD's) as `selfsup eval` builds it, every item decoded."""

    def read() -> object:
        dataset = voc_segmentation(root / "VOCdevkit" / "VOC2012", "train_aug", root / "benchmark_RELEASE" / "dataset")
        return [dataset[i] for i in range(len(dataset))]

    return read


@FUZZ
@given(how=byte_damage, file=st.sampled_from(sorted(VOC_FILES)))
@example(how=("flip", 3, 128), file="list")  # was a UnicodeDecodeError traceback: an id list that is not UTF-8
@example(how=("flip", 272, 8), file="SBD mask")  # was a segmentation fault in scipy's reader, as for SVHN
def test_damaged_voc_segmentation_files_are_refused_in_one_line(tmp_path_factory, how, file):
    root = tmp_path_factory.mktemp("voc")
    write_voc_segmentation(root)
    path = root / VOC_FILES[file]
    path.write_bytes(damage(path.read_bytes(), how))
    outcome(root, read_voc_segmentation(root))


def read_coco(root: Path) -> Callable[[], object]:
    def read() -> object:
        dataset = build_detection_dataset("coco", root, "val2017")
        return [dataset[i] for i in range(len(dataset))]

    return read


@FUZZ
@given(how=byte_damage, file=st.sampled_from(["annotations/instances_val2017.json", "val2017/a.jpg"]))
def test_damaged_coco_files_are_refused_in_one_line(tmp_path_factory, how, file):
    root = write_coco(tmp_path_factory.mktemp("coco"))
    path = root / file
    path.write_bytes(damage(path.read_bytes(), how))
    outcome(root, read_coco(root))


COCO_FIELDS = {
    "images": ["id", "file_name", "width", "height"],
    "annotations": ["id", "image_id", "category_id", "bbox", "iscrowd", "area"],
    "categories": ["id", "name"],
}
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 2**63])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(["id", "x"]), inner, max_size=2),
    max_leaves=6,
)
box_numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-100, 100) | st.just(10**400)
# A change to the annotations: (what, section, entry, key, value)
coco_breaks = st.one_of(
    st.tuples(
        st.just("set"), st.sampled_from(sorted(COCO_FIELDS)), st.integers(0, 3), st.text(max_size=1), json_values
    ),
    st.tuples(
        st.just("delete"), st.sampled_from(sorted(COCO_FIELDS)), st.integers(0, 3), st.text(max_size=1), st.none()
    ),
    st.tuples(st.just("section"), st.sampled_from(sorted(COCO_FIELDS)), st.just(0), st.just(""), json_values),
    st.tuples(st.just("drop"), st.sampled_from(sorted(COCO_FIELDS)), st.just(0), st.just(""), st.none()),
    st.tuples(st.just("bbox"), st.just("annotations"), st.integers(0, 3), st.integers(0, 3), box_numbers),
    st.tuples(st.just("top"), st.just(""), st.just(0), st.just(""), json_values),
)


def broken_coco(data: dict, change: tuple) -> object:
    """`data` with one change; a `set` or `delete` key is one of the entry's fields, picked by the drawn text."""
    what, section, at, key, value = change
    if what == "top":
        return value
    if what in ("section", "drop"):
        if what == "drop":
            del data[section]
        else:
            data[section] = value
        return data
    entry = data[section][at % len(data[section])]
    if what == "bbox":
        entry["bbox"][key] = value
        return data
    fields = COCO_FIELDS[section]
    field = fields[(ord(key) if key else 0) % len(fields)]
    if what == "delete":
        entry.pop(field, None)
    else:
        entry[field] = value
    return data


@FUZZ
@given(change=coco_breaks)
# Each was a traceback: a file_name that is no text (TypeError), an integer too large for a float or an int64
# (OverflowError), a file name with a newline (a message of two lines).
@example(change=("set", "images", 0, "\x01", 5))
@example(change=("set", "annotations", 0, "\x03", [10**400, 0, 1, 1]))
@example(change=("set", "annotations", 0, "\x04", 10**30))
@example(change=("set", "images", 0, "\x02", 10**400))
@example(change=("set", "images", 0, "\x01", "a\nb.jpg"))
@example(change=("set", "annotations", 0, "\x02", 99))  # a category id not in the list
@example(change=("bbox", "annotations", 0, 2, -5))  # a negative width: the box is left out, as torchvision does
@example(change=("bbox", "annotations", 0, 3, math.nan))
def test_structurally_wrong_coco_annotations_are_refused_in_one_line(tmp_path_factory, change):
    root = write_coco(tmp_path_factory.mktemp("coco"))
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(broken_coco(json.loads(path.read_text()), change)))
    outcome(root, read_coco(root))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("set", "images", 0, "\x01", 5), "images[0] has file_name 5, not a file name"),
        (("set", "annotations", 0, "\x02", 99), "annotations[0] has category_id 99, not an id in categories"),
        (("set", "annotations", 0, "\x01", 99), "annotations[0] has image_id 99, not an id in images"),
        (
            ("bbox", "annotations", 0, 3, math.nan),
            "annotations[0] has bbox [4.5, 6, 20, nan], not finite [x, y, width, height]",
        ),
        (
            ("set", "annotations", 0, "\x04", 10**30),
            "annotations[0] has iscrowd 1000000000000000000000000000000, not 0 or 1",
        ),
        (("set", "images", 0, "\x02", -1), "images[0] has width -1, not a positive number"),
        (("delete", "categories", 0, "\x01", None), "categories[0] has no 'name'"),
        (("section", "annotations", 0, "", None), "its 'annotations' list is null"),
        (("top", "", 0, "", [1]), "its top level is an array, not an object"),
    ],
)
def test_wrong_coco_annotations_name_the_entry_and_what_is_wrong(tmp_path, change, message):
    root = write_coco(tmp_path)
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(broken_coco(json.loads(path.read_text()), change)))
    refused = outcome(root, read_coco(root))
    fix = "; restore the original file or fix the tool that wrote it"
    assert refused == f"malformed COCO annotations {path}: {message}{fix}", refused


def test_a_coco_box_of_negative_size_is_left_out(tmp_path):
    """torchvision's COCO reference drops boxes that are empty once clipped to the image; so does the reader."""
    root = write_coco(tmp_path)
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(broken_coco(json.loads(path.read_text()), ("bbox", "annotations", 0, 2, -5))))
    dataset = build_detection_dataset("coco", root, "val2017")
    _, target = dataset[2]  # image id 10, a.jpg: its crowd box is left
    assert target["boxes"].tolist() == [[50, 40, 64, 48]] and target["iscrowd"].tolist() == [1]
