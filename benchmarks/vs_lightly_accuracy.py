"""Accuracy parity with lightly: each method's kNN after pretraining with selfsup's defaults and with lightly's
own implementation and CIFAR-10 benchmark recipe, at equal epochs, batch and images, scored by one kNN.

Both sides pretrain a ResNet-18 on the same class-balanced `subset` of the training images of `data`
(cifar10 or fashion_mnist, from SELFSUP_DATA; subset=all: every image) for `epochs` epochs at batch `batch`,
one run per seed. Each trained backbone (and a randomly initialised one per side and seed) is then scored by
the same weighted kNN written here, independent of both libraries: k 200, temperature 0.1, cosine
similarity, bank = every training image (not only the pretraining subset), queries = the test split, the
dataset's normalisation, no augmentation.

selfsup's side is `selfsup pretrain method=M data=D data.subset=N trainer.epochs=E trainer.batch_size=B`
with nothing else set (its defaults are what is measured; `selfsup_args=` adds overrides for ablations, under
`tag=`). lightly's side is lightly 1.6's modules, losses and transforms assembled exactly as its CIFAR-10
benchmark (lightly-ai/lightly docs/source/getting_started/benchmarks/cifar10_benchmark.py) assembles each
`<Method>Model`, cited per method in the code: lightly's ResNetGenerator ResNet-18 (MoCo: with lightly's
SplitBatchNorm over 8 splits, `num_splits=8`), the file's heads and losses, SGD lr 0.06 x batch/128 (SimSiam
unscaled), momentum 0.9, weight decay 5e-4 (SwAV: Adam 1e-3 x batch/128, wd 1e-6), CosineAnnealingLR over the
run's epochs, and the file's views at the data's crop size (32 on CIFAR-10) with lightly's ImageNet
normalisation: SimCLRTransform (cj 0.5, no blur) for SimCLR and MoCo, BYOLTransform (no blur) for BYOL and
Barlow Twins, SimSiamTransform (no blur) for SimSiam, SwaVTransform (2 crops) for SwAV, DINOTransform (no local
views) for DINO; one forward per view, views made per image in `workers` loader processes. Two departures,
both named where they are made: SwaVTransform gets crop_max_scales=(1.0,) (lightly 1.6 refuses the file's
arguments without it) and DINOLoss's 30-of-200-epoch teacher warmup is scaled to the run's epochs. The file has no
VICReg model, so VICReg gets no lightly run (asked for by name with sides=lightly: refused in one line). Both
sides run at the precision selfsup picks for the device (fp32 on a CPU without native bf16, bf16 autocast on a
GPU) unless `selfsup_args="trainer.precision=32"` or `lightly_precision=32` say otherwise; each record names the
precision its side ran at.

Time to accuracy (issue 20's long schedule on a GPU): `snapshots=K` also scores both sides every K epochs,
each with the training loop's seconds so far (the device queue drained; process start, snapshots and kNN not
counted: selfsup's checkpoints' device-seconds, lightly's loop timed here), and record=true adds a table of
when selfsup reaches lightly's final kNN as a share of lightly's time.

    pip install --no-deps --target benchmarks/.lightly lightly==1.6.0
    SELFSUP_DATA=../shared/data python benchmarks/vs_lightly_accuracy.py [methods=simclr,byol] [seeds=0,1] \\
        [data=cifar10|fashion_mnist] [epochs=8] [subset=2000|all] [batch=128] [sides=selfsup,lightly] \\
        [device=cpu|cuda] [workers=2] [snapshots=0] [selfsup_args="optim.base_lr=0.12"] [tag=NAME] \\
        [lightly_precision=auto|32|bf16] [out=output/vs-lightly-accuracy] [record=true]

Every trained backbone and score is kept under `out` (rerunning skips what exists), so methods and seeds
can be run in separate invocations; record=true appends the table of everything in `out` to RESULTS.md, with
selfsup's kNN minus lightly's per method, shown as 'no evidence at this budget' instead where any run of either
side ends at or below its own random init.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / ".lightly"))  # where the docstring's pip command puts lightly

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from results import append_section  # noqa: E402

from selfsup.config import load_config, load_run_config  # noqa: E402
from selfsup.data.loader import pretrain_dataset  # noqa: E402
from selfsup.data.sources import build_dataset, dataset_spec  # noqa: E402
from selfsup.nets.weights import build_backbone_from_config  # noqa: E402
from selfsup.precision import resolve_precision  # noqa: E402
from selfsup.runs.checkpoint import backbone_state, load_checkpoint  # noqa: E402
from selfsup.runs.files import atomic_write_text  # noqa: E402
from selfsup.train.cost import device_name  # noqa: E402

METHODS = ("simclr", "moco", "byol", "simsiam", "swav", "vicreg", "barlow", "dino")
DATASETS = ("cifar10", "fashion_mnist")


@dataclass(frozen=True)
class Run:
    """The budget and place both sides train with."""

    data: str
    crop_size: int
    epochs: int
    subset: int | None  # None: every training image
    batch: int
    device: torch.device
    workers: int  # lightly's loader processes (selfsup batches its crops on the device)
    snapshot_every: int  # epochs between scored snapshots (0: the end only)


@dataclass
class Snapshot:
    """A backbone after `epoch` epochs and the training loop's seconds spent to get there."""

    epoch: int
    seconds: float
    backbone: nn.Module


# ------------------------------------------------------------------------------------------------------------
# the independent kNN


@torch.no_grad()
def features(
    backbone: nn.Module, images: np.ndarray, data: str, device: torch.device, batch: int = 256
) -> torch.Tensor:
    """L2-normalised backbone features (on the CPU) of uint8 [N, 3, H, W] images with the dataset's
    normalisation, eval mode, computed on `device`."""
    spec = dataset_spec(data)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    backbone.eval().to(device)
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).to(device).float().div_(255).sub_(mean).div_(std)
        out.append(F.normalize(backbone(x).flatten(1).float(), dim=1).cpu())
    return torch.cat(out)


def weighted_knn(train: torch.Tensor, train_y: np.ndarray, test: torch.Tensor, test_y: np.ndarray) -> float:
    """Top-1 (%) of the similarity-weighted kNN of Wu et al. 2018 (k 200, T 0.1), as lightly and solo-learn use."""
    k, temperature, classes = 200, 0.1, int(train_y.max()) + 1
    labels = torch.from_numpy(train_y).long()
    correct = 0
    for start in range(0, len(test), 512):
        sim, idx = (test[start : start + 512] @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), classes).scatter_add_(1, labels[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1).numpy() == test_y[start : start + 512]).sum())
    return 100.0 * correct / len(test)


# ------------------------------------------------------------------------------------------------------------
# lightly's side


class Views(torch.utils.data.Dataset):
    """uint8 [N, 3, H, W] images through a lightly transform (PIL in, list of views out)."""

    def __init__(self, images: np.ndarray, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i].transpose(1, 2, 0)))


# Every lightly-side choice below is what lightly's CIFAR-10 benchmark writes, in
# lightly-ai/lightly docs/source/getting_started/benchmarks/cifar10_benchmark.py (the transforms-based version
# lightly 1.6 ships with): its module-level `*_transform`s and `create_dataset_train_ssl`'s model_to_transform
# map pick each method's views; its `<Method>Model` classes the backbone, heads, loss and configure_optimizers.
BENCHMARK = "lightly-ai/lightly docs/source/getting_started/benchmarks/cifar10_benchmark.py"
# methods with a `<Method>Model` there; it has no VICReg model (VICReg is only in its imagenette/imagenet files)
LIGHTLY_METHODS = ("simclr", "moco", "byol", "simsiam", "swav", "barlow", "dino")
MOCO_SPLITS = 8  # MocoModel: `num_splits = 0 if sync_batchnorm else 8` (sync_batchnorm = False)


def lightly_backbone(method: str) -> nn.Module:
    """The benchmark's ResNetGenerator("resnet-18") without its classifier; MocoModel's with lightly's
    SplitBatchNorm (lightly.models.batchnorm, through ResNetGenerator's num_splits) over 8 splits."""
    from lightly.models import ResNetGenerator

    resnet = ResNetGenerator("resnet-18", num_splits=MOCO_SPLITS if method == "moco" else 0)
    return nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def dino_head() -> nn.Module:
    """DINOModel._build_projection_head: DINOProjectionHead(512, 2048, 256, 2048, batch_norm=True) cut to
    2 layers for CIFAR-10."""
    from lightly.models.modules import heads

    head = heads.DINOProjectionHead(512, 2048, 256, 2048, batch_norm=True)
    head.layers = heads.ProjectionHead([(512, 2048, nn.BatchNorm1d(2048), nn.GELU()), (2048, 256, None, None)]).layers
    return head


def lightly_transform(method: str, crop_size: int = 32):
    """The benchmark's views for `method` (model_to_transform) at `crop_size` (its 32 on CIFAR-10), with
    lightly's default ImageNet normalisation as the benchmark leaves it."""
    from lightly.transforms import (
        BYOLTransform,
        BYOLView1Transform,
        BYOLView2Transform,
        DINOTransform,
        SimCLRTransform,
        SimSiamTransform,
        SwaVTransform,
    )

    if method in ("byol", "barlow"):  # BYOLModel and BarlowTwinsModel: byol_transform
        return BYOLTransform(
            view_1_transform=BYOLView1Transform(input_size=crop_size, gaussian_blur=0.0),
            view_2_transform=BYOLView2Transform(input_size=crop_size, gaussian_blur=0.0),
        )
    if method == "simsiam":  # SimSiamModel: simsiam_transform
        return SimSiamTransform(input_size=crop_size, gaussian_blur=0.0)
    if method == "swav":  # SwaVModel: swav_transform. lightly 1.6 refuses the file's one crop size against the
        # default two crop_max_scales (1.0, 0.14), so the one scale is given: the default's first, 1.0
        return SwaVTransform(
            crop_sizes=(crop_size,),
            crop_counts=(2,),
            crop_min_scales=(0.14,),
            crop_max_scales=(1.0,),
            cj_strength=0.5,
            gaussian_blur=0.0,
        )
    if method == "dino":  # DINOModel: dino_transform
        return DINOTransform(global_crop_size=crop_size, n_local_views=0, cj_strength=0.5, gaussian_blur=(0, 0, 0))
    # SimCLRModel and MocoModel: simclr_transform
    return SimCLRTransform(input_size=crop_size, cj_strength=0.5, gaussian_blur=0.0)


class LightlyModel(nn.Module):
    """One `<Method>Model` of lightly's CIFAR-10 benchmark: `loss(views)` is its training_step's loss."""

    def __init__(self, method: str, batch: int, epochs: int, crop_size: int = 32) -> None:
        super().__init__()
        from lightly import loss
        from lightly.models.modules import heads

        if method not in LIGHTLY_METHODS:
            raise SystemExit(f"no lightly run for method={method}: {BENCHMARK} has no {method} model")
        if method == "moco" and batch % MOCO_SPLITS:
            raise SystemExit(f"lightly moco: batch={batch} must split into MocoModel's {MOCO_SPLITS} BatchNorm splits")
        self.method, self.epochs, self.crop_size = method, epochs, crop_size
        self.backbone = lightly_backbone(method)
        if method == "simclr":  # SimCLRModel
            self.head, self.criterion = heads.SimCLRProjectionHead(512, 512, 128), loss.NTXentLoss()
        elif method == "moco":  # MocoModel (memory_bank_size=4096, written as lightly 1.6 asks: (size, dim))
            self.head = heads.MoCoProjectionHead(512, 512, 128)
            self.criterion = loss.NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))
        elif method == "byol":  # BYOLModel
            self.head = heads.BYOLProjectionHead(512, 1024, 256)
            self.predictor = heads.BYOLPredictionHead(256, 1024, 256)
            self.criterion = loss.NegativeCosineSimilarity()
        elif method == "simsiam":  # SimSiamModel: 2-layer projection head for CIFAR-10
            self.head = heads.ProjectionHead(
                [(512, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)), (2048, 2048, nn.BatchNorm1d(2048), None)]
            )
            self.predictor = heads.SimSiamPredictionHead(2048, 512, 2048)
            self.criterion = loss.NegativeCosineSimilarity()
        elif method == "barlow":  # BarlowTwinsModel: 2-layer projection head for CIFAR-10
            self.head = heads.ProjectionHead(
                [(512, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)), (2048, 2048, None, None)]
            )
            self.criterion = loss.BarlowTwinsLoss()
        elif method == "swav":  # SwaVModel
            self.head = heads.SwaVProjectionHead(512, 512, 128)
            self.prototypes = heads.SwaVPrototypes(128, 512)
            self.criterion = loss.SwaVLoss()
        else:  # DINOModel: DINOLoss(output_dim=2048), its default 30-epoch teacher warmup of 200 epochs scaled
            # to this run's epochs as CosineAnnealingLR(optim, max_epochs) scales its schedule
            self.head = dino_head()
            self.criterion = loss.DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=max(1, epochs * 30 // 200))
        if method in ("moco", "byol", "dino"):
            # the momentum copies; DINOModel's teacher head is a second _build_projection_head()
            self.backbone_m = copy.deepcopy(self.backbone)
            self.head_m = dino_head() if method == "dino" else copy.deepcopy(self.head)
            for module in (self.backbone_m, self.head_m):
                module.requires_grad_(False)

    def optimizer(self, batch: int, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
        """The method's configure_optimizers and a per-step lr multiplier: SGD lr 6e-2 x batch/128 (SimSiam
        unscaled), momentum 0.9, wd 5e-4 (SwaV: Adam 1e-3 x batch/128, wd 1e-6), CosineAnnealingLR per epoch."""
        params = [p for p in self.parameters() if p.requires_grad]
        epochs = self.epochs

        def per_epoch(step: int) -> float:
            return 0.5 * (1 + math.cos(math.pi * (step // steps_per_epoch) / epochs))

        if self.method == "swav":
            return torch.optim.Adam(params, lr=1e-3 * batch / 128, weight_decay=1e-6), per_epoch
        lr = 6e-2 if self.method == "simsiam" else 6e-2 * batch / 128
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4), per_epoch

    def transform(self):
        """The benchmark's views for this method."""
        return lightly_transform(self.method, self.crop_size)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    @torch.no_grad()
    def embed_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_m(self.backbone_m(x))

    def loss(self, views: list[torch.Tensor], epoch: int) -> torch.Tensor:
        from lightly.models import utils

        if self.method in ("moco", "byol", "dino"):
            for online, target in ((self.backbone, self.backbone_m), (self.head, self.head_m)):
                utils.update_momentum(online, target, m=0.99)
        x0, x1 = views[0], views[1]
        if self.method in ("simclr", "barlow"):
            return self.criterion(self.embed(x0), self.embed(x1))
        if self.method == "moco":

            def step(a, b):
                b, shuffle = utils.batch_shuffle(b)
                return self.embed(a), utils.batch_unshuffle(self.embed_momentum(b), shuffle)

            return 0.5 * (self.criterion(*step(x0, x1)) + self.criterion(*step(x1, x0)))
        if self.method == "byol":
            p0, p1 = self.predictor(self.embed(x0)), self.predictor(self.embed(x1))
            z0, z1 = self.embed_momentum(x0), self.embed_momentum(x1)
            return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        if self.method == "simsiam":
            z0, z1 = self.embed(x0), self.embed(x1)
            p0, p1 = self.predictor(z0), self.predictor(z1)
            return 0.5 * (self.criterion(z0.detach(), p1) + self.criterion(z1.detach(), p0))
        if self.method == "swav":
            self.prototypes.normalize()
            outs = [self.prototypes(F.normalize(self.embed(v), dim=1)) for v in views]
            return self.criterion(outs[:2], outs[2:])
        # dino
        teacher = [self.embed_momentum(v) for v in views[:2]]
        student = [self.embed(v) for v in views]
        return self.criterion(teacher, student, epoch=epoch)


def train_lightly(method: str, images: np.ndarray, run: Run, seed: int, precision: str) -> list[Snapshot]:
    """lightly's recipe trained on `images`: its backbone every `run.snapshot_every` epochs and at the end.
    Snapshot times are the training loop's seconds (the device queue drained), without the snapshots' copies."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = LightlyModel(method, run.batch, run.epochs, run.crop_size).to(run.device)
    loader = torch.utils.data.DataLoader(
        Views(images, model.transform()),
        batch_size=run.batch,
        shuffle=True,
        drop_last=True,
        num_workers=run.workers,
        persistent_workers=run.workers > 0,
        pin_memory=run.device.type == "cuda",
    )
    optimizer, schedule = model.optimizer(run.batch, len(loader))
    base = [group["lr"] for group in optimizer.param_groups]
    model.train()
    step, seconds, snapshots = 0, 0.0, []
    for epoch in range(run.epochs):
        start = time.perf_counter()
        for views in loader:
            views = [v.to(run.device, non_blocking=True) for v in views]
            for group, lr in zip(optimizer.param_groups, base, strict=True):
                group["lr"] = lr * schedule(step)
            with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                loss = model.loss(views, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        seconds += time.perf_counter() - start
        print(
            f"  lightly {method} seed {seed}: epoch {epoch + 1}/{run.epochs} loss {loss.item():.4f} ({seconds:.0f} s)",
            flush=True,
        )
        if run.snapshot_every and (epoch + 1) % run.snapshot_every == 0 and epoch + 1 < run.epochs:
            snapshots.append(Snapshot(epoch + 1, seconds, copy.deepcopy(model.backbone).cpu()))
    snapshots.append(Snapshot(run.epochs, seconds, model.backbone))
    return snapshots


# ------------------------------------------------------------------------------------------------------------
# selfsup's side


def train_selfsup(
    method: str, run: Run, seed: int, extra: list[str], out: Path
) -> tuple[nn.Module, list[Snapshot], str]:
    """selfsup's defaults trained by its CLI; (random init, snapshots every `run.snapshot_every` epochs and the
    last, the command). Snapshot times are the checkpoints' device-seconds (the training loop's)."""
    args = [
        "pretrain",
        f"method={method}",
        f"data={run.data}",
        *([f"data.subset={run.subset}"] if run.subset else []),
        f"trainer.epochs={run.epochs}",
        f"trainer.batch_size={run.batch}",
        f"seed={seed}",
        f"device={run.device.type}",
        "trainer.progress=false",
        *([f"trainer.checkpoint_every={run.snapshot_every}"] if run.snapshot_every else []),
        *extra,
        f"output_dir={out}",
    ]
    if not (out / "checkpoints" / "last.pt").exists():
        print("  selfsup " + shlex.join(args), flush=True)
        subprocess.run([str(Path(sys.executable).parent / "selfsup"), *args], check=True)
    epochs = list(range(run.snapshot_every, run.epochs, run.snapshot_every)) if run.snapshot_every else []
    cfg = load_run_config(out)
    snapshots = [run_snapshot(out / "checkpoints" / f"epoch-{e:04d}.pt", cfg) for e in epochs]
    snapshots.append(run_snapshot(out / "checkpoints" / "last.pt", cfg))
    random_init = run_snapshot(out / "checkpoints" / "epoch-0000.pt", cfg).backbone
    return random_init, snapshots, " ".join(args[1:-1])


def run_snapshot(checkpoint: Path, cfg: DictConfig) -> Snapshot:
    """The backbone of a selfsup checkpoint of the run `cfg` describes, as a module, with its epoch and
    device-seconds (epoch-0000: the run's own random init)."""
    state = load_checkpoint(checkpoint)
    backbone, _ = build_backbone_from_config(cfg, init_weights=False)
    backbone.load_state_dict(backbone_state(state))
    return Snapshot(int(state["epoch"]), float(state["cost"]["device_seconds"]), backbone)


# ------------------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    methods = args.get("methods", ",".join(METHODS)).split(",")
    sides = args.get("sides", "selfsup,lightly").split(",")
    lacking = [m for m in methods if m not in LIGHTLY_METHODS]
    if "lightly" in sides and lacking and "methods" in args:
        raise SystemExit(f"no lightly run for {','.join(lacking)}: {BENCHMARK} has no such model; use sides=selfsup")
    seeds = [int(s) for s in args.get("seeds", "0,1").split(",")]
    data = args.get("data", "cifar10")
    if data not in DATASETS:
        raise SystemExit(f"data={data}: choose from {', '.join(DATASETS)}")
    device = torch.device(args.get("device", "cuda" if torch.cuda.is_available() else "cpu"))
    subset = args.get("subset", "2000")
    cfg = load_config([f"data={data}"])
    run = Run(
        data=data,
        crop_size=int(cfg.views.crop_size),
        epochs=int(args.get("epochs", 8)),
        subset=None if subset == "all" else int(subset),
        batch=int(args.get("batch", 128)),
        device=device,
        workers=int(args.get("workers", 2)),
        snapshot_every=int(args.get("snapshots", 0)),
    )
    extra, tag = shlex.split(args.get("selfsup_args", "")), args.get("tag", "")
    out = Path(args.get("out", "output/vs-lightly-accuracy"))
    out.mkdir(parents=True, exist_ok=True)
    lightly_setting = args.get("lightly_precision", "auto")
    lightly_precision = resolve_precision(lightly_setting, device.type)

    train_all = build_dataset(data, cfg.data.root, "train")
    test = build_dataset(data, cfg.data.root, "test")
    bank_images, bank_labels = train_all.images, np.asarray(train_all.labels)
    test_images, test_labels = test.images, np.asarray(test.labels)

    def knn(net: nn.Module) -> float:
        bank = features(net, bank_images, data, device)
        return weighted_knn(bank, bank_labels, features(net, test_images, data, device), test_labels)

    for method in methods:
        for seed in seeds:
            for side in sides:
                if side == "lightly" and method not in LIGHTLY_METHODS:
                    print(f"{method}: no lightly run ({BENCHMARK} has no {method} model)")
                    continue
                label = f"{side}-{tag}" if tag and side == "selfsup" else side
                if side == "lightly" and lightly_setting != "auto":
                    label = f"lightly-{lightly_setting}"
                where = "" if data == "cifar10" else f"{data}-"
                size = f"n{run.subset}" if run.subset else "nall"
                curve = f"-k{run.snapshot_every}" if run.snapshot_every else ""
                name = f"{label}-{where}{method}-e{run.epochs}-{size}-b{run.batch}-s{seed}{curve}"
                score_file = out / f"{name}.json"
                if score_file.exists():
                    print(f"{name}: {json.loads(score_file.read_text())['knn']:.2f} (kept)")
                    continue
                start = time.perf_counter()
                if side == "selfsup":
                    random_init, snapshots, command = train_selfsup(method, run, seed, extra, out / name)
                    # what the run itself resolved (selfsup_args may set trainer.precision)
                    precision = resolve_precision(str(load_run_config(out / name).trainer.precision), device.type)
                else:
                    chosen = [f"data.subset={run.subset}"] if run.subset else []
                    subset_cfg = load_config([f"data={data}", f"seed={seed}", *chosen])
                    array = train_all.images[np.asarray(pretrain_dataset(subset_cfg.data, seed).indices)]
                    precision = lightly_precision
                    snapshots = train_lightly(method, array, run, seed, precision)
                    command = f"lightly {method} recipe"
                    torch.manual_seed(seed)  # as train_lightly: the same initial weights
                    random_init = lightly_backbone(method)
                seconds = time.perf_counter() - start
                scored = [{"epoch": s.epoch, "seconds": s.seconds, "knn": knn(s.backbone)} for s in snapshots]
                record = {
                    "side": side,
                    "tag": tag if side == "selfsup" else "",
                    "method": method,
                    "data": data,
                    "seed": seed,
                    "epochs": run.epochs,
                    "subset": run.subset,
                    "batch": run.batch,
                    "device": device_name(device),
                    "precision": precision,
                    "train_seconds": seconds,
                    "loop_seconds": scored[-1]["seconds"],
                    "command": command,
                    "knn": scored[-1]["knn"],
                    "knn_random_init": knn(random_init),
                    **({"curve": scored} if run.snapshot_every else {}),
                }
                atomic_write_text(score_file, json.dumps(record, indent=1))
                print(
                    f"{name}: kNN {record['knn']:.2f} (random init {record['knn_random_init']:.2f}"
                    f"{'' if learned(record) else ': no evidence at this budget'}), {seconds / 60:.1f} min",
                    flush=True,
                )
    if args.get("record", "false") == "true":
        record_table(out, argv)


def time_to_reach(curve: list[dict], target: float) -> float | None:
    """Training-loop seconds of the first snapshot whose kNN is at least `target` (None: never reached)."""
    return next((point["seconds"] for point in curve if point["knn"] >= target), None)


def learned(record: dict) -> bool:
    """Whether a run's final kNN is above its own random init's (at or below: no evidence at this budget)."""
    return record["knn"] > record["knn_random_init"]


def difference_rows(records: list[dict]) -> list[str]:
    """Per method and budget, each selfsup side (tag) against lightly's: the difference of mean kNN over seeds,
    or 'no evidence at this budget' where any run of either side ends at or below its own random init."""
    groups: dict[tuple, dict[tuple[str, str], list[dict]]] = {}
    for r in records:
        key = (r.get("data", "cifar10"), r["method"], r["epochs"], str(r["subset"]), r["batch"])
        groups.setdefault(key, {}).setdefault((r["side"], r["tag"]), []).append(r)
    lines = []
    for (data, method, epochs, subset, batch), sides in sorted(groups.items()):
        lightly = sides.get(("lightly", ""))
        for (side, tag), rs in sorted(sides.items()):
            if side != "selfsup" or lightly is None:
                continue
            ours, theirs = statistics.mean(r["knn"] for r in rs), statistics.mean(r["knn"] for r in lightly)
            verdict = f"{ours - theirs:+.2f}" if all(map(learned, rs + lightly)) else "no evidence at this budget"
            label = "selfsup" + (f" ({tag})" if tag else "")
            cells = (data, method, label, epochs, subset, batch, f"{ours:.2f}", f"{theirs:.2f}", verdict)
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    if not lines:
        return []
    return [
        "",
        "selfsup against lightly's recipe: mean kNN over seeds; 'no evidence at this budget' where any run of "
        "either side ends at or below its own random init.",
        "",
        "| data | method | selfsup side | epochs | images | batch | selfsup kNN | lightly kNN | selfsup − lightly |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *lines,
    ]


def record_table(out: Path, argv: list[str]) -> None:
    """Append the table of every record under `out` to RESULTS.md."""
    records = [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]
    rows: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r.get("data", "cifar10"), r["method"], r["side"], r["tag"], r["epochs"], str(r["subset"]), r["batch"])
        rows.setdefault(key, []).append(r)

    def mean_se(values: list[float]) -> str:
        if len(values) < 2:
            return f"{values[0]:.2f} (1 seed)"
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) / math.sqrt(len(values)):.2f}"

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    devices = sorted({r.get("device", device_name(torch.device("cpu"))) for r in records})
    lines = [
        f"\n## Accuracy parity with lightly 1.6 — kNN on exported backbones ({dt.date.today()})\n",
        f"- command: `SELFSUP_DATA=../shared/data python benchmarks/vs_lightly_accuracy.py {shlex.join(argv)}`",
        f"- machine: {', '.join(devices)}, {platform.platform()}, torch {torch.__version__}, commit {commit}",
        "- kNN written in the script (k 200, T 0.1, bank = all training images, test split, the dataset's "
        "normalisation); mean ± standard error over seeds; random init = the same seed's untrained backbone",
        "",
        "| data | method | side | epochs | images | batch | seeds | kNN top-1 | random init | train min/run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (data, method, side, tag, epochs, subset, batch), rs in sorted(rows.items()):
        label = side + (f" ({tag})" if tag else "")
        lines.append(
            f"| {data} | {method} | {label} | {epochs} | {subset} | {batch} | {len(rs)} | "
            f"{mean_se([r['knn'] for r in rs])} | {mean_se([r['knn_random_init'] for r in rs])} | "
            f"{statistics.mean(r['train_seconds'] for r in rs) / 60:.1f} |"
        )
    lines += difference_rows(records)
    lines += time_to_accuracy_rows(records)
    append_section(lines)


def time_to_accuracy_rows(records: list[dict]) -> list[str]:
    """Per run with snapshots on both sides: the loop seconds selfsup takes to reach lightly's final kNN,
    against lightly's loop seconds for its whole run."""
    curves = {}
    for r in records:
        if "curve" in r:
            key = (r.get("data", "cifar10"), r["method"], r["seed"], r["epochs"], str(r["subset"]), r["batch"])
            curves.setdefault(key, {})[r["side"]] = r
    lines = []
    for (data, method, seed, epochs, subset, batch), sides in sorted(curves.items()):
        if {"selfsup", "lightly"} - set(sides):
            continue
        target, lightly_s = sides["lightly"]["knn"], sides["lightly"]["loop_seconds"]
        reached = time_to_reach(sides["selfsup"]["curve"], target)
        share = f"{reached / lightly_s:.2f}" if reached is not None else "not reached"
        if not (learned(sides["selfsup"]) and learned(sides["lightly"])):
            reached, share = None, "no evidence at this budget"
        lines.append(
            f"| {data} | {method} | {seed} | {epochs} | {subset} | {batch} | {target:.2f} in {lightly_s:.0f} s | "
            f"{sides['selfsup']['knn']:.2f} in {sides['selfsup']['loop_seconds']:.0f} s | "
            f"{'-' if reached is None else f'{reached:.0f} s'} | {share} |"
        )
    if not lines:
        return []
    return [
        "",
        "Time to accuracy: training-loop seconds (device queue drained; process start, snapshots and kNN "
        "excluded) for selfsup to reach lightly's final kNN, against lightly's whole run.",
        "",
        "| data | method | seed | epochs | images | batch | lightly: final kNN in | selfsup: final kNN in | "
        "selfsup reaches lightly's final kNN at | share of lightly's time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *lines,
    ]


if __name__ == "__main__":
    main(sys.argv[1:])
