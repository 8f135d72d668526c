"""Each study preset does what its study states (issue 41): the values its page's "study says / preset does"
table names, read through the same config loading `selfsup study` uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig

from selfsup.config import apply_overrides, load_config
from selfsup.study import Study, load_study, study_names

PAGES = Path(__file__).parents[1] / "docs" / "studies"


def evaluated(study: Study, run: str) -> DictConfig:
    """A run's config as its sweep sees it: the saved pretraining config with the sweep's overrides."""
    cfg = load_config(study.run_args(run, Path("output/x"), ["data.root=/datasets/x"]))
    return apply_overrides(cfg, study.sweep_overrides)


@pytest.mark.parametrize("name", study_names())
def test_every_study_page_has_its_fidelity_table(name: str) -> None:
    assert "## Study says / preset does\n\n| | study says | preset does |" in (PAGES / f"{name}.md").read_text()


def test_simclr_moco_probes_each_run_at_its_pretraining_batch() -> None:
    study = load_study("simclr_moco_cifar10")
    for run in study.runs:
        cfg = evaluated(study, run)
        batch = 512 if run.startswith("simclr") else 256
        assert cfg.trainer.batch_size == cfg.eval.linear.batch_size == batch, run
        assert cfg.eval.linear.lr * batch / 256 == pytest.approx(0.2 if batch == 512 else 0.1), run


def test_vicreg_detection_takes_the_studys_schedule() -> None:
    study = load_study("vicreg_detection")
    det = evaluated(study, "vicreg").eval.detection
    assert list(det.lr_step_epochs) == []  # the study has no step decay
    assert (det.lr, det.constant_lr_after, det.constant_lr) == (0.005, 40, 0.005)  # its --lr, from epoch 40
    assert (det.epochs, det.chunk_epochs, det.batch_size, det.architecture) == (70, 20, 8, "fpn")


def test_simclr_toolbox_runs_the_toolbox_recipe() -> None:
    study = load_study("simclr_toolbox")
    cfg = evaluated(study, "simclr")
    assert (cfg.data.name, cfg.trainer.batch_size, cfg.trainer.accumulate, cfg.seed) == ("cifar10", 512, 1, 42)
    assert (cfg.eval.linear.epochs, cfg.eval.linear.batch_size, cfg.eval.linear.lr) == (90, 4096, 0.1)
    for asked, meant in [("imagenet100", "imagenet100_scan"), ("imagenet100_scan", "imagenet100_scan")]:
        named = load_config(study.run_args("simclr", Path("output/x"), [f"data={asked}"]))
        assert named.data.name == meant, asked  # the toolbox's ImageNet-100 is SCAN's, as the study says
    cmc = load_config(study.run_args("simclr", Path("output/x"), ["data=imagenet100_cmc"]))
    assert cmc.data.name == "imagenet100"  # CMC's list, by name only
    other = load_study("simclr_moco_cifar10")
    assert other.run_args(next(iter(other.runs)), Path("x"), ["data=imagenet100"])[-2] == "data=imagenet100"  # CMC's


def test_noncontrastive_dynamics_shares_one_two_layer_projector() -> None:
    study = load_study("noncontrastive_dynamics")
    projectors = {
        run: (cfg.method.proj_layers, cfg.method.proj_hidden_dim, cfg.method.proj_output_dim)
        for run in study.runs
        for cfg in [evaluated(study, run)]
    }
    assert set(projectors.values()) == {(2, 4096, 256)}, projectors


def test_swav_vs_beta_vae_leaves_the_p40_peak_ratio_off() -> None:
    """The datasheet-peak ratio overstates P40-hours several-fold and no sourced training-step ratio replaces it
    yet (the page's table): the preset plots the runs' own GPU-hours."""
    assert load_study("swav_vs_beta_vae").report.get("hours_ref") is None
