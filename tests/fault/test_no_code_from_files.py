"""Nothing read from a file is imported or called. `backbone.name: tempfile:mkdtemp` in a run's config.yaml,
or in the config a checkpoint embeds (plain data, so `weights_only=True` accepts it), used to be imported and
called by `eval` and `export backbone` before their refusal; `${oc.env:...}` in a hand-edited config.yaml was
resolved into results. Now a factory path in a file refuses in one line, naming the command-line fix, before
any import, and a run's files are read as written."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from cli_errors import one_line_error
from test_config_matches_run import RUN

from selfsup.cli import main
from selfsup.runs.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
FACTORIES = ["tempfile:mkdtemp", "os:abort"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main([*RUN, f"output_dir={run}"]) == 0
    return run


@pytest.fixture
def watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Calls of the two factories, recorded instead of made: mkdtemp in a fresh temporary directory, abort
    replaced (a call would otherwise end the test process)."""
    calls: list[str] = []
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: calls.append("tempfile:mkdtemp") or "made")
    monkeypatch.setattr(os, "abort", lambda: calls.append("os:abort"))
    return calls


def crafted_run(trained: Path, tmp_path: Path, **settings: object) -> Path:
    """A copy of a trained run whose config.yaml has the dotted `settings` edited in."""
    run = tmp_path / "crafted"
    shutil.copytree(trained, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for key, value in settings.items():
        *sections, leaf = key.split("__")
        functools.reduce(dict.__getitem__, sections, cfg)[leaf] = value
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


@pytest.mark.parametrize("factory", FACTORIES)
def test_a_factory_backbone_in_config_yaml_is_refused_before_any_import(trained, tmp_path, capsys, watched, factory):
    run = crafted_run(trained, tmp_path, backbone__name=factory)
    for argv in (["eval", "knn", f"run={run}"], ["sweep", f"run={run}", "tasks=[knn]"]):
        err = one_line_error(capsys, argv)
        assert f"{run / 'config.yaml'} names the backbone {factory}, a package.module:factory path" in err
        assert f"add backbone.name={factory} to this command" in err
    assert watched == [] and not list((tmp_path / "tmp").iterdir())
    assert not (run / "eval").exists()


@pytest.mark.parametrize("factory", FACTORIES)
def test_a_factory_backbone_in_a_checkpoint_is_refused_before_any_import(trained, tmp_path, capsys, watched, factory):
    state = load_checkpoint(trained / "checkpoints" / "last.pt")
    state["config"]["backbone"]["name"] = factory
    crafted = tmp_path / "crafted.pt"
    save_checkpoint(state, crafted)
    out = tmp_path / "backbone.safetensors"
    err = one_line_error(capsys, ["export", "backbone", f"run={trained}", f"checkpoint={crafted}", f"out={out}"])
    assert f"{crafted} names the backbone {factory}" in err and f"add backbone.name={factory}" in err
    assert watched == [] and not out.exists()


@pytest.mark.parametrize(("key", "value"), [("data__root", "${oc.env:SELFSUP_SECRET}"), ("seed", "???")])
def test_an_interpolation_in_config_yaml_is_refused_not_resolved(trained, tmp_path, capsys, monkeypatch, key, value):
    monkeypatch.setenv("SELFSUP_SECRET", "leaked-value")
    run = crafted_run(trained, tmp_path, **{key: value})
    err = one_line_error(capsys, ["eval", "knn", f"run={run}"])
    setting = key.replace("__", ".")
    assert err == f"{run / 'config.yaml'} sets {setting} to {value!r}, which is not a value it ran with; restore it"
    assert not list(run.rglob("knn.json"))
