"""README's method table against the registry and the presets: a method registered without a row, a preset
no row names, a loss the package does not have or an option its preset does not set fails here, so the
table cannot drift from the code as methods are added or their options renamed."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import selfsup
from selfsup import losses
from selfsup.config import load_config
from selfsup.methods.base import METHODS

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "selfsup" / "conf" / "method"
HEADER = "| method | configs | loss (`selfsup.losses`) |"


def outside_brackets(text: str) -> str:
    """`text` without its (possibly nested) bracketed remarks."""
    kept, depth = [], 0
    for char in text:
        depth += char == "("
        kept.append(char if depth == 0 else "")
        depth -= char == ")" and depth > 0
    return "".join(kept)


def table_rows() -> list[tuple[str, list[str], list[str]]]:
    """(method cell, configs named in the configs cell, names in the loss cell) for each row."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(HEADER) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        configs = re.findall(r"`([a-z0-9_]+)`", outside_brackets(cells[1]))
        rows.append((cells[0], configs, re.findall(r"`([^`]+)`", cells[2])))
    return rows


@functools.cache
def preset(config: str) -> dict:
    """The method section a preset composes to (a preset may extend another through its defaults)."""
    return OmegaConf.to_container(load_config([f"method={config}"]).method)


def test_every_preset_has_a_row_and_every_row_names_presets():
    named = [c for _, configs, _ in table_rows() for c in configs]
    assert len(named) == len(set(named)), "a preset is named in two rows"
    assert sorted(named) == sorted(p.stem for p in PRESETS.glob("*.yaml"))


def test_every_registered_method_has_a_row_and_is_exported():
    named = {preset(c)["name"] for _, configs, _ in table_rows() for c in configs}
    assert named == set(METHODS.names())
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert getattr(selfsup, cls.__name__) is cls and cls.__name__ in selfsup.__all__


@pytest.mark.parametrize("row", table_rows(), ids=lambda r: r[1][0])
def test_a_row_names_real_losses_and_options(row):
    _, configs, names = row
    options = preset(configs[0])
    for name in names:
        if name.startswith("method."):
            key = name.removeprefix("method.").split("=")[0]
            assert key in options, f"{name} is not an option of the {configs[0]} preset"
        elif re.fullmatch(r"[a-z_0-9]+", name):
            assert callable(getattr(losses, name, None)), f"selfsup.losses has no {name}"
