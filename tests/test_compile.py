"""trainer.compile: which modules are compiled, and how the setting is read and checked."""

from __future__ import annotations

import pytest

from selfsup.cli import main
from selfsup.config import load_config
from selfsup.methods.build import build_model
from selfsup.nets.compile import compile_backbones, compile_mode


def test_compile_mode_reads_booleans_and_modes():
    assert compile_mode(False) is None and compile_mode("false") is None
    assert compile_mode(True) == "default" and compile_mode("true") == "default"
    assert compile_mode("max-autotune") == "max-autotune"


@pytest.mark.parametrize(("method", "copies"), [("simclr", 1), ("byol", 2), ("moco", 2)])
def test_every_copy_of_the_backbone_is_compiled_in_place_and_nothing_else(method, copies):
    model = build_model(load_config([f"method={method}", "views.crop_size=16"]))
    keys = list(model.state_dict())
    assert compile_backbones(model, "false") == 0
    assert compile_backbones(model, "true") == copies
    compiled = [m for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert len(compiled) == copies and all(type(m) is type(model.backbone) for m in compiled)
    assert list(model.state_dict()) == keys  # checkpoints keep the eager model's keys


def test_a_bad_compile_mode_is_a_one_line_error(capsys, tmp_path):
    assert main(["pretrain", "trainer.compile=fast", f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "trainer.compile must be one of true | false | default" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
