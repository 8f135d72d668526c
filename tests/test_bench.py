"""`selfsup bench`: each stage measures what it says, ratios use the best compute variant, and the largest
batch under a memory budget follows the measured memory model. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfsup.cli import main
from selfsup.config import load_config
from selfsup.tools import bench

TINY = [
    "data=synthetic",
    "data.subset=64",
    "views.crop_size=16",
    "trainer.batch_size=16",
    "method.proj_hidden_dim=32",
    "method.proj_output_dim=16",
    "device=cpu",
]


def test_cli_measures_compute_and_loader_in_their_own_processes(tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", *TINY, "stages=[compute,loader]", "variants=[fp32]", "steps=2", "warmup=0", f"out={out}"]
    assert main(args) == 0
    record = json.loads(out.read_text())
    compute, loader = record["stages"]["compute"]["fp32"], record["stages"]["loader"]
    for result in (compute, loader):
        assert result["steps"] == 2 and result["seconds"] > 0
        assert result["images_per_s"] == pytest.approx(2 * 16 / result["seconds"])
        assert result["peak_memory_bytes"] > 100 * 2**20  # a process holding torch and a ResNet-18
    assert compute["tflops"] > 0
    assert record["compute_limit"] == {"variant": "fp32", "images_per_s": compute["images_per_s"]}
    assert record["ratios"] == {} and "full" not in record["stages"]
    assert (record["method"], record["backbone"], record["batch_size"]) == ("simclr", "resnet18", 16)
    printed = capsys.readouterr().out
    assert "| compute fp32 |" in printed and "| loader |" in printed and f"-> {out}" in printed


def test_full_stage_times_the_pretraining_loop_after_its_warmup(one_thread):
    cfg = load_config([*TINY, "trainer.num_workers=0"])
    result = bench.measure_full(cfg, steps=2, warmup=1)
    assert result["steps"] == 2 and result["seconds"] > 0
    assert result["images_per_s"] == pytest.approx(2 * 16 / result["seconds"])


def fake_measurements(rates: dict[str, float], peak=lambda batch: 0):
    """run_isolated stand-in: a fixed rate per stage/variant and a peak memory per batch."""

    def run(cfg, stage, variant=None, steps=1, warmup=0):
        batch = cfg.trainer.batch_size
        if peak(batch) is None:
            return {"error": "out of GPU memory"}
        rate = rates[variant or stage]
        return {"images_per_s": rate, "seconds": steps * batch / rate, "steps": steps, "peak_memory_bytes": peak(batch)}

    return run


def test_ratios_use_the_fastest_compute_variant(monkeypatch):
    rates = {"fp32": 10.0, "channels_last": 12.0, "loader": 40.0, "full": 11.0}
    monkeypatch.setattr(bench, "run_isolated", fake_measurements(rates))
    record = bench.bench(load_config(TINY), list(bench.STAGES), ["fp32", "channels_last"], steps=2, warmup=1)
    assert record["compute_limit"]["variant"] == "channels_last"
    assert record["ratios"] == {"full/compute": pytest.approx(11 / 12), "loader/full": pytest.approx(40 / 11)}
    table = bench.format_table(record)
    assert "compute limit: 12.0 images/s (channels_last)" in table and "full/compute: 0.92" in table


def test_largest_batch_follows_the_linear_memory_model_and_shrinks_until_it_fits(monkeypatch):
    def peak(batch):  # 1000 bytes fixed + 50 per image; batches above 95 do not fit the device at all
        return None if batch > 95 else 1000 + 50 * batch

    monkeypatch.setattr(bench, "run_isolated", fake_measurements({"fp32": 1.0}, peak))
    cfg = load_config(TINY)
    estimate = bench.largest_batch(cfg, "fp32", budget_bytes=6000, verify=False)
    assert estimate["largest_batch"] == 100 and not estimate["verified"]
    assert estimate["fit"] == {"fixed_bytes": 1000, "bytes_per_image": 50, "probes": {"16": 1800, "32": 2600}}
    verified = bench.largest_batch(cfg, "fp32", budget_bytes=6000, verify=True)
    assert verified["largest_batch"] == 90 and verified["verified"] and verified["peak_memory_bytes"] == 5500


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["stages=[comput]"],
            "stages must be a list of values, each one of compute | loader | full, got ['comput']: "
            "'comput' is not one; did you mean 'compute'?",
        ),
        (["variants=[bf61]"], "variants must be a list of values, each one of fp32 | channels_last | bf16 or null"),
        (["steps=two"], "steps must be a positive integer, got 'two'"),
        (["steps=0"], "steps must be a positive integer, got 0"),
        (["warmup=-1"], "warmup must be an integer >= 0, got -1"),
    ],
)
def test_bad_settings_fail_in_one_line(args, message, capsys):
    assert main(["bench", *TINY, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_channels_last_auto_follows_precision_and_cpu_batch_size():
    from selfsup.precision import CPU_CHANNELS_LAST_MIN_PIXELS, resolve_channels_last

    big, small = 128 * 32 * 32, 16 * 16 * 16
    assert resolve_channels_last("auto", "32-true", "cpu", big)  # measured faster at 32 px, batch 128/256
    assert not resolve_channels_last("auto", "32-true", "cpu", small)  # and slower at 16 px, batch 16
    assert resolve_channels_last("auto", "32-true", "cpu", CPU_CHANNELS_LAST_MIN_PIXELS)
    assert resolve_channels_last("auto", "bf16-mixed", "cuda", small)
    assert not resolve_channels_last("auto", "32-true", "cuda", big)
    assert not resolve_channels_last(False, "bf16-mixed", "cpu", big)
    assert resolve_channels_last(True, "32-true", "cpu", 1)
