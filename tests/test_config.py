"""Composition of the config groups and one-line errors for every kind of bad override."""

import pytest
from omegaconf import OmegaConf

from selfsup.config import apply_overrides, group_options, load_config
from selfsup.errors import UserError


def test_defaults_compose_to_simclr_cifar10_resnet18(monkeypatch):
    monkeypatch.setenv("SELFSUP_DATA", "/some/data")
    cfg = load_config([])
    assert (cfg.method.name, cfg.data.name, cfg.backbone.name, cfg.optim.name) == (
        "simclr",
        "cifar10",
        "resnet18",
        "sgd",
    )
    assert cfg.method.temperature == 0.5 and cfg.optim.base_lr == 0.12 and cfg.optim.weight_decay == 5e-4
    assert cfg.data.root == "/some/data"  # resolved, so the saved config is exactly what ran
    assert cfg.output_dir == "output/simclr-cifar10-resnet18"


def test_public_contract_keys_override():
    cfg = load_config(
        [
            "method=simclr",
            "data=stl10",
            "backbone=resnet50",
            "data.root=/d",
            "data.subset=100",
            "trainer.epochs=3",
            "trainer.batch_size=64",
            "trainer.checkpoint_every=2",
            "trainer.max_steps=7",
            "output_dir=/tmp/x",
            "seed=3",
            "device=cpu",
        ]
    )
    assert cfg.data.root == "/d" and cfg.data.subset == 100 and cfg.data.train_split == "train+unlabeled"
    assert cfg.views.crop_size == 96
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.trainer.checkpoint_every, cfg.trainer.max_steps) == (
        3,
        64,
        2,
        7,
    )
    assert (cfg.output_dir, cfg.seed, cfg.device) == ("/tmp/x", 3, "cpu")


def test_method_variant_switches_optimizer_group_and_views():
    cfg = load_config(["method=simclr_imagenet", "data=imagenet100"])
    assert cfg.optim.name == "lars" and cfg.method.temperature == 0.1 and cfg.views.blur_p == 0.5
    # An explicit group choice on the command line still wins over the method's default.
    assert load_config(["method=simclr_imagenet", "optim=sgd"]).optim.name == "sgd"


def test_every_group_option_composes():
    for group in ("method", "data", "backbone", "optim"):
        for option in group_options(group):
            extra = ["data.root=/x"] if group == "data" and option in ("imagefolder", "folder") else []
            if group == "backbone" and option in ("timm", "factory"):  # the groups of named backbones
                with pytest.raises(UserError, match="config key 'backbone.name' has no value"):
                    load_config([f"backbone={option}"])
                continue
            assert OmegaConf.select(load_config([f"{group}={option}", *extra]), f"{group}") is not None


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.epoch=3", "unknown config key 'trainer.epoch'; did you mean 'trainer.epochs'"),
        ("epochs=3", "did you mean 'trainer.epochs'"),
        ("method=simclrr", "unknown method 'simclrr'; did you mean 'simclr'"),
        ("data=cifar", "unknown data 'cifar'; did you mean"),
        ("backbone=resnet19", "did you mean 'resnet18'"),
        ("trainer.batch_size=0", "trainer.batch_size must be a positive integer"),
        ("optim.base_lr=-1", "optim.base_lr must be a positive number"),
        ("device=tpu", "device must be one of"),
        ("trainer.precision=8", "trainer.precision must be one of"),
        ("data.subset=0", "data.subset must be a positive integer or null"),
        ("trainer.epochs", "expected key=value"),
    ],
)
def test_bad_overrides_fail_in_one_line(override, message):
    with pytest.raises(UserError, match=message) as err:
        load_config([override])
    assert "\n" not in str(err.value)


def test_missing_mandatory_root_is_named():
    with pytest.raises(UserError, match="data.root"):
        load_config(["data=imagefolder"])


def test_batch_must_split_over_processes():
    with pytest.raises(UserError, match="divisible"):
        load_config(["trainer.batch_size=30", "trainer.devices=4"])


def test_a_final_lr_above_the_peak_is_refused():
    """AdamW's peaks are ~1e-4: an absolute final_lr of 1e-3 (SGD's) would turn the cosine decay into a rise."""
    for method in ("mae", "moco_v3"):
        cfg = load_config([f"method={method}"])
        assert cfg.optim.final_lr == 0.0 < cfg.optim.base_lr
    with pytest.raises(UserError, match=r"optim.final_lr=0.001 is above the peak lr 7.5e-05") as err:
        load_config(["method=mae", "optim.final_lr=0.001", "trainer.batch_size=128"])
    assert "\n" not in str(err.value)


def test_apply_overrides_on_saved_config():
    cfg = load_config([])
    cfg = apply_overrides(cfg, ["eval.knn.k=20", "data.root=/elsewhere", "eval.linear.epochs=5"])
    assert cfg.eval.knn.k == 20 and cfg.data.root == "/elsewhere" and cfg.eval.linear.epochs == 5
    with pytest.raises(UserError, match="did you mean 'eval.knn.k'"):
        apply_overrides(cfg, ["eval.knn.kk=3"])


def test_every_method_config_names_a_registered_method_with_valid_views():
    import selfsup.methods  # noqa: F401  (importing the package registers every method)
    from selfsup.data.views import views_config
    from selfsup.methods.base import METHODS

    options = group_options("method")
    assert {"swav_imagenet", "dino_imagenet", "directpred_imagenet", "directcopy_imagenet"} <= set(options)
    for option in options:
        cfg = load_config([f"method={option}"])
        METHODS.get(cfg.method.name)
        views = views_config(cfg.views)
        # ImageNet presets pin 224-px crops; every other preset (dino_vit too) takes the data's size
        assert views.total >= 1 and (option.endswith("_imagenet") or "r50" in option) == (views.crop_size == 224)


def test_dino_vit_takes_its_crop_sizes_and_patches_from_the_data():
    """The ViT recipe at each dataset's size: the paper's 2 x 224 + 10 x 96 crops with 16-px patches on
    ImageNet, 2 x 32 + 10 x 16 with 4-px patches (64 tokens) on CIFAR, every crop whole patches."""
    from selfsup.nets.backbones import vit_patch_size

    for data, crop, local, patch in (("imagenet", 224, 96, 16), ("cifar10", 32, 16, 4), ("stl10", 96, 48, 12)):
        cfg = load_config(["method=dino_vit", f"data={data}"])
        assert (cfg.views.crop_size, cfg.views.local_crop_size, cfg.views.local_crops) == (crop, local, 10)
        assert vit_patch_size(cfg.backbone.patch_size, cfg.views.crop_size) == patch
        assert crop % patch == 0 and local % patch == 0
