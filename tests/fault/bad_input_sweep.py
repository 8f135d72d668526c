"""Bad-input sweep: 100+ bad inputs across every command, each checked for the CLI's contract: exit 2, one
line on stderr, no traceback, and nothing changed on disk (every file under the scratch directory keeps
its size, modification time and content hash; no file appears or disappears; a run's run.lock, which
names the last process to hold the run, is rewritten by every start, even a refused one).

    SELFSUP_DATA=../shared/data python tests/fault/bad_input_sweep.py [scratch=DIR] [only=SUBSTRING]

Prints one row per case that breaks the contract and a summary; exits 1 when any does. The cases run in
one process through `selfsup.cli.main`, against a tiny trained run and broken dataset files it writes
into the scratch directory first.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the on-disk format writers
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fixtures_formats import write_cifar10, write_imagefolder, write_stl10, write_svhn  # noqa: E402

from selfsup.cli import main  # noqa: E402
from tests.fault.cli_errors import overriding  # noqa: E402

SMALL = ["views.crop_size=16", "trainer.batch_size=8", "trainer.progress=false", "eval.every=0", "device=cpu"]


class Evil:
    """A pickle that would run code when loaded, leaving a file in the scratch directory: the sweep checks
    that no loader runs it."""

    def __init__(self, witness: Path) -> None:
        self.witness = witness

    def __reduce__(self):
        return (os.system, (f"touch {self.witness}",))


def prepare(scratch: Path) -> dict[str, Path]:
    """A tiny finished run with a cached feature export, and dataset roots broken in the ways users meet."""
    paths = {"run": scratch / "run", "features": scratch / "features", "file": scratch / "a-file.txt"}
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        argv = ["pretrain", "data=synthetic", "data.subset=32", *SMALL, "trainer.max_steps=2"]
        assert main([*argv, "method.proj_hidden_dim=32", f"output_dir={paths['run']}"]) == 0
        assert main(["export", "features", f"run={paths['run']}", f"out={paths['features']}"]) == 0
    paths["file"].write_text("not a run\n")
    paths.update(crafted_runs(paths["run"], scratch))
    paths.update(crafted_files(paths["run"], scratch, quiet))

    truncated = scratch / "cifar-truncated"
    write_cifar10(truncated)
    batch = truncated / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:100])
    evil = scratch / "cifar-evil"
    write_cifar10(evil)
    (evil / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(Evil(scratch / "EVIL_RAN")))
    wrong = scratch / "cifar-wrong-shape"
    write_cifar10(wrong)
    with open(wrong / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({b"data": [[1, 2, 3]], b"labels": [0]}, f)
    ragged = scratch / "cifar-ragged-labels"
    write_cifar10(ragged)
    with open(ragged / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f)
    entry["labels"] = [[0, 1], *[[1]] * (len(entry["labels"]) - 1)]
    with open(ragged / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump(entry, f)
    no_images = scratch / "cifar-zero-images"
    write_cifar10(no_images)
    with open(no_images / "cifar-10-batches-py" / "test_batch", "wb") as f:  # protocol 2 as the originals
        pickle.dump({"data": np.zeros((0, 3072), np.uint8), "labels": []}, f, protocol=2)
    stl = scratch / "stl-truncated"
    write_stl10(stl)
    train_x = stl / "stl10_binary" / "train_X.bin"
    train_x.write_bytes(train_x.read_bytes()[:1000])
    svhn = scratch / "svhn-garbage"
    write_svhn(svhn)
    for mat in svhn.rglob("*.mat"):
        mat.write_bytes(b"garbage")
    empty = scratch / "imagefolder-empty"
    (empty / "train").mkdir(parents=True)
    undecodable = scratch / "imagefolder-undecodable"
    write_imagefolder(undecodable, ["a", "b"], 4)
    for image in list((undecodable / "train").rglob("*.*"))[:1]:
        image.write_bytes(b"not an image")
    corrupt_ckpt = scratch / "corrupt.pt"
    corrupt_ckpt.write_bytes(b"garbage")
    not_weights = scratch / "not-weights.safetensors"
    not_weights.write_bytes(b"garbage")
    paths.update(
        truncated=truncated,
        evil=evil,
        wrong=wrong,
        ragged=ragged,
        no_images=no_images,
        stl=stl,
        svhn=svhn,
        empty=empty,
        undecodable=undecodable,
        corrupt_ckpt=corrupt_ckpt,
        not_weights=not_weights,
    )
    return paths


def crafted_runs(run: Path, scratch: Path) -> dict[str, Path]:
    """Copies of the trained run with files a hostile user wrote: config.yaml naming code to import, asking
    for the environment, edited or deleted; a checkpoint whose config names code to import."""
    import shutil

    import yaml

    from selfsup.runs.checkpoint import load_checkpoint, save_checkpoint

    def copy(name: str, **edits: object) -> Path:
        target = scratch / name
        shutil.copytree(run, target, ignore=shutil.ignore_patterns("eval", "run.lock"))
        cfg = yaml.safe_load((target / "config.yaml").read_text())
        for key, value in edits.items():
            section, leaf = key.split("__")
            cfg[section][leaf] = value
        (target / "config.yaml").write_text(yaml.safe_dump(cfg))
        return target

    crafted = {
        "factory_run": copy("run-factory", backbone__name="tempfile:mkdtemp"),
        "env_run": copy("run-env", data__root="${oc.env:PATH}"),
        "edited_run": copy("run-edited", optim__base_lr=0.9),
        "deleted_run": copy("run-deleted"),
        "byol_run": copy("run-byol", method__name="byol"),
        "mae_last_run": copy("run-mae-last"),
        "factory_ckpt": scratch / "factory.pt",
    }
    (crafted["deleted_run"] / "config.yaml").unlink()
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    state["config"]["backbone"]["name"] = "os:abort"
    save_checkpoint(state, crafted["factory_ckpt"])
    # Another run's checkpoint (a ViT MAE's) copied over last.pt with its sidecar: a resume must refuse it, not
    # fall back to epoch-0000.pt.
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    state["config"]["method"] = {"name": "mae", "mask_ratio": 0.75}
    state["config"]["backbone"]["name"] = "vit_tiny"
    save_checkpoint(state, crafted["mae_last_run"] / "checkpoints" / "last.pt")
    return crafted


def crafted_files(run: Path, scratch: Path, quiet: io.StringIO) -> dict[str, Path]:
    """Files made from the trained run and then spoiled: backbone weights holding NaN or integers, kept
    fine-tuned models whose settings metadata is not JSON or not a mapping, exported features; and a copy of
    the run with evaluation results (what a report reads)."""
    import shutil

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    weights = scratch / "backbone.safetensors"
    evaluated = scratch / "run-evaluated"
    shutil.copytree(run, evaluated, ignore=shutil.ignore_patterns("run.lock"))
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        assert main(["export", "backbone", f"run={run}", f"out={weights}"]) == 0
        assert main(["eval", "knn", f"run={evaluated}"]) == 0
    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    files = {"nan_weights": scratch / "nan.safetensors", "int_weights": scratch / "int.safetensors"}
    conv1 = tensors["conv1.weight"]
    save_file({**tensors, "conv1.weight": conv1.clone().fill_(float("nan"))}, files["nan_weights"], metadata)
    save_file({**tensors, "conv1.weight": conv1.to(torch.int32)}, files["int_weights"], metadata)
    for name, settings in (("model_not_json", "{not json"), ("model_not_mapping", "[1, 2]")):
        files[name] = scratch / f"{name}.safetensors"
        save_file({"x": torch.zeros(2)}, files[name], {"selfsup_task": "finetune", "settings": settings})
    files["evaluated"] = evaluated
    return files


def cases(p: dict[str, Path], scratch: Path) -> list[tuple[str, list[str]]]:
    """(name, argv). Every output path named here is new, so a case that writes anything shows up."""
    new = scratch / "never-written"
    run, feats = p["run"], p["features"]
    train_st = feats / "train.safetensors"
    pre = ["pretrain", *SMALL, f"output_dir={new}"]
    syn = [*pre, "data=synthetic", "data.subset=32"]
    same = ["pretrain", "data=synthetic", "data.subset=32", *SMALL, "method.proj_hidden_dim=32"]  # as `run` was made
    settings = [
        "trainer.epochs=-1", "trainer.epochs=abc", "trainer.epochs=1.5", "trainer.batch_size=0",
        "trainer.batch_size=-8", "trainer.batch_size=abc", "trainer.accumulate=0", "trainer.accumulate=1000",
        "trainer.devices=0", "trainer.num_nodes=0", "trainer.max_steps=-1", "trainer.log_every=0",
        "trainer.checkpoint_every=-1", "trainer.precision=64", "trainer.nonfinite=maybe",
        "trainer.nonfinite_max=-1", "trainer.nonfinite_lr_factor=2", "trainer.compile=sometimes",
        "trainer.num_workers=-2", "optim.base_lr=nan", "optim.base_lr=inf", "optim.base_lr=-0.1",
        "optim.base_lr=abc", "optim.weight_decay=-1", "optim.warmup_epochs=-1", "optim.momentum=1.5",
        "optim=adam9", "views.crop_size=0", "views.crop_size=-16", "views.crop_size=4096",
        "views.crop_size=100000", "views.crop_size=1", "views.crop_size=3", "views.local_crop_size=4",
        "views.crop_scale=[2.0,1.0]", "views.crop_scale=[0.5]",
        "views.num=0", "views.flip_p=2", "views.jitter_p=-0.1", "views.blur_p=[1.0,0.1,0.5]",
        "views.local_crops=-1", "views.mean=[0.5]", "views.std=[0,0,0]", "device=tpu", "seed=abc",
        "method=simclrr", "method.temperature=0", "method.temperature=-1", "method.proj_hidden_dim=0",
        "backbone=resnet19", "backbone.cifar_stem=maybe", f"backbone.weights={scratch / 'missing.safetensors'}",
        f"backbone.weights={p['not_weights']}", "data.subset=0", "data.subset=-3", "data.subset=1000000000",
        "data.bad_images=ignore", "resume=maybe", "nonsense.key=1", "trainer.epochs", "=3", "eval.knn.k=0",
        "eval.every=-1", "analysis.every=-1",
    ]  # fmt: skip
    out = [(f"pretrain {s}", overriding(syn, s)) for s in settings]
    out += [
        ("pretrain method=swav num_prototypes=0", [*syn, "method=swav", "method.num_prototypes=0"]),
        ("pretrain method=moco queue_size=0", [*syn, "method=moco", "method.queue_size=0"]),
        ("pretrain method=dino out_dim=0", [*syn, "method=dino", "method.out_dim=0"]),
        ("pretrain method=beta_vae beta=-1", [*syn, "method=beta_vae", "method.beta=-1"]),
        ("pretrain batch larger than the data", overriding(syn, "trainer.batch_size=64")),
        ("pretrain data=nope", [*pre, "data=nope"]),
        ("pretrain missing cifar root", [*pre, "data=cifar10", f"data.root={scratch / 'nowhere'}"]),
        ("pretrain truncated cifar batch", [*pre, "data=cifar10", f"data.root={p['truncated']}"]),
        ("pretrain malicious cifar pickle", [*pre, "data=cifar10", f"data.root={p['evil']}"]),
        ("pretrain cifar batch of the wrong shape", [*pre, "data=cifar10", f"data.root={p['wrong']}"]),
        ("pretrain cifar batch with ragged labels", [*pre, "data=cifar10", f"data.root={p['ragged']}"]),
        ("pretrain cifar batch of zero images", [*pre, "data=cifar10", f"data.root={p['no_images']}",
                                                 "data.train_split=test"]),
        *(
            (f"pretrain output_dir holding {mark!r}", overriding(syn, f"output_dir={new}{mark}x"))
            for mark in (",", "[", "'", '"', "${", "\n")
        ),
        ("pretrain seed=2**64", [*syn, "seed=18446744073709551616"]),
        ("pretrain simclr views.num=1", [*syn, "views.num=1"]),
        ("pretrain moco queue_size=2**31", [*syn, "method=moco", "method.queue_size=2147483648"]),
        ("pretrain mae convnext_atto at 16 px", [*syn, "method=mae", "backbone=timm:convnext_atto"]),
        ("pretrain weights holding NaN", [*syn, f"backbone.weights={p['nan_weights']}"]),
        ("pretrain int32 weights", [*syn, f"backbone.weights={p['int_weights']}"]),
        ("pretrain simclr resumed from an MAE last.pt", [*same, "trainer.max_steps=4",
                                                         f"output_dir={p['mae_last_run']}"]),
        ("pretrain cifar split=val", [*pre, "data=cifar10", f"data.root={p['truncated']}", "data.train_split=val"]),
        ("pretrain truncated stl10", [*pre, "data=stl10", f"data.root={p['stl']}"]),
        ("pretrain garbage svhn", [*pre, "data=svhn", f"data.root={p['svhn']}"]),
        ("pretrain empty imagefolder", [*pre, "data=imagefolder", f"data.root={p['empty']}"]),
        ("pretrain undecodable image", [*pre, "data=imagefolder", f"data.root={p['undecodable']}"]),
        ("pretrain output_dir is a file", ["pretrain", *SMALL, "data=synthetic", f"output_dir={p['file']}"]),
        ("pretrain output_dir inside a run", ["pretrain", *SMALL, "data=synthetic", f"output_dir={run}/checkpoints"]),
        ("pretrain finished run with changed lr", ["pretrain", "data=synthetic", "data.subset=32", *SMALL,
                                                    "trainer.max_steps=2", "method.proj_hidden_dim=32",
                                                    "optim.base_lr=0.9", f"output_dir={run}"]),
        ("pretrain fewer steps than done", [*same, "trainer.max_steps=1", f"output_dir={run}"]),
        ("pretrain changed lr, config.yaml edited to it", [*same, "trainer.max_steps=2", "optim.base_lr=0.9",
                                                           f"output_dir={p['edited_run']}"]),
        ("pretrain changed lr, config.yaml deleted", [*same, "trainer.max_steps=2", "optim.base_lr=0.9",
                                                      f"output_dir={p['deleted_run']}"]),
        ("pretrain changed method, config.yaml deleted", [*same, "trainer.max_steps=2", "method=byol",
                                                          f"output_dir={p['deleted_run']}"]),
        ("pretrain same command, config.yaml deleted", [*same, "trainer.max_steps=2",
                                                        f"output_dir={p['deleted_run']}"]),
        ("unknown command", ["pretrian", "data=synthetic"]),
        ("config unknown key", ["config", "nonsense=1"]),
        ("config bad group", ["config", "data=nope"]),
        ("config bad value", ["config", "trainer.epochs=-1"]),
        ("config simclr views.num=1", ["config", "views.num=1"]),
        ("config mae on a resnet", ["config", "method=mae", "backbone=resnet18"]),
        ("config vit patch not dividing the crop", ["config", "backbone=vit_tiny", "backbone.patch_size=5"]),
        ("config online linear probe without the monitor", ["config", "eval.online_linear=true", "eval.every=0"]),
    ]  # fmt: skip
    evals = [
        ("eval unknown task", ["eval", "knnn", f"run={run}"]),
        ("eval no run", ["eval", "knn"]),
        ("eval missing run", ["eval", "knn", f"run={scratch / 'nowhere'}"]),
        ("eval run is a file", ["eval", "knn", f"run={p['file']}"]),
        ("eval unknown checkpoint", ["eval", "knn", f"run={run}", "checkpoint=epoch-0099"]),
        ("eval corrupt checkpoint", ["eval", "knn", f"run={run}", f"checkpoint={p['corrupt_ckpt']}"]),
        ("eval unknown baseline", ["eval", "knn", f"run={run}", "baseline=epoch-0099"]),
        ("eval knn k=0", ["eval", "knn", f"run={run}", "eval.knn.k=0"]),
        ("eval knn temperature=0", ["eval", "knn", f"run={run}", "eval.knn.temperature=0"]),
        ("eval linear epochs=0", ["eval", "linear", f"run={run}", "eval.linear.epochs=0"]),
        ("eval linear lr=-1", ["eval", "linear", f"run={run}", "eval.linear.lr=-1"]),
        ("eval linear batch_size=0", ["eval", "linear", f"run={run}", "eval.linear.batch_size=0"]),
        ("eval unknown key", ["eval", "knn", f"run={run}", "eval.knn.kk=3"]),
        ("eval train_subset=0", ["eval", "knn", f"run={run}", "eval.train_subset=0"]),
        ("eval features one file", ["eval", "knn", f"features=[{feats}/train.safetensors]"]),
        ("eval features missing", ["eval", "knn", f"features=[{scratch}/a.safetensors,{scratch}/b.safetensors]"]),
        ("eval features garbage", ["eval", "linear", f"features=[{p['not_weights']},{p['not_weights']}]"]),
        ("eval finetune data=nope", ["eval", "finetune", f"run={run}", "eval.finetune.data=nope"]),
        ("eval finetune epochs=0", ["eval", "finetune", f"run={run}", "eval.finetune.epochs=0"]),
        ("eval finetune crop_size=3", ["eval", "finetune", f"run={run}", "eval.finetune.crop_size=3"]),
        ("eval finetune augment=weird", ["eval", "finetune", f"run={run}", "eval.finetune.augment=weird"]),
        ("eval detection missing root", ["eval", "detection", f"run={run}", f"eval.detection.root={new}"]),
        ("eval detection format=yolo", ["eval", "detection", f"run={run}", "eval.detection.format=yolo"]),
        ("eval segmentation missing root", ["eval", "segmentation", f"run={run}", f"eval.segmentation.root={new}"]),
        ("eval positional junk", ["eval", "knn", f"run={run}", "junk"]),
        ("eval factory backbone in config.yaml", ["eval", "knn", f"run={p['factory_run']}"]),
        ("sweep factory backbone in config.yaml", ["sweep", f"run={p['factory_run']}", "tasks=[knn]"]),
        ("eval oc.env interpolation in config.yaml", ["eval", "knn", f"run={p['env_run']}"]),
        ("eval knn data=cifar10 missing root", ["eval", "knn", f"run={run}", "data=cifar10", f"data.root={new}"]),
        ("eval knn method=byol", ["eval", "knn", f"run={run}", "method=byol"]),
        ("eval knn backbone=resnet50", ["eval", "knn", f"run={run}", "backbone=resnet50"]),
        ("eval knn config.yaml edited to byol", ["eval", "knn", f"run={p['byol_run']}"]),
        ("eval finetune model settings not JSON", ["eval", "finetune", f"run={run}", f"model={p['model_not_json']}"]),
        ("eval finetune model settings a list", ["eval", "finetune", f"run={run}", f"model={p['model_not_mapping']}"]),
        ("eval features same file twice", ["eval", "knn", f"features=[{train_st},{train_st}]"]),
        ("eval knn test split that does not exist", ["eval", "knn", f"run={run}", "data.test_split=nope"]),
        ("eval features swapped", ["eval", "knn", f"features=[{feats}/test.safetensors,{train_st}]"]),
    ]  # fmt: skip
    backbone, st_out = ["export", "backbone", f"run={run}"], f"out={new}.safetensors"
    others = [
        ("sweep missing run", ["sweep", f"run={scratch / 'nowhere'}"]),
        ("sweep unknown task", ["sweep", f"run={run}", "tasks=[knnn]"]),
        ("sweep unknown checkpoint", ["sweep", f"run={run}", "checkpoints=[epoch-0099]"]),
        ("sweep tasks unbalanced bracket", ["sweep", f"run={run}", "tasks=[knn,linear"]),
        ("sweep checkpoints=[]", ["sweep", f"run={run}", "checkpoints=[]"]),
        ("sweep tasks=[]", ["sweep", f"run={run}", "tasks=[]"]),
        ("report no runs", ["report", "runs=[]", f"out={new}"]),
        ("report missing run", ["report", f"runs=[{scratch / 'nowhere'}]", f"out={new}"]),
        ("report out is a file", ["report", f"runs=[{run}]", f"out={p['file']}"]),
        ("report out is the run's checkpoints", ["report", f"runs=[{run}]", f"out={run}/checkpoints"]),
        ("report hours_scale=abc", ["report", f"runs=[{run}]", f"out={new}", "hours_scale=abc"]),
        ("report hours_scale=-1", ["report", f"runs=[{run}]", f"out={new}", "hours_scale=-1"]),
        ("report unknown key", ["report", f"runs=[{run}]", f"out={new}", "colour=red"]),
        ("report out=/proc/x", ["report", f"runs=[{p['evaluated']}]", "out=/proc/x"]),
        ("export backbone out=/proc/x", [*backbone, "out=/proc/x.safetensors"]),
        ("export unknown kind", ["export", "weights", f"run={run}", f"out={new}.safetensors"]),
        ("export backbone no out", ["export", "backbone", f"run={run}"]),
        ("export backbone out=.txt", ["export", "backbone", f"run={run}", f"out={new}.txt"]),
        ("export backbone out is a dir", ["export", "backbone", f"run={run}", f"out={scratch}"]),
        ("export backbone unknown checkpoint", [*backbone, "checkpoint=nope", st_out]),
        ("export backbone corrupt checkpoint", [*backbone, f"checkpoint={p['corrupt_ckpt']}", st_out]),
        ("export backbone factory in checkpoint", [*backbone, f"checkpoint={p['factory_ckpt']}", st_out]),
        ("export backbone existing out", ["export", "backbone", f"run={run}", f"out={p['not_weights']}"]),
        ("export features unknown split", ["export", "features", f"run={run}", "splits=[valid]", f"out={new}"]),
        ("export features splits=[]", ["export", "features", f"run={run}", "splits=[]", f"out={new}"]),
        ("export features existing out", ["export", "features", f"run={run}", f"out={feats}"]),
        ("export features missing run", ["export", "features", f"run={scratch / 'nowhere'}", f"out={new}"]),
        ("submit unknown command", ["submit", "train", "data=synthetic"]),
        ("submit nodes=0", ["submit", "pretrain", "data=synthetic", "slurm.nodes=0", f"output_dir={new}"]),
        ("submit gpus=-1", ["submit", "pretrain", "data=synthetic", "slurm.gpus_per_node=-1", f"output_dir={new}"]),
        ("submit bad pretrain key", ["submit", "pretrain", "nonsense=1", f"output_dir={new}"]),
        ("bench unknown stage", ["bench", "stages=[warp]", "data=synthetic"]),
        ("bench steps=0", ["bench", "steps=0", "data=synthetic"]),
        ("bench unknown variant", ["bench", "variants=[fp8]", "data=synthetic"]),
        ("bench memory_budget_gb=-1", ["bench", "memory_budget_gb=-1", "data=synthetic"]),
        ("bench out is a dir", ["bench", f"out={scratch}", *SMALL, "data=synthetic", "data.subset=32"]),
        ("study unknown", ["study", "nope"]),
        ("study missing yaml", ["study", f"{scratch / 'nowhere.yaml'}"]),
        ("study garbage yaml", ["study", str(p["file"])]),
        ("study unknown run", ["study", "simclr_moco_cifar10", "smoke=true", "only=[nope]", f"out={new}"]),
        ("study only=[]", ["study", "simclr_moco_cifar10", "smoke=true", "only=[]", f"out={new}"]),
        ("study smoke=maybe", ["study", "simclr_moco_cifar10", "smoke=maybe", f"out={new}"]),
        ("study hours_scale=-1", ["study", "simclr_moco_cifar10", "smoke=true", "hours_scale=-1", f"out={new}"]),
        ("study hours_ref=p4", ["study", "simclr_moco_cifar10", "smoke=true", "hours_ref=p4", f"out={new}"]),
    ]  # fmt: skip
    return out + evals + others


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every file under `root`: inode, size, mtime and, under 1 MB, its SHA-256 (what 'nothing changed on
    disk' compares; an atomic rewrite of a large checkpoint changes its inode and mtime)."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.st_size < 2**20 else ""
            files[str(path.relative_to(root))] = (stat.st_ino, stat.st_size, stat.st_mtime_ns, digest)
    return files


def run_case(argv: list[str]) -> tuple[int | str, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status: int | str = main(argv)
        except BaseException as exc:  # noqa: BLE001 - an escaped exception is what the sweep reports
            status = f"raised {type(exc).__name__}"
    return status, out.getvalue(), err.getvalue()


def sweep(scratch: Path, only: str | None) -> int:
    paths = prepare(scratch)
    failures, total = [], 0
    started = time.perf_counter()
    for name, argv in cases(paths, scratch):
        if only and only not in name:
            continue
        total += 1
        argv = [arg.replace("never-written", f"never-written-{total}") for arg in argv]  # no case sees another's
        before = snapshot(scratch)
        status, out, err = run_case(argv)
        after = snapshot(scratch)
        for files in (before, after):  # a run's lock file records the last process that held it, by design
            for lock in [name for name in files if Path(name).name == "run.lock"]:
                files.pop(lock)
        # A run that had started printed its progress notes first; the refusal is one line, the last.
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("selfsup: error: ")]
        problems = []
        if status != 2:
            problems.append(f"exit {status}")
        if len(errors) != 1 or lines[-1] != errors[0]:
            problems.append(f"{len(errors)} error lines, last stderr line {lines[-1][:60] if lines else None!r}")
        if "Traceback" in out + err:
            problems.append("traceback")
        if before != after:
            changed = sorted(set(before) ^ set(after) | {k for k in before if k in after and before[k] != after[k]})
            problems.append(f"disk changed: {', '.join(changed[:3])}")
        print(f"{'FAIL' if problems else 'ok  '} {name}: {'; '.join(problems) or errors[0]}"[:200])
        if problems:
            failures.append(name)
    seconds = time.perf_counter() - started
    refused = total - len(failures)
    print(f"\n{refused} of {total} bad inputs refused in one line with nothing changed on disk ({seconds:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    options = dict(arg.split("=", 1) for arg in sys.argv[1:])
    if "scratch" in options:
        sys.exit(sweep(Path(options["scratch"]).resolve(), options.get("only")))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(sweep(Path(tmp), options.get("only")))
