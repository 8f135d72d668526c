"""Fine-tuning and the evaluation sweep, on one tiny synthetic pretraining run shared by the module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fixtures_detection import write_pennfudan
from fixtures_segmentation import write_voc

from selfsup.cli import main, parse_list
from selfsup.config import apply_overrides, load_config, load_run_config
from selfsup.errors import UserError
from selfsup.eval import finetune
from selfsup.eval.finetune import finetune_data, train_augmentation
from selfsup.eval.offline import evaluate, load_method
from selfsup.eval.sweep import run_checkpoints, sweep
from selfsup.eval.transfer import TransferJob

PRETRAIN = [
    "pretrain",
    "data=synthetic",
    "data.subset=64",
    "views.crop_size=16",
    "trainer.batch_size=32",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.epochs=2",
    "trainer.checkpoint_every=1",
    "eval.every=0",
    "device=cpu",
]
FINETUNE = [
    "eval.finetune.train_subset=200",
    "eval.finetune.batch_size=40",
    "eval.finetune.lr=0.2",
    "eval.finetune.num_workers=0",
]
FAST_FEATURES = ["eval.train_subset=200", "eval.linear.epochs=3"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "simclr"
    assert main([*PRETRAIN, f"output_dir={run}"]) == 0
    return run


@pytest.fixture
def run(pretrained: Path, tmp_path: Path) -> Path:
    """A private copy, so each test sees the checkpoints without the others' results."""
    copy = tmp_path / "run"
    shutil.copytree(pretrained, copy)
    return copy


def test_finetune_beats_chance_and_records_provenance(run: Path):
    result = evaluate("finetune", run, "last", [*FINETUNE, "eval.finetune.epochs=3"])
    assert result["complete"] and result["dataset"]["num_classes"] == 10
    assert result["metrics"]["top1"] > 25.0  # chance is 10%
    losses = result["extra"]["train_loss_per_epoch"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result["checkpoint"]["epoch"] == 2 and result["cost"]["images_seen"] == 128
    assert result["params"]["effective_lr"] == pytest.approx(0.2 * 40 / 256)
    saved = json.loads((run / "eval" / "last" / "finetune.json").read_text())
    assert saved["metrics"] == result["metrics"] and saved["git_commit"] == result["git_commit"]
    assert not (run / "eval" / "last" / "finetune-state.pt").exists()  # removed once the result is complete


def test_chunked_transfer_keeps_every_chunks_score(run: Path):
    """Each chunk rewrites finetune.json with the last score in `metrics`; the earlier chunks' scores stay in
    `history`, and a new training (here: after a complete one) starts a new history."""
    chunked = [*FINETUNE, "eval.finetune.epochs=2", "eval.finetune.chunk_epochs=1"]
    first = evaluate("finetune", run, "last", chunked)
    second = evaluate("finetune", run, "last", chunked)
    saved = json.loads((run / "eval" / "last" / "finetune.json").read_text())
    assert not first["complete"] and second["complete"] and saved["metrics"] == second["metrics"]
    assert saved["history"] == [
        {"epochs_trained": 1, "metrics": first["metrics"]},
        {"epochs_trained": 2, "metrics": second["metrics"]},
    ]
    again = evaluate("finetune", run, "last", chunked)
    assert [chunk["epochs_trained"] for chunk in again["history"]] == [1]


def _job(run: Path, state_path: Path, *overrides: str) -> TransferJob:
    cfg = apply_overrides(load_run_config(run), [*FINETUNE, "eval.finetune.epochs=2", *overrides])
    method, _ = load_method(cfg, run / "checkpoints" / "last.pt")
    return TransferJob(cfg, method.backbone, method.feature_dim, torch.device("cpu"), state_path, progress=False)


def test_finetune_resumed_after_an_epoch_ends_exactly_like_an_uninterrupted_one(run: Path, tmp_path: Path):
    """Per-epoch shuffles and augmentation seeds plus the saved optimizer state make a resume exact."""
    whole = finetune.run(_job(run, tmp_path / "whole.pt"))
    first = finetune.run(_job(run, tmp_path / "split.pt", "eval.finetune.chunk_epochs=1"))  # stops after epoch 1
    assert not first.complete and torch.load(tmp_path / "split.pt", weights_only=True)["epoch"] == 1
    resumed = finetune.run(_job(run, tmp_path / "split.pt", "eval.finetune.chunk_epochs=1"))  # the same command
    assert resumed.complete and whole.complete
    assert resumed.extra["train_loss_per_epoch"][:1] == first.extra["train_loss_per_epoch"]
    assert resumed.extra["train_loss_per_epoch"] == whole.extra["train_loss_per_epoch"]
    assert resumed.metrics == whole.metrics
    a = torch.load(tmp_path / "whole.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_reads_another_data_group_from_the_run_root(run: Path):
    cfg = apply_overrides(load_run_config(run), ["eval.finetune.data=cifar10", "data.root=/some/where"])
    data = finetune_data(cfg)
    assert (data.name, data.eval_train_split, data.test_split, data.root) == ("cifar10", "train", "test", "/some/where")
    cfg = apply_overrides(cfg, ["eval.finetune.data=stl10", "eval.finetune.test_split=train"])
    assert (finetune_data(cfg).eval_train_split, finetune_data(cfg).test_split) == ("train", "train")


def test_supervised_augmentations_keep_the_crop_size():
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    for augment in ("pad_crop", "resized_crop", "auto"):
        out = train_augmentation(augment, 32)(image)
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    with pytest.raises(UserError, match="pad_crop"):
        train_augmentation("mixup", 32)


def test_finetune_refuses_impossible_settings(run: Path):
    with pytest.raises(UserError, match="eval.finetune.epochs must be a positive integer, got 0"):
        evaluate("finetune", run, "last", [*FINETUNE, "eval.finetune.epochs=0"])
    with pytest.raises(UserError, match="larger than the"):
        evaluate("finetune", run, "last", [*FINETUNE, "eval.finetune.batch_size=500"])


def test_run_checkpoints_in_epoch_order_and_last_only_when_new(run: Path):
    assert [p.stem for p in run_checkpoints(run)] == ["epoch-0000", "epoch-0001", "epoch-0002"]
    ckpts = run / "checkpoints"
    for suffix in ("", ".sha256"):  # a run stopped between checkpoint epochs: last.pt is newer
        (ckpts / f"epoch-0002.pt{suffix}").unlink()
    assert [p.stem for p in run_checkpoints(run)] == ["epoch-0000", "epoch-0001", "last"]


def test_sweep_evaluates_everything_once_and_resumes(run: Path):
    rows = sweep(run, ["knn", "linear"], overrides=FAST_FEATURES)
    assert [(r.checkpoint, r.task, r.status) for r in rows] == [
        (c, t, "done") for c in ("epoch-0000", "epoch-0001", "epoch-0002") for t in ("knn", "linear")
    ]
    for ckpt in ("epoch-0000", "epoch-0001", "epoch-0002"):
        result = json.loads((run / "eval" / ckpt / "knn.json").read_text())
        assert result["checkpoint"]["epoch"] == int(ckpt[-4:]) and "device_hours" in result["cost"]
    again = sweep(run, ["knn", "linear"], overrides=FAST_FEATURES)
    assert {r.status for r in again} == {"skipped"}
    assert [r.metrics for r in again] == [r.metrics for r in rows]

    # An interrupted sweep: one result never written, one left partial -> only those two are redone.
    (run / "eval" / "epoch-0001" / "linear.json").unlink()
    partial = run / "eval" / "epoch-0002" / "knn.json"
    partial.write_text(json.dumps({**json.loads(partial.read_text()), "complete": False}))
    redone = sweep(run, ["knn", "linear"], overrides=FAST_FEATURES)
    assert [(r.checkpoint, r.task) for r in redone if r.status == "done"] == [
        ("epoch-0001", "linear"),
        ("epoch-0002", "knn"),
    ]
    # Other settings make the old results stale; a checkpoint subset limits the work.
    changed = sweep(run, ["knn"], ["epoch-0002"], [*FAST_FEATURES, "eval.knn.k=5"])
    assert [(r.checkpoint, r.status) for r in changed] == [("epoch-0002", "done")]


def test_sweep_cli_prints_each_result_and_refuses_unknown_tasks(run: Path, capsys):
    assert main(["sweep", f"run={run}", "tasks=[knn]", "checkpoints=[epoch-0001]", *FAST_FEATURES]) == 0
    out = capsys.readouterr().out
    assert "epoch-0001  knn" in out and "done" in out and "1 results in" in out
    assert main(["sweep", f"run={run}", "tasks=[knn,segmentaton]"]) == 2
    assert "did you mean 'segmentation'" in capsys.readouterr().err
    assert main(["sweep", f"run={run}", "tasks=[knn]", "checkpoints=[epoch-0009]"]) == 2
    assert "no checkpoint 'epoch-0009'" in capsys.readouterr().err
    assert parse_list("[a, b]") == ["a", "b"] and parse_list("a") == ["a"]


def test_eval_config_has_every_transfer_section():
    cfg = load_config([])
    for task in ("finetune", "detection", "segmentation"):
        assert task in cfg.eval


def test_feature_cache_is_reused_then_invalidated_by_another_transform(run: Path):
    evaluate("knn", run, "last", FAST_FEATURES)
    cache = run / "eval" / "last" / "features-test.pt"
    first = torch.load(cache, weights_only=True)
    stamp = cache.stat().st_mtime_ns
    evaluate("linear", run, "last", FAST_FEATURES)  # same checkpoint and transform: reused
    assert cache.stat().st_mtime_ns == stamp
    evaluate("knn", run, "last", [*FAST_FEATURES, "views.crop_size=24"])  # another eval resize: extracted anew
    second = torch.load(cache, weights_only=True)
    assert second["key"]["crop_size"] == 24 and first["key"]["crop_size"] == 16
    assert not torch.equal(first["features"], second["features"])


def test_runs_saved_before_the_transfer_tasks_existed_are_still_evaluable(run: Path):
    from omegaconf import OmegaConf

    saved = OmegaConf.load(run / "config.yaml")
    del saved.eval["finetune"], saved.eval["detection"], saved.eval["segmentation"]
    OmegaConf.save(saved, run / "config.yaml")
    cfg = load_run_config(run)
    assert cfg.eval.finetune.augment == "auto" and cfg.eval.knn.k == saved.eval.knn.k


def test_sweep_runs_every_transfer_task_through_the_cli(run: Path, tmp_path: Path, capsys, one_thread):
    """The wiring end to end: `selfsup sweep` on VOC-segmentation and Penn-Fudan fixtures in their on-disk
    formats, with tiny settings; each task writes a complete result with provenance, drops its state and keeps
    its model, which `selfsup eval TASK model=` scores to the same numbers without training."""
    write_voc(tmp_path / "voc")
    pennfudan, _ = write_pennfudan(tmp_path / "PennFudanPed")
    tiny = [
        *FINETUNE,
        "eval.finetune.epochs=1",
        "eval.detection.format=pennfudan",
        f"eval.detection.root={pennfudan}",
        "eval.detection.train_split=train",
        "eval.detection.epochs=1",
        "eval.detection.batch_size=2",
        "eval.detection.min_size=64",
        "eval.detection.max_size=64",
        "eval.detection.roi_batch_size=16",
        "eval.detection.rpn_test_proposals=20",
        "eval.detection.num_workers=0",
        f"eval.segmentation.root={tmp_path / 'voc' / 'VOCdevkit' / 'VOC2012'}",
        "eval.segmentation.crop_size=32",
        "eval.segmentation.batch_size=2",
        "eval.segmentation.epochs=1",
        "eval.segmentation.num_workers=0",
    ]
    args = ["sweep", f"run={run}", "tasks=[finetune,detection,segmentation]", "checkpoints=[epoch-0002]", *tiny]
    assert main(args) == 0
    out = capsys.readouterr().out
    for task, metric in (("finetune", "top1"), ("detection", "map_50"), ("segmentation", "miou")):
        assert f"epoch-0002  {task}" in out
        result = json.loads((run / "eval" / "epoch-0002" / f"{task}.json").read_text())
        assert result["complete"] and 0 <= result["metrics"][metric] <= 100
        assert result["checkpoint"]["sha256"] and result["cost"]["images_seen"] == 128 and result["git_commit"]
        assert not (run / "eval" / "epoch-0002" / f"{task}-state.pt").exists()
    assert main(args) == 0 and capsys.readouterr().out.count("skipped") == 3

    # Each finished training kept its model; scoring the kept model (no training) gives the same numbers.
    for task in ("finetune", "detection", "segmentation"):
        kept = run / "eval" / "epoch-0002" / task / "model.safetensors"
        assert main(["eval", task, f"run={run}", "checkpoint=epoch-0002", f"model={kept}", *tiny]) == 0
        trained = json.loads((run / "eval" / "epoch-0002" / f"{task}.json").read_text())
        scored = json.loads((kept.parent / "model-score.json").read_text())
        trained["metrics"].pop("train_loss", None)  # fine-tuning's last training loss: no training here
        assert scored["metrics"] == trained["metrics"] and scored["model"]["path"] == str(kept)
        assert scored["extra"].get("epochs_trained", 0) == 0  # nothing was trained
    assert "model " in capsys.readouterr().out
    detector = run / "eval" / "epoch-0002" / "detection" / "model.safetensors"
    for argv, message in [
        (["eval", "segmentation", f"model={detector}"], "is not a kept segmentation model (task: detection)"),
        (["eval", "knn", f"model={detector}"], "knn keeps none"),
        (["eval", "detection", f"model={tmp_path / 'none.safetensors'}"], "does not exist"),
        (
            ["eval", "detection", f"model={detector}", "eval.detection.architecture=c4"],
            "does not fit the detection model",
        ),
    ]:
        assert main([*argv[:2], f"run={run}", "checkpoint=epoch-0002", *argv[2:], *tiny]) == 2
        assert message in capsys.readouterr().err
