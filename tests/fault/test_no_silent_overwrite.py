"""No command replaces a file it did not create without overwrite=true: `report out=DIR` used to overwrite
results.csv/index.html in any directory (even a run's checkpoints/), `report out=FILE` crashed with a
traceback, and `export backbone|features` replaced existing files silently. Each refusal is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfsup.cli import main
from tests.fault.cli_errors import one_line_error
from tests.test_report import write_run

pytestmark = pytest.mark.usefixtures("one_thread")
PRETRAIN = ["pretrain", "data=synthetic", "data.subset=32", "views.crop_size=16", "trainer.batch_size=16"]
PRETRAIN += ["trainer.max_steps=1", "trainer.num_workers=0", "trainer.progress=false", "eval.every=0", "device=cpu"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """A run directory as pretrain and sweep leave it (written directly: no training)."""
    return write_run(tmp_path_factory.mktemp("runs"), "a")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main([*PRETRAIN, f"output_dir={run}"]) == 0
    return run


def test_report_replaces_an_earlier_report_only_with_overwrite(evaluated: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "results.csv").write_text("someone's results")
    error = one_line_error(capsys, ["report", f"runs=[{evaluated}]", f"out={out}"])
    assert error == f"{out / 'results.csv'} already exists; choose another out=, or add overwrite=true to replace it"
    assert [p.name for p in out.iterdir()] == ["results.csv"]
    assert (out / "results.csv").read_text() == "someone's results"

    assert main(["report", f"runs=[{evaluated}]", f"out={out}", "overwrite=true"]) == 0
    assert "someone's results" not in (out / "results.csv").read_text() and (out / "index.html").is_file()
    error = one_line_error(capsys, ["report", f"runs=[{evaluated}]", f"out={out}"])  # its own files too
    assert "already exists" in error and "more)" in error


def test_report_refuses_a_run_directory_and_everything_inside_it(evaluated: Path, trained: Path, capsys):
    for out in (evaluated, evaluated / "eval" / "summary", trained / "checkpoints", trained / "new"):
        before = sorted(p.name for p in out.parent.iterdir())
        error = one_line_error(capsys, ["report", f"runs=[{evaluated}]", f"out={out}"])
        run = evaluated if evaluated in (out, *out.parents) else trained
        assert error == f"out={out} is inside the run directory {run}; write the report elsewhere (out=report/)"
        assert sorted(p.name for p in out.parent.iterdir()) == before
    assert not (trained / "checkpoints" / "results.csv").exists()


def test_report_out_naming_a_file_is_one_line(evaluated: Path, tmp_path: Path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert one_line_error(capsys, ["report", f"runs=[{evaluated}]", f"out={out}"]) == (
        f"out={out} is a file; name a directory (out=DIR)"
    )
    assert out.read_text() == "mine"


def test_export_backbone_replaces_an_existing_file_only_with_overwrite(trained: Path, tmp_path: Path, capsys):
    out = tmp_path / "weights.safetensors"
    out.write_text("mine")
    args = ["export", "backbone", f"run={trained}", f"out={out}"]
    assert one_line_error(capsys, args) == (
        f"{out} already exists; choose another out=, or add overwrite=true to replace it"
    )
    assert out.read_text() == "mine"
    assert one_line_error(capsys, [*args, "overwrite=maybe"]) == (
        "overwrite=maybe is not a boolean; use overwrite=true or overwrite=false"
    )
    assert main([*args, "overwrite=true"]) == 0
    assert out.read_bytes() != b"mine"


def test_export_features_refuses_existing_files_and_a_file_as_out(trained: Path, tmp_path: Path, capsys):
    out = tmp_path / "features"
    out.mkdir()
    (out / "test.safetensors").write_text("mine")
    args = ["export", "features", f"run={trained}", "splits=[train,test]", f"out={out}"]
    assert one_line_error(capsys, args) == (
        f"{out / 'test.safetensors'} already exists; choose another out=, or add overwrite=true to replace it"
    )
    assert [p.name for p in out.iterdir()] == ["test.safetensors"]
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    assert one_line_error(capsys, ["export", "features", f"run={trained}", f"out={blocker}"]) == (
        f"out={blocker} is a file; name a directory (out=DIR)"
    )
    assert blocker.read_text() == "mine"


def test_a_folder_merely_named_checkpoints_is_not_a_run(evaluated: Path, tmp_path: Path):
    """Many projects keep a checkpoints/ folder of other tools: a report beside it is allowed."""
    project = tmp_path / "project"
    (project / "checkpoints").mkdir(parents=True)
    assert main(["report", f"runs=[{evaluated}]", f"out={project / 'report'}"]) == 0
