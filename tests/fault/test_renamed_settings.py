"""Method options renamed to the one naming rule (issue 38: MoCo's moco_k / moco_t / moco_m, DINO's *_temp,
SwAV's queue_length) keep old runs working: a run whose config.yaml and checkpoints were written with the old
names is read through config.RENAMED_KEYS, so the same command finds nothing changed, eval and export read it,
and it resumes to its end under the new names. A command naming an old key is told the new one in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from selfsup.cli import main
from selfsup.config import RENAMED_KEYS, config_text, load_config, method_settings, renamed_settings
from selfsup.errors import UserError
from selfsup.methods.base import METHODS
from selfsup.runs.checkpoint import load_checkpoint, save_checkpoint
from selfsup.train.run_settings import HISTORY_NAME
from tests.fault.cli_errors import one_line_error
from tests.method_specs import SMALL_CNN

pytestmark = pytest.mark.usefixtures("one_thread")
BASE = ["pretrain", "data=synthetic", "data.subset=32", "views.crop_size=16", "trainer.batch_size=16"]
BASE += ["trainer.num_workers=0", "trainer.progress=false", "eval.every=0", "trainer.epochs=1", "device=cpu"]
BASE += [f"backbone.name={SMALL_CNN}"]  # small checkpoints: this file rewrites each one
HEADS = {
    "moco": ["method.proj_hidden_dim=64", "method.proj_output_dim=32", "method.queue_size=64"],
    "dino": ["method.proj_hidden_dim=32", "method.bottleneck_dim=8", "method.out_dim=24"],
}
# What selfsup wrote before the rename: new option -> old, per method.
OLD_NAMES = {
    "moco": {"queue_size": "moco_k", "temperature": "moco_t", "momentum": "moco_m"},
    "dino": {
        "student_temperature": "student_temp",
        "teacher_temperature": "teacher_temp",
        "warmup_teacher_temperature": "warmup_teacher_temp",
        "warmup_teacher_temperature_epochs": "warmup_teacher_temp_epochs",
    },
}


def with_old_names(config: dict, old_names: dict[str, str]) -> dict:
    config = {**config, "method": {old_names.get(k, k): v for k, v in config["method"].items()}}
    assert set(old_names.values()) <= set(config["method"])
    return config


def age(run: Path, old_names: dict[str, str]) -> None:
    """Rewrite a run as selfsup wrote it before the rename: config.yaml and the config every checkpoint records
    with the old names, and the digest of that config.yaml in each checkpoint."""
    saved = with_old_names(yaml.safe_load((run / "config.yaml").read_text()), old_names)
    text = config_text(OmegaConf.create(saved))
    (run / "config.yaml").write_text(text)
    for path in (run / "checkpoints").glob("*.pt"):
        state = load_checkpoint(path)
        state.pop("format_version")
        state["config"] = with_old_names(state["config"], old_names)
        state["config_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        save_checkpoint(state, path)


def knn_result(run: Path) -> dict:
    return json.loads((run / "eval" / "last" / "knn.json").read_text())


@pytest.mark.parametrize("method", ["moco", "dino"])
def test_a_run_saved_with_the_old_names_resumes_and_evaluates(tmp_path: Path, capsys, method: str):
    run = tmp_path / "run"
    command = [*BASE, f"method={method}", *HEADS[method], f"output_dir={run}"]
    assert main([*command, "trainer.max_steps=1"]) == 0
    age(run, OLD_NAMES[method])
    capsys.readouterr()

    # The same command: nothing changed, no drift refusal.
    assert main([*command, "trainer.max_steps=1"]) == 0
    assert "already complete" in capsys.readouterr().out
    # Evaluation and export read it as it stands.
    assert main(["eval", "knn", f"run={run}"]) == 0
    assert set(OLD_NAMES[method]) <= set(knn_result(run)["config"]["method"])  # recorded under the new names
    out = tmp_path / "backbone.safetensors"
    assert main(["export", "backbone", f"run={run}", f"out={out}"]) == 0 and out.is_file()
    old, new = next((f"method.{o}", f"method.{n}") for n, o in OLD_NAMES[method].items())
    assert one_line_error(capsys, ["eval", "knn", f"run={run}", f"{old}=0.5"]) == f"{old} was renamed {new}"

    # Resumed to its end: only the step cap changed, and config.yaml now holds the new names.
    assert main(command) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    resumed = json.loads((run / HISTORY_NAME).read_text().splitlines()[-1])
    assert (resumed["step"], resumed["start"]) == (1, "resumed")
    assert resumed["changed"] == {"trainer.max_steps": {"old": 1, "new": None}}
    saved = yaml.safe_load((run / "config.yaml").read_text())["method"]
    assert set(OLD_NAMES[method]) <= set(saved) and not set(OLD_NAMES[method].values()) & set(saved)


def test_the_old_names_evaluate_as_the_new_ones(tmp_path: Path):
    """The same run, once under each name set: the same kNN scores."""
    scores = []
    for which in ("new", "old"):
        run = tmp_path / which
        assert main([*BASE, "method=moco", *HEADS["moco"], "trainer.max_steps=1", f"output_dir={run}"]) == 0
        if which == "old":
            age(run, OLD_NAMES["moco"])
        assert main(["eval", "knn", f"run={run}"]) == 0
        scores.append(knn_result(run)["metrics"])
    assert scores[0] == scores[1]


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED_KEYS.items()))
def test_an_old_key_on_the_command_line_names_the_new_one(tmp_path: Path, capsys, old: str, new: str):
    method = "moco" if "moco" in old else "swav" if "queue_length" in old else "dino"
    argv = [*BASE, f"method={method}", f"{old}=1", f"output_dir={tmp_path / 'run'}"]
    assert one_line_error(capsys, argv) == f"{old} was renamed {new}"
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match=f"^{old} was renamed {new}$"):
        load_config([f"method={method}", f"+{old}=1"])


def test_the_rename_table_maps_retired_names_to_declared_ones():
    """Every new name is an option of some method and no old one is (a live option would become unsettable);
    a rename stays within its section."""
    declared = {f"method.{key}" for name in METHODS.names() for key in method_settings(name)}
    for old, new in RENAMED_KEYS.items():
        assert new in declared and old not in declared, (old, new)
        assert old.rpartition(".")[0] == new.rpartition(".")[0]


def test_renamed_settings_keeps_the_order_leaves_its_input_and_refuses_both_names():
    data = {"seed": 0, "method": {"name": "moco", "moco_k": 8, "moco_t": 0.2, "symmetric": True}}
    renamed = renamed_settings(data, "config.yaml")
    assert list(renamed["method"].items()) == [
        ("name", "moco"),
        ("queue_size", 8),
        ("temperature", 0.2),
        ("symmetric", True),
    ]
    assert "moco_k" in data["method"]  # the stored data is not changed
    with pytest.raises(UserError, match="config.yaml sets both method.moco_t and method.temperature"):
        renamed_settings({"method": {"moco_t": 0.2, "temperature": 0.3}}, "config.yaml")
