"""Provenance names selfsup's own checkout only: an installed copy inside another git repository records no
commit (it used to record that repository's)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import selfsup
from selfsup.runs.provenance import source

PACKAGE = Path(selfsup.__file__).resolve().parent
PROBE = "import json; from selfsup.runs.provenance import source; print(json.dumps(source()))"


def git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def provenance_of_copy(parent: Path) -> dict:
    shutil.copytree(PACKAGE, parent / "selfsup", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=parent, env={"PYTHONPATH": str(parent)}, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out)


def test_this_checkout_records_its_commit_and_version():
    info = source()
    assert info["selfsup_version"] == selfsup.__version__
    if (PACKAGE.parent / ".git").exists():
        assert info["git_commit"] == git(PACKAGE.parent, "rev-parse", "HEAD")
        assert isinstance(info["git_dirty"], bool)


def test_a_copy_inside_another_repository_records_no_commit(tmp_path: Path):
    other = tmp_path / "their-project"
    (other / "venv" / "site-packages").mkdir(parents=True)
    git(other, "init", "-q")
    (other / "README").write_text("theirs\n")
    git(other, "add", "README")
    git(other, "commit", "-qm", "theirs")
    info = provenance_of_copy(other / "venv" / "site-packages")
    assert info == {"selfsup_version": selfsup.__version__, "git_commit": None, "git_dirty": None}


def test_a_checkout_of_its_own_records_its_commit_and_uncommitted_changes(tmp_path: Path):
    checkout = tmp_path / "selfsup-checkout"
    checkout.mkdir()
    shutil.copytree(PACKAGE, checkout / "selfsup", ignore=shutil.ignore_patterns("__pycache__"))
    git(checkout, "init", "-q")
    (checkout / ".gitignore").write_text("__pycache__/\n")
    git(checkout, "add", "selfsup", ".gitignore")
    git(checkout, "commit", "-qm", "selfsup")
    shutil.rmtree(checkout / "selfsup")
    info = provenance_of_copy(checkout)  # the same files again: a clean tree
    assert info["git_commit"] == git(checkout, "rev-parse", "HEAD") and info["git_dirty"] is False
    (checkout / "selfsup" / "version.py").write_text((checkout / "selfsup" / "version.py").read_text() + "\n")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=checkout, env={"PYTHONPATH": str(checkout)}, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    assert json.loads(out)["git_dirty"] is True
