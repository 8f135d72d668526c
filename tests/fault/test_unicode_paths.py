"""Paths outside ASCII work as settings: Hydra's override lexer refused output_dir=/tmp/ränn with a lexer error,
so such values are passed to it quoted. Quotes and backslashes inside them survive too."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selfsup.cli import main
from selfsup.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = ["pretrain", "data=synthetic", "data.subset=32", "views.crop_size=16", "trainer.batch_size=16"]
RUN += ["trainer.max_steps=1", "trainer.num_workers=0", "trainer.progress=false", "eval.every=0", "device=cpu"]


@pytest.mark.parametrize("name", ["ränn", "运行 1"])
def test_a_run_in_a_non_ascii_output_dir_trains_and_resumes(tmp_path: Path, capsys, name: str):
    out = tmp_path / name
    assert main([*RUN, f"output_dir={out}"]) == 0, capsys.readouterr().err
    assert (out / "checkpoints" / "last.pt").is_file()
    assert OmegaConf.load(out / "config.yaml").output_dir == str(out)
    assert main([*RUN, f"output_dir={out}"]) == 0  # the rerun reads the saved config back: already complete
    assert "already complete" in capsys.readouterr().out


@pytest.mark.parametrize("path", ["/tmp/it's ä", "/tmp/ä\\", "/tmp/ä\\'x", "/tmp/é/ü b"])
def test_quotes_and_backslashes_in_a_non_ascii_value_arrive_unchanged(path: str):
    assert load_config([f"output_dir={path}", f"data.root={path}"]).data.root == path
