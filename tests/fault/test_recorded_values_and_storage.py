"""Issue 37 items 6 and 7: results record the values actually used, a kNN is never scored on its own bank,
and a write that the storage refuses (full disk, file size limit) ends in one line naming the path, leaving no
checkpoint sidecar without its checkpoint and no new run directory."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from selfsup.cli import main
from selfsup.errors import storage_error_line
from selfsup.eval.export import FORMAT
from selfsup.runs import files
from selfsup.runs.checkpoint import save_checkpoint, sidecar_of
from tests.fault.cli_errors import one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


def features_file(path: Path, split: str, n: int, role: str | None) -> Path:
    """An exported features file of `n` labelled rows, as `selfsup export features` writes it (`role`: the
    entry exports record since issue 37; None: a file from before)."""
    generator = torch.Generator().manual_seed(n)
    metadata = {"format": FORMAT, "dataset": "synthetic", "root": "r", "split": split, "checkpoint_sha256": "c"}
    if role is not None:
        metadata["role"] = role
    tensors = {"features": torch.randn(n, 8, generator=generator), "labels": torch.arange(n) % 4}
    save_file(tensors, path, metadata)
    return path


def test_knn_records_the_k_that_voted(tmp_path: Path, capsys):
    train = features_file(tmp_path / "train.safetensors", "train", 40, None)  # files from before roles work too
    test = features_file(tmp_path / "test.safetensors", "test", 12, None)
    assert main(["eval", "knn", f"features=[{train},{test}]", "eval.knn.k=1000000"]) == 0
    assert json.loads((tmp_path / "knn.json").read_text())["settings"]["k"] == 40  # clamped to the bank


@pytest.mark.parametrize(
    ("order", "words"),
    [
        (("train", "train"), "gives the 'train' split as both train and test"),
        (("train", "train copy"), "gives the 'train' split as both train and test"),  # one split, two files
        (("test", "train"), "gives the test split 'test' first"),
    ],
)
def test_a_test_set_that_is_the_bank_or_comes_first_is_refused(tmp_path: Path, capsys, order, words):
    made = {
        "train": features_file(tmp_path / "train.safetensors", "train", 40, "train"),
        "train copy": features_file(tmp_path / "copy.safetensors", "train", 40, "train"),
        "test": features_file(tmp_path / "test.safetensors", "test", 12, "test"),
    }
    before = sorted(tmp_path.iterdir())
    line = one_line_error(capsys, ["eval", "knn", f"features=[{made[order[0]]},{made[order[1]]}]"])
    assert words in line
    assert sorted(tmp_path.iterdir()) == before  # no knn.json written or replaced


def test_a_full_disk_names_the_checkpoint_and_leaves_no_sidecar_without_it(tmp_path: Path, monkeypatch):
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as the kernel reports it: no file named

    monkeypatch.setattr(files.os, "fsync", full)
    path = tmp_path / "epoch-0000.pt"
    with pytest.raises(OSError) as raised:
        save_checkpoint({"model": {}}, path)
    line = storage_error_line(raised.value)
    assert line is not None and line.startswith(f"cannot write {sidecar_of(path)}: No space left on device; ")
    assert "GiB free there; free space or choose another output directory" in line
    monkeypatch.undo()

    calls = []

    def full_for_the_checkpoint(target: Path, data: bytes) -> None:
        calls.append(target)
        if target == path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        write(target, data)

    write = files.atomic_write_bytes
    monkeypatch.setattr("selfsup.runs.checkpoint.atomic_write_bytes", full_for_the_checkpoint)
    with pytest.raises(OSError):
        save_checkpoint({"model": {}}, path)
    assert calls == [sidecar_of(path), path] and list(tmp_path.iterdir()) == []


def test_a_file_size_limit_ends_a_new_run_in_one_line_and_removes_it(tmp_path: Path):
    """Under `ulimit -f` (RLIMIT_FSIZE) the first checkpoint fails with EFBIG: exit 2, one line naming it and the
    limit, and the new run directory removed like any run refused before its first save."""
    run = tmp_path / "run"
    argv = ["pretrain", "data=synthetic", "data.subset=32", "views.crop_size=16", "trainer.batch_size=8",
            "trainer.max_steps=1", "trainer.progress=false", "eval.every=0", "device=cpu",
            f"output_dir={run}"]  # fmt: skip

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "selfsup.cli", *argv], preexec_fn=limit, capture_output=True, text=True, env=env
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"selfsup: error: cannot write {run / 'checkpoints' / 'epoch-0000.pt'}: File too large")
    assert "raise the file size limit or choose another output directory" in last
    assert not run.exists()
