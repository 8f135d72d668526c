"""Non-finite numbers (inf, -inf, nan) in any numeric setting are refused at validation in one line, before the
output directory exists: base_lr=inf used to pass and train on infinite weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfsup.cli import main

# Small enough that a regression (the run starting) fails the test in seconds rather than training for minutes.
SMALL = ["data=synthetic", "data.subset=32", "views.crop_size=16", "trainer.batch_size=16", "trainer.max_steps=1"]
SMALL += ["trainer.progress=false", "eval.every=0", "device=cpu"]


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.base_lr=inf", "optim.base_lr must be a positive number, got inf (numbers must be finite)"),
        ("optim.base_lr=-inf", "optim.base_lr must be a positive number, got -inf (numbers must be finite)"),
        ("optim.base_lr=nan", "optim.base_lr must be a positive number, got nan (numbers must be finite)"),
        ("optim.weight_decay=inf", "optim.weight_decay must be a number >= 0, got inf (numbers must be finite)"),
        ("optim.final_lr=inf", "optim.final_lr must be a number >= 0, got inf (numbers must be finite)"),
        ("optim.warmup_epochs=inf", "optim.warmup_epochs must be a number >= 0, got inf (numbers must be finite)"),
        ("method.temperature=inf", "method.temperature must be a positive number, got inf (numbers must be finite)"),
    ],
)
def test_non_finite_numbers_are_refused_in_one_line(tmp_path: Path, capsys, override: str, message: str):
    out = tmp_path / "out"
    assert main(["pretrain", *SMALL, override, f"output_dir={out}"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"selfsup: error: {message}"] and not captured.out
    assert not out.exists()
