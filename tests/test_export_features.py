"""`selfsup export features` writes a documented safetensors format; `selfsup eval knn|linear features=...`
reads it back and scores exactly what the evaluation of the run itself scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from selfsup.cli import main
from selfsup.runs.files import file_sha256

PRETRAIN = [
    "pretrain",
    "data=synthetic",
    "data.subset=64",
    "views.crop_size=16",
    "method.proj_hidden_dim=32",
    "method.proj_output_dim=16",
    "trainer.batch_size=32",
    "trainer.epochs=1",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "eval.every=0",
    "analysis.every=0",
    "device=cpu",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    run, out = root / "run", root / "features"
    torch.set_num_threads(1)
    assert main([*PRETRAIN, f"output_dir={run}"]) == 0
    assert main(["export", "features", f"run={run}", f"out={out}"]) == 0
    return run, out


def test_each_split_is_a_file_of_features_labels_indices_and_provenance(exported):
    run, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["test.safetensors", "train.safetensors"]
    for split, size in (("train", 2000), ("test", 500)):
        tensors = load_file(out / f"{split}.safetensors")
        assert tensors["features"].shape == (size, 512) and tensors["features"].dtype == torch.float32
        assert tensors["labels"].dtype == torch.int64 and set(tensors["labels"].tolist()) == set(range(10))
        assert torch.equal(tensors["indices"], torch.arange(size))
        with safe_open(str(out / f"{split}.safetensors"), framework="pt") as f:
            meta = f.metadata()
        assert meta["format"] == "selfsup-features/1" and meta["split"] == split and meta["dataset"] == "synthetic"
        assert meta["checkpoint_sha256"] == file_sha256(run / "checkpoints" / "last.pt")
        described = (meta["method"], meta["backbone"], meta["feature_dim"], meta["crop_size"])
        assert described == ("simclr", "resnet18", "512", "16")
        assert len(json.loads(meta["classes"])) == 10


def test_knn_on_exported_features_equals_knn_on_the_run(exported, capsys):
    run, out = exported
    files = f"features=[{out / 'train.safetensors'},{out / 'test.safetensors'}]"
    assert main(["eval", "knn", files, "eval.knn.k=20"]) == 0
    from_files = json.loads((out / "knn.json").read_text())
    assert main(["eval", "knn", f"run={run}", "eval.knn.k=20"]) == 0
    from_run = json.loads((run / "eval" / "last" / "knn.json").read_text())
    assert from_files["metrics"]["top1"] == pytest.approx(from_run["metrics"]["top1"])
    assert from_files["metrics"]["top5"] == pytest.approx(from_run["metrics"]["top5"])
    assert "knn on synthetic test (exported features): top1" in capsys.readouterr().out


def test_linear_probe_on_exported_features(exported):
    _, out = exported
    files = f"features=[{out / 'train.safetensors'},{out / 'test.safetensors'}]"
    assert main(["eval", "linear", files, "eval.linear.epochs=3"]) == 0
    result = json.loads((out / "linear.json").read_text())
    assert result["metrics"]["top1"] > 20  # 10 classes: far above chance after 3 epochs on 2000 images
    assert result["settings"]["epochs"] == 3 and result["dataset"]["train_size"] == 2000


def test_files_that_are_not_selfsup_features_fail_in_one_line(exported, tmp_path: Path, capsys):
    run, out = exported
    backbone = tmp_path / "backbone.safetensors"
    assert main(["export", "backbone", f"run={run}", f"out={backbone}"]) == 0
    capsys.readouterr()
    cases = [
        (f"features=[{out / 'train.safetensors'}]", "features= takes the train and the test file"),
        (f"features=[{backbone},{out / 'test.safetensors'}]", "is not a selfsup features file"),
        (f"features=[{tmp_path / 'no.safetensors'},{out / 'test.safetensors'}]", "no features file"),
    ]
    for files, message in cases:
        assert main(["eval", "linear", files]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert main(["eval", "finetune", f"features=[{out / 'train.safetensors'},{out / 'test.safetensors'}]"]) == 2
    assert "features= works with selfsup eval knn or linear" in capsys.readouterr().err
