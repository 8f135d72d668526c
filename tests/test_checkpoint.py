"""Atomic writes, checksum verification and safe loading of checkpoints."""

import errno
import os
import stat
from pathlib import Path

import pytest
import torch

from selfsup.errors import UserError
from selfsup.runs.checkpoint import backbone_state, load_checkpoint, resolve_checkpoint, save_checkpoint
from selfsup.runs.files import atomic_write_text, file_sha256


def _state():
    return {
        "model": {"backbone.w": torch.arange(6.0).reshape(2, 3), "projector.b": torch.ones(2)},
        "epoch": 1,
        "step": 10,
        "cost": {"device_seconds": 1.5},
        "config": {"method": {"name": "simclr"}},
    }


def test_round_trip_and_sidecar(tmp_path: Path):
    a, b = tmp_path / "checkpoints" / "last.pt", tmp_path / "checkpoints" / "epoch-0001.pt"
    digest = save_checkpoint(_state(), a, b)
    assert file_sha256(a) == digest == file_sha256(b)
    assert (a.parent / "last.pt.sha256").read_text().split()[0] == digest
    state = load_checkpoint(a)
    assert state["step"] == 10 and torch.equal(state["model"]["backbone.w"], _state()["model"]["backbone.w"])
    assert list(backbone_state(state)) == ["w"]
    assert not list(a.parent.glob("*.tmp")), "no temporary files are left behind"


def test_corrupt_and_truncated_files_are_refused(tmp_path: Path):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(path)
    path.with_name("last.pt.sha256").unlink()
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(path)


def test_foreign_and_code_carrying_files_are_refused(tmp_path: Path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.ones(1)}, plain)
    with pytest.raises(UserError, match="not a selfsup checkpoint"):
        load_checkpoint(plain)
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "format_version": 1, "obj": Path("/")}, evil)  # an arbitrary class: weights_only rejects
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(evil)


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "result.json"
    atomic_write_text(path, "old")

    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write to a full disk: no file named

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError) as raised:
        atomic_write_text(path, "new")
    assert raised.value.filename == str(path)  # the one-line error names the target and its free space
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.parametrize(
    ("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)], ids=["umask022", "umask027", "umask077"]
)
def test_written_files_get_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int):
    """Like a file open() creates, so a group sharing the output directory can read checkpoints and reports."""
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "result.json", "{}")
        save_checkpoint(_state(), tmp_path / "last.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "last.pt").stat().st_mode) == mode


def test_resolve_checkpoint_names(tmp_path: Path):
    save_checkpoint(_state(), tmp_path / "checkpoints" / "last.pt", tmp_path / "checkpoints" / "epoch-0002.pt")
    assert resolve_checkpoint(tmp_path, "last").name == "last.pt"
    assert resolve_checkpoint(tmp_path, "epoch-0002.pt").name == "epoch-0002.pt"
    with pytest.raises(UserError, match="available: epoch-0002, last"):
        resolve_checkpoint(tmp_path, "epoch-0003")
