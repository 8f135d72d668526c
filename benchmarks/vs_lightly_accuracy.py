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
`tag=`). lightly's side is lightly 1.6's modules, losses and transforms assembled as its CIFAR-10 benchmark
(docs/source/getting_started/benchmarks/cifar10_benchmark.py) assembles them: lightly's ResNetGenerator
ResNet-18, SGD lr 0.06 x batch/128 (SimSiam unscaled), momentum 0.9, weight decay 5e-4 on every parameter,
cosine annealing per epoch without warmup (SwAV: Adam 1e-3, wd 1e-6; VICReg: LARS 0.3 x batch/256, wd 1e-4,
10% warmup), SimCLR-style views at the data's crop size with colour-jitter strength 0.5 and no blur, ImageNet
normalisation, one forward per view, views made per image in `workers` loader processes. Both sides run at
the precision selfsup picks for the device (fp32 on a CPU without native bf16, bf16 autocast on a GPU)
unless `selfsup_args="trainer.precision=32"` or `lightly_precision=32` say otherwise; each record names the
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
can be run in separate invocations; record=true appends the table of everything in `out` to RESULTS.md.
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


def lightly_backbone() -> nn.Module:
    from lightly.models import ResNetGenerator

    resnet = ResNetGenerator("resnet-18")
    return nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def dino_head() -> nn.Module:
    """lightly's DINO head for CIFAR-10: its 2-layer variant with batch norm, 2048 prototypes."""
    from lightly.models.modules import heads

    head = heads.DINOProjectionHead(512, 2048, 256, 2048, batch_norm=True)
    head.layers = heads.ProjectionHead([(512, 2048, nn.BatchNorm1d(2048), nn.GELU()), (2048, 256, None, None)]).layers
    return head


class LightlyModel(nn.Module):
    """One method of lightly's CIFAR-10 benchmark: `loss(views)` is one training step's loss."""

    def __init__(self, method: str, batch: int, epochs: int, crop_size: int = 32) -> None:
        super().__init__()
        from lightly import loss
        from lightly.models.modules import heads

        self.method, self.epochs, self.crop_size = method, epochs, crop_size
        self.backbone = lightly_backbone()
        self.momentum_modules: list[tuple[nn.Module, nn.Module]] = []
        if method == "simclr":
            self.head, self.criterion = heads.SimCLRProjectionHead(512, 512, 128), loss.NTXentLoss()
        elif method == "moco":
            self.head = heads.MoCoProjectionHead(512, 512, 128)
            self.criterion = loss.NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))
        elif method == "byol":
            self.head = heads.BYOLProjectionHead(512, 1024, 256)
            self.predictor = heads.BYOLPredictionHead(256, 1024, 256)
            self.criterion = loss.NegativeCosineSimilarity()
        elif method == "simsiam":
            self.head = heads.ProjectionHead(
                [(512, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)), (2048, 2048, nn.BatchNorm1d(2048), None)]
            )
            self.predictor = heads.SimSiamPredictionHead(2048, 512, 2048)
            self.criterion = loss.NegativeCosineSimilarity()
        elif method == "barlow":
            self.head = heads.ProjectionHead(
                [(512, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)), (2048, 2048, None, None)]
            )
            self.criterion = loss.BarlowTwinsLoss()
        elif method == "vicreg":
            self.head, self.criterion = heads.BarlowTwinsProjectionHead(512, 2048, 2048), loss.VICRegLoss()
        elif method == "swav":
            self.head = heads.SwaVProjectionHead(512, 512, 128)
            self.prototypes = heads.SwaVPrototypes(128, 512)
            self.criterion = loss.SwaVLoss()
        elif method == "dino":
            self.head = dino_head()
            self.criterion = loss.DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=max(1, epochs * 30 // 200))
        else:
            raise SystemExit(f"no lightly recipe for method={method}; choose from {', '.join(METHODS)}")
        if method in ("moco", "byol", "dino"):
            # lightly's DINO teacher head is a second head of its own (its weight norm cannot be deep-copied)
            self.backbone_m = copy.deepcopy(self.backbone)
            self.head_m = dino_head() if method == "dino" else copy.deepcopy(self.head)
            for module in (self.backbone_m, self.head_m):
                module.requires_grad_(False)

    def optimizer(self, batch: int, steps_per_epoch: int):
        """lightly's optimizer for the method and a per-step lr multiplier (its per-epoch schedules)."""
        from lightly.utils.lars import LARS

        params = [p for p in self.parameters() if p.requires_grad]
        epochs = self.epochs
        per_epoch = lambda step: 0.5 * (1 + math.cos(math.pi * (step // steps_per_epoch) / epochs))  # noqa: E731
        if self.method == "swav":
            return torch.optim.Adam(params, lr=1e-3 * batch / 128, weight_decay=1e-6), per_epoch
        if self.method == "vicreg":
            warmup = max(1, round(0.1 * epochs * steps_per_epoch))
            total = epochs * steps_per_epoch

            def warmup_cosine(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

            return LARS(params, lr=0.3 * batch / 256, weight_decay=1e-4), warmup_cosine
        lr = 6e-2 if self.method == "simsiam" else 6e-2 * batch / 128
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4), per_epoch

    def transform(self):
        from lightly.transforms import DINOTransform, SimCLRTransform, SwaVTransform

        if self.method == "swav":
            return SwaVTransform(
                crop_sizes=(self.crop_size,),
                crop_counts=(2,),
                crop_min_scales=(0.14,),
                crop_max_scales=(1.0,),
                cj_strength=0.5,
                gaussian_blur=0.0,
            )
        if self.method == "dino":
            return DINOTransform(global_crop_size=self.crop_size, n_local_views=0, gaussian_blur=(0.0, 0.0, 0.0))
        return SimCLRTransform(input_size=self.crop_size, cj_strength=0.5, gaussian_blur=0.0)

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
        if self.method in ("simclr", "barlow", "vicreg"):
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
    sides = args.get("sides", "selfsup,lightly").split(",")
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
                    random_init = lightly_backbone()
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
                    f"{name}: kNN {record['knn']:.2f} (random init {record['knn_random_init']:.2f}), "
                    f"{seconds / 60:.1f} min",
                    flush=True,
                )
    if args.get("record", "false") == "true":
        record_table(out, argv)


def time_to_reach(curve: list[dict], target: float) -> float | None:
    """Training-loop seconds of the first snapshot whose kNN is at least `target` (None: never reached)."""
    return next((point["seconds"] for point in curve if point["knn"] >= target), None)


def record_table(out: Path, argv: list[str]) -> None:
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
