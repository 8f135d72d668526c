"""A save killed mid-write leaves its temporary sibling (`.last.pt.XXXXXXXX.tmp`, up to a checkpoint's size);
the next start of the run removes those in the run directory and checkpoints/, and nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfsup.cli import main
from selfsup.runs.checkpoint import load_checkpoint
from selfsup.runs.files import temp_sibling

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = ["pretrain", "data=synthetic", "data.subset=32", "views.crop_size=16", "trainer.batch_size=16"]
RUN += ["trainer.num_workers=0", "trainer.progress=false", "eval.every=0", "device=cpu"]


def orphan_of(path: Path) -> Path:
    """What a save of `path` killed after writing part of its data leaves behind."""
    fd, name = temp_sibling(path)
    with os.fdopen(fd, "wb") as f:
        f.write(b"partial checkpoint")
    return Path(name)


def test_resuming_removes_the_temporary_files_of_interrupted_saves_only(tmp_path: Path, capsys):
    out = tmp_path / "run"
    ckpt = out / "checkpoints"
    assert main([*RUN, "trainer.max_steps=1", f"output_dir={out}"]) == 0
    orphans = [orphan_of(ckpt / "last.pt"), orphan_of(ckpt / "last.pt.sha256"), orphan_of(out / "config.yaml")]
    orphans.append(orphan_of(out / "metrics.jsonl"))
    keep = [ckpt / ".last.pt.tmp", ckpt / ".last.pt.ABCDEFGH.tmp", out / "notes.tmp", out / "last.pt.abcdefgh.tmp"]
    keep += [out / "eval" / ".knn.json.abcdefgh.tmp"]  # not the run's own atomic writes: another folder
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    (out / ".folder.abcdefgh.tmp").mkdir()
    capsys.readouterr()

    assert main([*RUN, "trainer.max_steps=2", f"output_dir={out}"]) == 0
    assert f"removed 4 temporary file(s) of interrupted saves in {out}" in capsys.readouterr().err
    assert not [p for p in orphans if p.exists()]
    assert all(p.read_text() == "mine" for p in keep) and (out / ".folder.abcdefgh.tmp").is_dir()
    assert load_checkpoint(ckpt / "last.pt")["step"] == 2


def test_a_fresh_start_in_a_directory_left_by_a_killed_first_save_cleans_it(tmp_path: Path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    orphan = orphan_of(out / "checkpoints" / "epoch-0000.pt")
    assert main([*RUN, "trainer.max_steps=1", f"output_dir={out}"]) == 0
    assert not orphan.exists()
