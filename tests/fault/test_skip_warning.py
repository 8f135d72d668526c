"""data.bad_images=skip says what it skipped in one clean line on stderr per file; through warnings.warn it also
printed the source line of its caller (`  warnings.warn(...)`), a stray line of code in the run's output."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from fixtures_formats import write_imagefolder

from selfsup.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_skipped_image_is_one_clean_line_on_stderr(tmp_path: Path, capsys):
    written = write_imagefolder(tmp_path / "images", ["a", "b"], 8, splits=("train",))
    bad = tmp_path / "images" / "train" / written["train"][0][0]  # read by the first batch
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    args = ["pretrain", "data=imagefolder", f"data.root={tmp_path / 'images'}", "data.bad_images=skip"]
    args += ["views.crop_size=16", "trainer.batch_size=16", "trainer.max_steps=1", "trainer.num_workers=0"]
    args += ["trainer.progress=false", "eval.every=0", "device=cpu"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*args, f"output_dir={tmp_path / 'out'}"]) == 0
    assert not [w for w in caught if "undecodable" in str(w.message)]  # not through warnings: no source line
    warned = [line for line in capsys.readouterr().err.splitlines() if "undecodable" in line]
    assert warned == [f"warning: skipping undecodable image {bad} (data.bad_images=skip)"]
