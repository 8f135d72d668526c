"""Accuracy parity with lightly: each method's kNN after pretraining with selfsup's defaults and with lightly's
own implementation and CIFAR-10 benchmark recipe, at equal epochs, batch and images, scored by one kNN.

Both sides pretrain a ResNet-18 on the same class-balanced `subset` of the CIFAR-10 training images in
SELFSUP_DATA for `epochs` epochs at batch `batch`, one run per seed. Each trained backbone (and a randomly
initialised one per side and seed) is then scored by the same weighted kNN written here, independent of
both libraries: k 200, temperature 0.1, cosine similarity, bank = every training image (not only the
pretraining subset), queries = the test split, CIFAR-10 normalisation, no augmentation.

selfsup's side is `selfsup pretrain method=M data=cifar10 data.subset=N trainer.epochs=E trainer.batch_size=B`
with nothing else set (its defaults are what is measured; `selfsup_args=` adds overrides for ablations, under
`tag=`). lightly's side is lightly 1.6's modules, losses and transforms assembled as its CIFAR-10 benchmark
(docs/source/getting_started/benchmarks/cifar10_benchmark.py) assembles them: lightly's ResNetGenerator
ResNet-18, SGD lr 0.06 x batch/128 (SimSiam unscaled), momentum 0.9, weight decay 5e-4 on every parameter,
cosine annealing per epoch without warmup (SwAV: Adam 1e-3, wd 1e-6; VICReg: LARS 0.3 x batch/256, wd 1e-4,
10% warmup), SimCLR-style views with colour-jitter strength 0.5 and no blur, ImageNet normalisation, one
forward per view. Both sides run at the precision selfsup picks for the machine (fp32 without native bf16)
unless `selfsup_args="trainer.precision=32"` or `lightly_precision=32` say otherwise; each record names the
precision its side ran at.

    pip install --no-deps --target benchmarks/.lightly lightly==1.6.0
    SELFSUP_DATA=../shared/data python benchmarks/vs_lightly_accuracy.py [methods=simclr,byol] [seeds=0,1] \\
        [epochs=8] [subset=2000] [batch=128] [sides=selfsup,lightly] [selfsup_args="optim.base_lr=0.12"] \\
        [tag=NAME] [lightly_precision=auto|32|bf16] [out=output/vs-lightly-accuracy] [record=true]

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / ".lightly"))  # where the docstring's pip command puts lightly

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from results import append_section  # noqa: E402

from selfsup.config import load_config, load_run_config  # noqa: E402
from selfsup.data.loader import pretrain_dataset  # noqa: E402
from selfsup.data.sources import build_dataset, dataset_spec  # noqa: E402
from selfsup.nets.backbones import build_backbone  # noqa: E402
from selfsup.nets.weights import read_backbone_weights  # noqa: E402
from selfsup.precision import resolve_precision  # noqa: E402
from selfsup.train.cost import device_name  # noqa: E402

METHODS = ("simclr", "moco", "byol", "simsiam", "swav", "vicreg", "barlow", "dino")


# ------------------------------------------------------------------------------------------------------------
# the independent kNN


@torch.no_grad()
def features(backbone: nn.Module, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """L2-normalised backbone features of uint8 [N, 3, H, W] images with CIFAR-10 normalisation, eval mode."""
    spec = dataset_spec("cifar10")
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    backbone.eval()
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).float().div_(255).sub_(mean).div_(std)
        out.append(F.normalize(backbone(x).flatten(1).float(), dim=1))
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

    def __init__(self, method: str, batch: int, epochs: int) -> None:
        super().__init__()
        from lightly import loss
        from lightly.models.modules import heads

        self.method, self.epochs = method, epochs
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
                crop_sizes=(32,),
                crop_counts=(2,),
                crop_min_scales=(0.14,),
                crop_max_scales=(1.0,),
                cj_strength=0.5,
                gaussian_blur=0.0,
            )
        if self.method == "dino":
            return DINOTransform(global_crop_size=32, n_local_views=0, gaussian_blur=(0.0, 0.0, 0.0))
        return SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)

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


def train_lightly(method: str, images: np.ndarray, batch: int, epochs: int, seed: int, precision: str) -> nn.Module:
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = LightlyModel(method, batch, epochs)
    loader = torch.utils.data.DataLoader(
        Views(images, model.transform()),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=2,
        persistent_workers=True,
    )
    optimizer, schedule = model.optimizer(batch, len(loader))
    base = [group["lr"] for group in optimizer.param_groups]
    model.train()
    step, start = 0, time.perf_counter()
    for epoch in range(epochs):
        for views in loader:
            for group, lr in zip(optimizer.param_groups, base, strict=True):
                group["lr"] = lr * schedule(step)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                loss = model.loss(list(views), epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        print(
            f"  lightly {method} seed {seed}: epoch {epoch + 1}/{epochs} loss {loss.item():.4f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return model.backbone


# ------------------------------------------------------------------------------------------------------------
# selfsup's side


def train_selfsup(method: str, subset: int, batch: int, epochs: int, seed: int, extra: list[str], run: Path):
    args = [
        "pretrain",
        f"method={method}",
        "data=cifar10",
        f"data.subset={subset}",
        f"trainer.epochs={epochs}",
        f"trainer.batch_size={batch}",
        f"seed={seed}",
        "trainer.progress=false",
        *extra,
        f"output_dir={run}",
    ]
    if not (run / "checkpoints" / "last.pt").exists():
        print("  selfsup " + shlex.join(args), flush=True)
        subprocess.run([str(Path(sys.executable).parent / "selfsup"), *args], check=True)
    return [run_backbone(run / "checkpoints" / f"{name}.pt") for name in ("last", "epoch-0000")], " ".join(args[1:-1])


def run_backbone(checkpoint: Path) -> nn.Module:
    """The backbone of a selfsup checkpoint as a module (epoch-0000: the run's own random init)."""
    weights, _ = read_backbone_weights(checkpoint)
    backbone, _ = build_backbone(load_config(["data=cifar10"]).backbone.name, cifar_stem=True)
    backbone.load_state_dict(weights)
    return backbone


# ------------------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    methods = args.get("methods", ",".join(METHODS)).split(",")
    seeds = [int(s) for s in args.get("seeds", "0,1").split(",")]
    epochs, subset, batch = int(args.get("epochs", 8)), int(args.get("subset", 2000)), int(args.get("batch", 128))
    sides = args.get("sides", "selfsup,lightly").split(",")
    extra, tag = shlex.split(args.get("selfsup_args", "")), args.get("tag", "")
    out = Path(args.get("out", "output/vs-lightly-accuracy"))
    out.mkdir(parents=True, exist_ok=True)
    lightly_setting = args.get("lightly_precision", "auto")
    lightly_precision = resolve_precision(lightly_setting, "cpu")

    cfg = load_config(["data=cifar10"])
    train_all = build_dataset("cifar10", cfg.data.root, "train")
    test = build_dataset("cifar10", cfg.data.root, "test")
    for method in methods:
        for seed in seeds:
            for side in sides:
                label = f"{side}-{tag}" if tag and side == "selfsup" else side
                if side == "lightly" and lightly_setting != "auto":
                    label = f"lightly-{lightly_setting}"
                name = f"{label}-{method}-e{epochs}-n{subset}-b{batch}-s{seed}"
                score_file = out / f"{name}.json"
                if score_file.exists():
                    print(f"{name}: {json.loads(score_file.read_text())['knn']:.2f} (kept)")
                    continue
                start = time.perf_counter()
                if side == "selfsup":
                    trained = train_selfsup(method, subset, batch, epochs, seed, extra, out / name)
                    (backbone, random_init), command = trained
                    # what the run itself resolved (selfsup_args may set trainer.precision)
                    precision = resolve_precision(str(load_run_config(out / name).trainer.precision), "cpu")
                else:
                    subset_cfg = load_config(["data=cifar10", f"data.subset={subset}", f"seed={seed}"])
                    array = train_all.images[np.asarray(pretrain_dataset(subset_cfg.data, seed).indices)]
                    precision = lightly_precision
                    backbone = train_lightly(method, array, batch, epochs, seed, precision)
                    command = f"lightly {method} recipe"
                    torch.manual_seed(seed)  # as train_lightly: the same initial weights
                    random_init = lightly_backbone()
                seconds = time.perf_counter() - start
                bank = train_all.images, np.asarray(train_all.labels)
                scores = {}
                for key, net in (("knn", backbone), ("knn_random_init", random_init)):
                    scores[key] = weighted_knn(
                        features(net, bank[0]), bank[1], features(net, test.images), np.asarray(test.labels)
                    )
                record = {
                    "side": side,
                    "tag": tag if side == "selfsup" else "",
                    "method": method,
                    "seed": seed,
                    "epochs": epochs,
                    "subset": subset,
                    "batch": batch,
                    "precision": precision,
                    "train_seconds": seconds,
                    "command": command,
                    **scores,
                }
                score_file.write_text(json.dumps(record, indent=1))
                print(
                    f"{name}: kNN {scores['knn']:.2f} (random init {scores['knn_random_init']:.2f}), "
                    f"{seconds / 60:.1f} min",
                    flush=True,
                )
    if args.get("record", "false") == "true":
        record_table(out, argv)


def record_table(out: Path, argv: list[str]) -> None:
    rows: dict[tuple, list[dict]] = {}
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        rows.setdefault((r["method"], r["side"], r["tag"], r["epochs"], r["subset"], r["batch"]), []).append(r)

    def mean_se(values: list[float]) -> str:
        if len(values) < 2:
            return f"{values[0]:.2f} (1 seed)"
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) / math.sqrt(len(values)):.2f}"

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"\n## Accuracy parity with lightly 1.6 — CIFAR-10 subset, kNN on exported backbones ({dt.date.today()})\n",
        f"- command: `SELFSUP_DATA=../shared/data python benchmarks/vs_lightly_accuracy.py {shlex.join(argv)}`",
        f"- machine: {device_name(torch.device('cpu'))}, {platform.platform()}, torch {torch.__version__}, "
        f"commit {commit}",
        "- kNN written in the script (k 200, T 0.1, bank = all training images, test split, CIFAR normalisation); "
        "mean ± standard error over seeds; random init = the same seed's untrained backbone",
        "",
        "| method | side | epochs | images | batch | seeds | kNN top-1 | random init | train min/run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (method, side, tag, epochs, subset, batch), rs in sorted(rows.items()):
        label = side + (f" ({tag})" if tag else "")
        lines.append(
            f"| {method} | {label} | {epochs} | {subset} | {batch} | {len(rs)} | {mean_se([r['knn'] for r in rs])} | "
            f"{mean_se([r['knn_random_init'] for r in rs])} | "
            f"{statistics.mean(r['train_seconds'] for r in rs) / 60:.1f} |"
        )
    append_section(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
