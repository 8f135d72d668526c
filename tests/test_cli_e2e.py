"""End to end through the command line: pretrain -> checkpoints -> resume -> kNN / linear evaluation.

Small settings keep it fast on 2 cores: 16-px crops of the synthetic dataset, a 128-image subset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from selfsup.cli import main
from selfsup.data.datasets.synthetic import SYNTHETIC_CLASSES
from selfsup.runs.checkpoint import load_checkpoint

SMALL = [
    "data=synthetic",
    "data.subset=128",
    "views.crop_size=16",
    "trainer.batch_size=32",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.log_every=1",
    "optim.warmup_epochs=1",
    "eval.every=0",
    "device=cpu",
]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfsup.cli", *args], capture_output=True, text=True, timeout=timeout)


def read_metrics(run: Path) -> list[dict]:
    """Complete records only: a line still being appended by a running process is skipped."""
    records = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def test_pretrain_checkpoint_resume_and_evaluate(tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *SMALL, "trainer.epochs=2", "trainer.checkpoint_every=1", f"output_dir={run}"]) == 0
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.pt")) == ["epoch-0000.pt", "epoch-0001.pt", "epoch-0002.pt", "last.pt"]
    state = load_checkpoint(ckpts / "last.pt")
    assert (state["epoch"], state["step"]) == (2, 8)  # 128 images / 32 per batch = 4 steps per epoch
    cost = state["cost"]
    assert cost["images_seen"] == 8 * 32 and cost["device_seconds"] > 0 and cost["peak_memory_bytes"] > 0
    assert cost["flops_per_image"] > 1e8
    assert (run / "config.yaml").read_text().count("name: simclr") == 1
    losses = [r["train/loss"] for r in read_metrics(run) if "train/loss" in r]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert list((run / "tb").iterdir()), "TensorBoard events are written"

    # The same command with more epochs resumes from last.pt instead of starting over.
    assert main(["pretrain", *SMALL, "trainer.epochs=3", "trainer.checkpoint_every=1", f"output_dir={run}"]) == 0
    assert "resuming" in capsys.readouterr().err
    state = load_checkpoint(ckpts / "last.pt")
    assert (state["epoch"], state["step"]) == (3, 12)
    assert state["cost"]["images_seen"] == 12 * 32
    # Rerunning a finished run changes nothing.
    before = (ckpts / "last.pt").stat().st_mtime_ns
    assert main(["pretrain", *SMALL, "trainer.epochs=3", "trainer.checkpoint_every=1", f"output_dir={run}"]) == 0
    assert (ckpts / "last.pt").stat().st_mtime_ns == before

    assert main(["eval", "knn", f"run={run}", "eval.knn.k=20", "trainer.num_workers=0"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((run / "eval" / "last" / "knn.json").read_text())
    assert f"top1 {result['metrics']['top1']:.2f}" in printed and str(run) in printed
    assert result["checkpoint"]["step"] == 12 and result["cost"]["images_seen"] == 12 * 32
    assert result["dataset"] == {
        "name": "synthetic",
        "train_split": "train",
        "test_split": "test",
        "train_size": 2000,
        "test_size": 500,
    }
    assert result["params"] == {"k": 20, "temperature": 0.1}
    assert 0 <= result["metrics"]["top1"] <= result["metrics"]["top5"] <= 100
    cache = run / "eval" / "last" / "features-test.pt"
    cached_at = cache.stat().st_mtime_ns
    assert torch.load(cache, weights_only=True)["classes"] == list(SYNTHETIC_CLASSES)  # the report's legends

    assert (
        main(
            [
                "eval",
                "linear",
                f"run={run}",
                "checkpoint=epoch-0001",
                "eval.linear.epochs=3",
                "trainer.num_workers=0",
                "trainer.progress=false",
            ]
        )
        == 0
    )
    linear = json.loads((run / "eval" / "epoch-0001" / "linear.json").read_text())
    assert linear["checkpoint"]["step"] == 4 and linear["params"]["epochs"] == 3
    # Features of another checkpoint are extracted anew; those of `last` stay cached and are reused.
    # baseline= scores the random init too and prints the gain over it.
    capsys.readouterr()
    assert main(["eval", "knn", f"run={run}", "eval.knn.k=20", "trainer.num_workers=0", "baseline=epoch-0000"]) == 0
    assert cache.stat().st_mtime_ns == cached_at
    base = json.loads((run / "eval" / "epoch-0000" / "knn.json").read_text())
    assert base["checkpoint"]["step"] == 0 and base["params"] == result["params"]
    top1, base_top1 = result["metrics"]["top1"], base["metrics"]["top1"]
    gain = f"gain over epoch-0000: top1 {base_top1:.2f} -> {top1:.2f} ({top1 - base_top1:+.2f})"
    assert gain in capsys.readouterr().out


def test_missing_dataset_fails_in_one_line_without_output(tmp_path: Path):
    out = tmp_path / "never"
    proc = run_cli("pretrain", "data=cifar10", "data.root=/nonexistent", f"output_dir={out}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "/nonexistent" in lines[0] and "data.download=true" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists()


def test_unknown_key_and_command_fail_in_one_line():
    proc = run_cli("pretrain", "trainer.epoch=3")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("selfsup: error: unknown config key 'trainer.epoch'; did you mean 'trainer.epochs'")
    proc = run_cli("pretrian")
    assert proc.returncode == 2 and "did you mean 'pretrain'" in proc.stderr


def test_resume_refuses_a_different_method_in_the_same_directory(tmp_path: Path):
    run = tmp_path / "run"
    assert main(["pretrain", *SMALL, "trainer.epochs=1", "trainer.max_steps=1", f"output_dir={run}"]) == 0
    config_before = (run / "config.yaml").read_text()
    assert main(["pretrain", *SMALL, "backbone=resnet34", "trainer.epochs=1", f"output_dir={run}"]) == 2
    assert (run / "config.yaml").read_text() == config_before


def test_gradient_accumulation_steps_once_per_global_batch(tmp_path: Path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", *SMALL, "trainer.accumulate=2", "trainer.epochs=1", "trainer.max_steps=2", f"output_dir={run}"]
    assert main(args) == 0
    assert "1 process(es) x 16 per batch x 2 accumulation = global batch 32" in capsys.readouterr().err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 2 and state["cost"]["images_seen"] == 64
    assert [r["step"] for r in read_metrics(run) if "train/loss" in r] == [1, 2]


def test_stop_mid_epoch_then_continue_from_the_same_position(tmp_path: Path, capsys):
    run = tmp_path / "run"
    base = ["pretrain", *SMALL, "trainer.epochs=2", "trainer.checkpoint_every=1", f"output_dir={run}"]
    assert main([*base, "trainer.max_steps=2"]) == 0  # half of epoch 1 (4 steps per epoch)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    assert not (run / "checkpoints" / "epoch-0001.pt").exists()
    assert main([*base, "trainer.max_steps=6"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert load_checkpoint(run / "checkpoints" / "epoch-0001.pt")["step"] == 4
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (last["epoch"], last["step"], last["cost"]["images_seen"]) == (1, 6, 6 * 32)
    assert [r["step"] for r in read_metrics(run) if "train/loss" in r] == [1, 2, 3, 4, 5, 6]


def test_resumable_sampler_continues_the_epoch_order():
    from selfsup.data.loader import ResumableSampler

    sampler = ResumableSampler(range(20), num_replicas=2, rank=1, shuffle=True, seed=3, drop_last=True)
    sampler.set_position(epoch=4, start=0)
    full = list(sampler)
    sampler.set_position(epoch=4, start=6)
    assert list(sampler) == full[6:] and len(sampler) == 4
    sampler.set_position(epoch=5, start=0)
    assert list(sampler) != full  # another epoch, another order


def test_pretrain_on_unlabeled_folder_turns_online_knn_off(tmp_path: Path, capsys):
    """data=folder has no labels: the default online kNN (eval.every=10) is switched off with a note instead of
    stopping the run, which the VICReg detection study's pretraining on an image folder relies on."""
    from PIL import Image

    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    rng = torch.Generator().manual_seed(0)
    for i in range(32):
        pixels = torch.randint(0, 256, (24, 24, 3), generator=rng, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    args = [a for a in SMALL if not a.startswith(("data=", "data.subset", "eval.every", "trainer.batch_size"))]
    run = tmp_path / "run"
    folder_args = ["data=folder", f"data.root={tmp_path / 'photos'}", "eval.every=1", "trainer.batch_size=16"]
    assert main(["pretrain", *args, *folder_args, "trainer.epochs=1", f"output_dir={run}"]) == 0
    assert "online kNN off: data=folder has no labels" in capsys.readouterr().err
    assert (run / "checkpoints" / "last.pt").is_file()
    records = read_metrics(run)
    assert records and not any("monitor/knn_top1" in record for record in records)
