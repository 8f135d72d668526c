"""selfsup's SimCLR pretraining against lightly's SimCLR reference loop, side by side in one run.

Lightly's side is its documented example (lightly examples/pytorch/simclr.py): per-image PIL augmentations
(SimCLRTransform) in DataLoader workers, one forward per view, NTXentLoss, SGD, in its default precision
(fp32). Both sides get the same backbone (torchvision ResNet-18 with the CIFAR stem, from selfsup's
registry), projector (2048 hidden, 128 out), batch, augmentation settings (crop scale 0.08-1, flip 0.5,
colour jitter strength 0.5 with p 0.8, grayscale 0.2, no blur) and CIFAR-10 images from SELFSUP_DATA.
Each side runs in its own fresh process, one after the other, for `steps` timed steps after `warmup`.
Then NT-Xent of both libraries on the same embeddings, in fp32.

    pip install --no-deps --target benchmarks/.lightly lightly==1.6.0
    SELFSUP_DATA=../shared/data python benchmarks/vs_lightly.py [batches=128,256] [steps=3] [warmup=1] \\
        [lightly_workers=8,0]
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / ".lightly"))  # where the docstring's pip command puts lightly

import torch  # noqa: E402
from results import append_section  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.data.loader import pretrain_dataset  # noqa: E402
from selfsup.losses import nt_xent  # noqa: E402
from selfsup.train.bench import run_isolated  # noqa: E402
from selfsup.train.cost import device_name  # noqa: E402


def selfsup_config(batch: int):
    return load_config(["method=simclr", "data=cifar10", "optim=sgd", f"trainer.batch_size={batch}", "device=cpu"])


class PILImages(torch.utils.data.Dataset):
    """uint8 [N, 3, H, W] images as PIL images through a transform (what torchvision's CIFAR10 returns)."""

    def __init__(self, array, transform) -> None:
        self.array, self.transform = array, transform

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.array[i].transpose(1, 2, 0))), 0


class LightlySimCLR(torch.nn.Module):
    """Lightly's example model: backbone + SimCLRProjectionHead, on selfsup's CIFAR-stem ResNet-18."""

    def __init__(self) -> None:
        from lightly.models.modules import SimCLRProjectionHead

        from selfsup.nets.backbones import build_backbone

        super().__init__()
        self.backbone, dim = build_backbone("resnet18", cifar_stem=True)
        self.projection_head = SimCLRProjectionHead(dim, 2048, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


def lightly_loop(batch: int, workers: int, steps: int, warmup: int, result) -> None:
    """Lightly's SimCLR example on selfsup's backbone and data; puts images/s in `result`."""
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform
    from torch.utils.data import DataLoader

    cfg = selfsup_config(batch)
    images = pretrain_dataset(cfg.data, cfg.seed).images  # uint8 [N, 3, 32, 32]
    transform = SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0, min_scale=0.08)
    loader = DataLoader(
        PILImages(images, transform), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers
    )
    model = LightlySimCLR()
    criterion = NTXentLoss(temperature=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    batches = iter(loader)
    start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        (x0, x1), _ = next(batches)
        loss = criterion(model(x0), model(x1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    result.value = steps * batch / (time.perf_counter() - start)


def lightly_rate(batch: int, workers: int, steps: int, warmup: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    result = ctx.Value("d", 0.0)
    process = ctx.Process(target=lightly_loop, args=(batch, workers, steps, warmup, result))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"lightly's loop failed (exit {process.exitcode})")
    return result.value


def loss_agreement() -> float:
    """Largest |lightly NTXentLoss - selfsup nt_xent| over batch sizes and temperatures, fp32."""
    from lightly.loss import NTXentLoss

    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for n in (8, 128, 256):
        for temperature in (0.5, 0.1):
            z0, z1 = torch.randn(n, 128, generator=g), torch.randn(n, 128, generator=g)
            z1 = z1 + 2 * z0  # correlated views, as after training
            ours = nt_xent(z0, z1, temperature)
            theirs = NTXentLoss(temperature=temperature)(z0, z1)
            worst = max(worst, abs(float(ours) - float(theirs)))
    return worst


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    batches = [int(b) for b in args.get("batches", "128,256").split(",")]
    workers = [int(w) for w in args.get("lightly_workers", "8,0").split(",")]
    steps, warmup = int(args.get("steps", 3)), int(args.get("warmup", 1))
    import lightly

    rows = []
    for batch in batches:
        ours = run_isolated(selfsup_config(batch), "full", steps=steps, warmup=warmup)["images_per_s"]
        theirs = {w: lightly_rate(batch, w, steps, warmup) for w in workers}
        rows.append((batch, ours, theirs))
        print(f"batch {batch}: selfsup {ours:.2f} images/s; lightly {theirs}", flush=True)
    diff = loss_agreement()
    command = "python benchmarks/vs_lightly.py " + " ".join(argv)
    lines = [
        "",
        f"## selfsup vs lightly {lightly.__version__}: SimCLR ResNet-18 on CIFAR-10, CPU ({dt.date.today()})",
        "",
        f"- machine: {device_name(torch.device('cpu'))}, torch {torch.__version__}; fp32 on both sides (this CPU "
        "has no native bf16, so each side's default precision is fp32)",
        f"- command: `SELFSUP_DATA=../shared/data {command.strip()}`; {steps} timed steps after {warmup}, each side "
        "in a fresh process, one after the other",
        "- selfsup: `selfsup pretrain` defaults (crops, flips and colour ops batched on the device, both views "
        "in one forward); lightly: its SimCLR example (PIL SimCLRTransform per image in workers, one forward "
        "per view)",
        "",
        "| batch | selfsup images/s | "
        + " | ".join(f"lightly, {w} workers" for w in workers)
        + " | selfsup / lightly default | selfsup / lightly best |",
        "| --- | --- | " + " | ".join("---" for _ in workers) + " | --- | --- |",
    ]
    for batch, ours, theirs in rows:
        cells = " | ".join(f"{theirs[w]:.2f}" for w in workers)
        default, best = ours / theirs[workers[0]], ours / max(theirs.values())
        lines.append(f"| {batch} | {ours:.2f} | {cells} | {default:.2f}x | {best:.2f}x |")
    lines += [
        "",
        f"- NT-Xent, lightly `NTXentLoss` vs `selfsup.losses.nt_xent`, fp32, batches 8/128/256, temperatures "
        f"0.5/0.1: largest absolute difference {diff:.2e}",
        "",
    ]
    append_section(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
