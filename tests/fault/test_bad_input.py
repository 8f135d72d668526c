"""Bad input fails in one line through the CLI (exit 2, no traceback) before the output directory exists:
impossible or mistyped settings, truncated or corrupt dataset files, subsets larger than their split. An
undecodable file in an image folder fails naming the file and the option to skip it (when a batch first
holds it: images are decoded lazily), or with data.bad_images=skip is replaced by the next good one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_formats import write_cifar10, write_imagefolder, write_stl10, write_svhn
from omegaconf import DictConfig

from selfsup.cli import main, parse_list
from selfsup.config import GROUPS, group_options, load_config, sections
from selfsup.data.loader import load_split
from selfsup.data.sources import ImageDataset
from selfsup.errors import UserError
from selfsup.eval.settings import eval_sections
from tests.fault.cli_errors import one_line_error, overriding, the_error

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = [
    "views.crop_size=16",
    "trainer.batch_size=8",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "eval.every=0",
    "device=cpu",
]

CROP_WHY = "px; smaller crops hold nothing to learn"


def fails_in_one_line(capsys, out: Path, *args: str) -> str:
    """Run `selfsup pretrain`; check exit 2, one stderr line, no traceback, no output directory."""
    assert main(["pretrain", *overriding(SMALL, *args), f"output_dir={out}"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    assert not out.exists()
    return lines[0].removeprefix("selfsup: error: ")


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["trainer.batch_size=0"], "trainer.batch_size must be a positive integer, got 0"),
        (["trainer.epochs=ten"], "trainer.epochs must be a positive integer, got 'ten'"),
        (["trainer.epochs=2.5"], "trainer.epochs must be a positive integer, got 2.5"),
        (["trainer.epochs=true"], "trainer.epochs must be a positive integer, got true"),
        (["trainer.num_workers=-1"], "trainer.num_workers must be auto or an integer >= 0, got -1"),
        (["optim.base_lr=0"], "optim.base_lr must be a positive number, got 0"),
        (["optim.base_lr=-0.1"], "optim.base_lr must be a positive number, got -0.1"),
        (["optim.base_lr=fast"], "optim.base_lr must be a positive number, got 'fast'"),
        (["optim.weight_decay=-1e-4"], "optim.weight_decay must be a number >= 0, got -0.0001"),
        (["optim.momentum=1.0"], "optim.momentum must be a number in [0, 1), got 1.0"),
        (["method=byol", "method.momentum=-0.5"], "method.momentum must be a number in [0, 1), got -0.5"),
        (["method=byol", "method.final_momentum=1.5"], "method.final_momentum must be a number in [0, 1], got 1.5"),
        (["method.temperature=0"], "method.temperature must be a positive number, got 0"),
        (["method=moco", "method.queue_size=0"], "method.queue_size must be an integer in [1, 1048576], got 0"),
        (["eval.knn.k=0"], "eval.knn.k must be a positive integer, got 0"),
        (["seed=-1"], "seed must be an integer in [0, 4294967295], got -1"),
        (["optim.name=adamx"], "optim.name must be one of adamw | lars | sgd, got 'adamx'; did you mean 'adamw'?"),
        (
            ["trainer.precision=fp16"],
            "trainer.precision must be one of auto | 32 | bf16 | 16, got 'fp16'; did you mean 'bf16', '16'?",
        ),
        (["data.bad_images=ignore"], "data.bad_images must be one of fail | skip, got 'ignore'"),
        (
            ["backbone.weights=123"],
            "backbone.weights must be a non-empty string or null, got 123 (text that reads as a number is quoted: "
            "\"backbone.weights='123'\")",
        ),
        (["views.flip_p=1.5"], "views.flip_p must be a number in [0, 1], got 1.5"),
        (["views.jitter_p=-0.1"], "views.jitter_p must be a number in [0, 1], or a list of such, got -0.1"),
        *(
            ([f"views.crop_size={side}"], f"views.crop_size must be an integer >= 8 ({CROP_WHY}), got {side}")
            for side in (0, 1, 3)
        ),
        (
            ["method=beta_vae", "views.local_crops=2"],
            "method=beta_vae takes global views only; views.local_crops (multi-crop) is for dino, swav: set "
            "views.local_crops=0",
        ),
        *(
            (
                [f"views.crop_scale={scale}"],
                f"views.crop_scale must be a list [low, high] with 0 < low <= high <= 1, got {shown}",
            )
            for scale, shown in (("[0.5,0.2]", "[0.5, 0.2]"), ("[0.0,1.0]", "[0.0, 1.0]"), ("[0.5,1.5]", "[0.5, 1.5]"))
        ),
    ],
)
def test_impossible_settings_fail_before_anything_runs(overrides, message, tmp_path: Path, capsys):
    assert fails_in_one_line(capsys, tmp_path / "out", "data=synthetic", *overrides) == message


@pytest.mark.parametrize(
    "argv,message",
    [
        (["pretrain", "trainer.epochs=1", "trainer.epochs=2"], "trainer.epochs=1 and trainer.epochs=2"),
        (["config", "+trainer.epochs=1", "trainer.epochs=2"], "trainer.epochs=1 and trainer.epochs=2"),
        (["eval", "knn", "run=a", "run=b"], "run=a and run=b"),
    ],
)
def test_a_key_given_twice_is_refused(argv: list[str], message: str, capsys):
    """Hydra (and the command-level keys) took the last of the two values without a word (issue 37 item 9)."""
    key = message.split("=", 1)[0]
    assert one_line_error(capsys, argv) == f"{key} is given twice ({message}); give it once"


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep", "run=RUN", "checkpoints=[]"],
        ["sweep", "run=RUN", "tasks=[]"],
        ["export", "features", "run=RUN", "splits=[]", "out=OUT"],
    ],
)
def test_an_empty_list_is_refused_not_read_as_all(argv: list[str], tmp_path: Path, capsys):
    """`splits=[]` and `checkpoints=[]` meant every split and checkpoint (issue 37 item 9)."""
    argv = [arg.replace("RUN", str(tmp_path / "run")).replace("OUT", str(tmp_path / "out")) for arg in argv]
    key = next(arg for arg in argv if arg.endswith("=[]")).removesuffix("=[]")
    assert one_line_error(capsys, argv) == (
        f"{key}=[] names nothing: leave {key}= out for the default, or name some ({key}=[a,b])"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "mark,fix",
    [
        (",", "quote the value as output_dir='{out},x'"),
        ("[", "quote the value as output_dir='{out}[x'"),
        ("'", "quote the value as output_dir='{out}\\'x'"),
        ("${y}", "write \\${ for a literal one"),
        ("\n", "holds a newline: choose a name without one"),
    ],
)
def test_an_output_path_with_override_syntax_names_the_fix(mark: str, fix: str, tmp_path: Path, capsys):
    """A comma, bracket, quote, ${ or newline in a path got Hydra's lexer text, naming no fix (issue 37
    item 9); quoted as the line says, the path is taken."""
    out = tmp_path / "out"
    message = one_line_error(capsys, ["config", f"output_dir={out}{mark}x"])
    assert fix.replace("{out}", str(out)) in message and "mismatched input" not in message
    if mark in ",[":
        assert main(["config", f"output_dir='{out}{mark}x'"]) == 0
        assert f"output_dir: {out}{mark}x" in capsys.readouterr().out


def test_refusals_around_an_existing_run_change_nothing(tmp_path: Path, capsys):
    """output_dir=RUN/checkpoints used to start a second run inside the first, mixing their files; eval with a
    missing baseline= used to evaluate and write the checkpoint's results before failing; eval with a test
    split that does not exist left features-train.pt (issue 37 item 9)."""
    run = tmp_path / "run"
    assert (
        main(["pretrain", *SMALL, "data=synthetic", "data.subset=16", "trainer.max_steps=1", f"output_dir={run}"]) == 0
    )
    capsys.readouterr()
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    message = one_line_error(capsys, ["pretrain", *SMALL, "data=synthetic", f"output_dir={run / 'checkpoints'}"])
    assert message == f"output_dir {run / 'checkpoints'} lies inside the run {run}; choose an output_dir outside it"
    message = one_line_error(capsys, ["eval", "knn", f"run={run}", "baseline=epoch-0099"])
    assert message.startswith(f"no checkpoint 'epoch-0099' in {run / 'checkpoints'}")
    message = one_line_error(capsys, ["eval", "linear", f"run={run}", "data.test_split=nope"])
    assert message == "dataset synthetic has no split 'nope'; valid splits: train, test"
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


@pytest.mark.parametrize("key", ["memory_budget_gb", "peak_tflops"])
def test_bench_refuses_a_non_positive_budget_before_measuring(capsys, key):
    assert (
        one_line_error(capsys, ["bench", f"{key}=-1", "data=synthetic"])
        == f"{key} must be a positive number or null, got -1"
    )


def section_keys(node: DictConfig, prefix: str, sections: dict) -> dict[str, set[str]]:
    """The keys each declared section of a config holds."""
    keys: dict[str, set[str]] = {prefix: set()}
    for key in node.keys():
        name = f"{prefix}.{key}" if prefix else key
        if name in sections and isinstance(node._get_node(key), DictConfig):
            keys.update(section_keys(node[key], name, sections))
        else:
            keys[prefix].add(key)
    return keys


@pytest.mark.parametrize("group", GROUPS)
def test_every_section_of_every_option_holds_exactly_its_declared_settings(group):
    """A key added to a config group without a declaration, or a declaration without its default in the
    group, fails here (the first also fails every run that loads the group)."""
    for option in group_options(group):
        data = [f"data={option}", "data.root=/data"] if group == "data" else ["data=synthetic"]
        named = {"timm": "timm:convnext_atto", "factory": "torchvision.models:resnet18"}  # groups of named backbones
        name = [f"backbone.name={named[option]}"] if group == "backbone" and option in named else []
        cfg = load_config([f"{group}={option}", *data, *name])
        declared = {**sections(cfg), **eval_sections()}
        for section, keys in section_keys(cfg, "", declared).items():
            assert keys == set(declared[section]), f"{group}={option}: {section}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.epoch=1", "unknown setting trainer.epoch; did you mean 'trainer.epochs'"),
        ("+method.temperatures=0.2", "unknown setting method.temperatures; did you mean 'method.temperature'"),
        ("+eval.knn.kk=5", "unknown setting eval.knn.kk; did you mean 'eval.knn.k'"),
        ("+probe=1", "unknown setting probe"),
    ],
)
def test_an_undeclared_key_is_refused_even_when_added(capsys, override, message):
    assert one_line_error(capsys, ["config", "data=synthetic", override]).startswith(message)


@pytest.mark.parametrize(
    "overrides",
    [
        ["eval.online_linear=true", "eval.every=0"],
        ["method=mae", "backbone=resnet18"],
        ["method=mae", "backbone=vit_tiny", "backbone.patch_size=5"],
        ["method=moco_v3", "method.freeze_patch_embed=true"],
        ["views.num=1"],
    ],
)
def test_config_refuses_what_pretrain_refuses(overrides: list[str], tmp_path: Path, capsys):
    """`selfsup config` printed configs that pretrain refused when it built the model or checked the online
    probe (issue 37 item 9): both now say the same line."""
    refused = fails_in_one_line(capsys, tmp_path / "out", "data=synthetic", *overrides)
    assert one_line_error(capsys, ["config", *overriding(SMALL, "data=synthetic", *overrides)]) == refused


def test_subsets_larger_than_their_split(tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert fails_in_one_line(capsys, out, "data=synthetic", "data.subset=5000") == (
        "data.subset=5000 is larger than the 2000 images of synthetic train"
    )
    assert fails_in_one_line(capsys, out, "data=synthetic", "eval.every=1", "eval.train_subset=5000") == (
        "eval.train_subset=5000 is larger than the 2000 images of synthetic train"
    )


def test_truncated_or_corrupt_dataset_files(tmp_path: Path, capsys):
    write_cifar10(tmp_path / "cifar", n_per_batch=4)
    batch = tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:-1000])
    write_svhn(tmp_path / "svhn", 10, 10)
    mat = tmp_path / "svhn" / "train_32x32.mat"
    mat.write_bytes(mat.read_bytes()[:500])
    write_stl10(tmp_path / "stl", 4, 4, 2)
    binary = tmp_path / "stl" / "stl10_binary" / "unlabeled_X.bin"
    with binary.open("ab") as f:
        f.write(b"\0" * 7)
    fetch = "set data.root=DIR to the folder that holds {} or data.download=true"
    cases = {
        "cifar10": f"malformed pickle batch {batch} (UnpicklingError: pickle data was truncated); "
        + fetch.format("cifar-10-batches-py/"),
        "svhn": f"malformed SVHN file {mat} (truncated: 30720 bytes needed at byte 192, 308 left); "
        + fetch.format("train_32x32.mat"),
        "stl10": f"malformed STL-10 file {binary}: 55303 bytes, not a positive multiple of 27648; "
        + fetch.format("stl10_binary/"),
    }
    roots = {"cifar10": "cifar", "svhn": "svhn", "stl10": "stl"}
    for name, message in cases.items():
        args = (f"data={name}", f"data.root={tmp_path / roots[name]}")
        assert fails_in_one_line(capsys, tmp_path / "out", *args) == message


def break_image(root: Path, rel: str) -> Path:
    """Cut an image file in half: its header is intact, its pixel data is not."""
    path = root / "train" / rel
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_undecodable_image_fails_naming_the_file_and_the_option(tmp_path: Path, capsys):
    written = write_imagefolder(tmp_path / "images", ["a", "b"], 8, splits=("train",))
    bad = break_image(tmp_path / "images", written["train"][3][0])
    out = tmp_path / "out"
    # A loader worker decodes it: the error crosses the process boundary and still prints as one line.
    args = ["pretrain", *overriding(SMALL, "trainer.num_workers=1"), "data=imagefolder"]
    args.append(f"data.root={tmp_path / 'images'}")
    assert main([*args, "trainer.max_steps=2", f"output_dir={out}"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out
    assert the_error(captured.err) == (
        f"cannot decode image {bad} (damaged or truncated PNG: image file is truncated); remove or replace it, "
        "or set data.bad_images=skip"
    )
    # The new run had started (config.yaml, the epoch-0000 starting point) but saved no step: removed.
    assert not out.exists()


def skipping_train_split(root: Path) -> ImageDataset:
    """The train split of an image folder as the config loads it, with data.bad_images=skip."""
    return load_split(load_config(["data=imagefolder", f"data.root={root}", "data.bad_images=skip"]).data, "train")


def test_skip_uses_the_next_good_image_warns_once_per_file_and_counts(tmp_path: Path, capsys):
    written = write_imagefolder(tmp_path, ["a", "b"], 3, splits=("train",))
    bad = [break_image(tmp_path, written["train"][i][0]) for i in (2, 3)]  # a/002.png, b/000.png
    dataset = skipping_train_split(tmp_path)
    items = [dataset[i] for i in range(len(dataset))]
    # Items 2 and 3 are both replaced by item 4, the next one that decodes (b/001.png, label 1).
    assert [label for _, label in items] == [0, 0, 1, 1, 1, 1]
    _, _, pixels = written["train"][4]
    assert torch.equal(items[2][0], torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))))
    assert capsys.readouterr().err.splitlines() == [
        f"warning: skipping undecodable image {path} (data.bad_images=skip)" for path in bad
    ]
    assert dataset.skipped == {2, 3}
    assert dataset[3][1] == 1
    assert not capsys.readouterr().err  # a file already skipped is not warned about again
    assert dataset.skipped == {2, 3}


def test_skip_of_a_folder_without_a_good_image(tmp_path: Path, capsys):
    written = write_imagefolder(tmp_path, ["a"], 2, splits=("train",))
    for rel, _, _ in written["train"]:
        break_image(tmp_path, rel)
    dataset = skipping_train_split(tmp_path)
    with pytest.raises(UserError) as err:
        dataset[1]
    assert len(capsys.readouterr().err.splitlines()) == 2  # each file warned about once
    assert str(err.value) == f"no image under {tmp_path / 'train'} can be decoded (data.bad_images=skip skipped all 2)"


def test_list_options_refuse_unbalanced_brackets():
    """tasks=[knn,linear (a lost bracket) used to run a sweep of knn and linear as if it were well formed."""
    assert parse_list("[knn, linear]") == parse_list("knn,linear") == ["knn", "linear"]
    for bad in ("[knn,linear", "knn]", "[[knn]]"):
        with pytest.raises(UserError, match="is not a list: write"):
            parse_list(bad)


def test_a_missing_optional_dependency_names_its_extra(monkeypatch, tmp_path: Path, capsys):
    from selfsup.eval.detection import check_settings
    from selfsup.report import build_report

    for module in ("pycocotools", "sklearn", "submitit"):
        monkeypatch.setitem(sys.modules, module, None)  # import machinery: "not installed"
    with pytest.raises(UserError) as err:
        check_settings(load_config(["data=synthetic"]).eval.detection)
    assert str(err.value) == "detection mAP needs pycocotools, which is not installed: pip install 'selfsup[detection]'"
    with pytest.raises(UserError) as err:
        build_report([], out=tmp_path / "report", embedding=True)
    assert str(err.value) == (
        "embedding=true (t-SNE maps) needs sklearn, which is not installed: pip install 'selfsup[embedding]'"
    )
    assert not (tmp_path / "report").exists()
    message = one_line_error(capsys, ["submit", "pretrain", "data=synthetic", "slurm.cluster=local"])
    assert message == "selfsup submit needs submitit, which is not installed: pip install 'selfsup[slurm]'"
