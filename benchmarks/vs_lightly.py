"""selfsup's SimCLR pretraining against lightly's SimCLR reference loop, side by side in one run.

Lightly's side is its documented example (lightly examples/pytorch/simclr.py): per-image PIL augmentations
(SimCLRTransform) in DataLoader workers, one forward per view, NTXentLoss, SGD, in its default precision
(fp32); on CPUs with native bf16, where selfsup's default is bf16 autocast with channels_last, also given the
same precision (bf16 autocast, lightly's memory format) and given both (bf16 and channels_last). Both sides
get the same backbone (torchvision ResNet-18 with the CIFAR stem, from selfsup's registry), projector (2048
hidden, 128 out), batch, augmentation settings (crop scale 0.08-1, flip 0.5, colour jitter strength 0.5 with p
0.8, grayscale 0.2, no blur) and CIFAR-10 images from SELFSUP_DATA. Each side runs in its own fresh process,
one after the other, for `steps` timed steps after `warmup`. Then NT-Xent of both libraries on the same
embeddings, in fp32.

    pip install --no-deps --target benchmarks/.lightly lightly==1.6.0
    SELFSUP_DATA=../shared/data python benchmarks/vs_lightly.py [batches=128,256] [steps=3] [warmup=1] \\
        [lightly_workers=8,0] [lightly_modes=fp32,bf16,bf16+channels_last] [repeats=1]

repeats=N runs every measurement N times, in rounds (selfsup, then each lightly run, then again), and reports
medians: of each rate, and of each ratio taken within a round, which holds when the machine's speed drifts
between processes.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / ".lightly"))  # where the docstring's pip command puts lightly

import torch  # noqa: E402
from results import append_section  # noqa: E402

from selfsup.config import load_config  # noqa: E402
from selfsup.data.loader import pretrain_dataset  # noqa: E402
from selfsup.losses import nt_xent  # noqa: E402
from selfsup.precision import resolve_precision  # noqa: E402
from selfsup.tools.bench import run_isolated  # noqa: E402
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


MODES = ("fp32", "bf16", "bf16+channels_last")  # how lightly's loop runs: its default first


def lightly_loop(batch: int, workers: int, mode: str, steps: int, warmup: int, result) -> None:
    """Lightly's SimCLR example on selfsup's backbone and data, in one of MODES; puts images/s in `result`."""
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
    bf16 = mode.startswith("bf16")
    memory_format = torch.channels_last if mode.endswith("channels_last") else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    criterion = NTXentLoss(temperature=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    batches = iter(loader)
    start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        (x0, x1), _ = next(batches)
        x0, x1 = x0.to(memory_format=memory_format), x1.to(memory_format=memory_format)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(x0), model(x1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    result.value = steps * batch / (time.perf_counter() - start)


def lightly_rate(batch: int, workers: int, mode: str, steps: int, warmup: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    result = ctx.Value("d", 0.0)
    process = ctx.Process(target=lightly_loop, args=(batch, workers, mode, steps, warmup, result))
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
    steps, warmup, repeats = int(args.get("steps", 3)), int(args.get("warmup", 1)), int(args.get("repeats", 1))
    import lightly

    ours_bf16 = resolve_precision("auto", "cpu") == "bf16-mixed"  # selfsup's default on this CPU
    modes = args.get("lightly_modes", ",".join(MODES if ours_bf16 else MODES[:1])).split(",")
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"lightly_modes: unknown {sorted(unknown)}; choose from {','.join(MODES)}")
    same_mode = "bf16" if ours_bf16 else "fp32"
    if modes[0] != "fp32" or same_mode not in modes:
        raise SystemExit(f"lightly_modes must start with fp32 (lightly's default) and hold {same_mode} (selfsup's)")
    lightly_runs = [(w, mode) for mode in modes for w in workers]
    rows = []
    for batch in batches:
        rounds = []  # per round: selfsup's rate, lightly's rate per run
        for _ in range(repeats):
            ours = run_isolated(selfsup_config(batch), "full", steps=steps, warmup=warmup)["images_per_s"]
            theirs = {run: lightly_rate(batch, *run, steps, warmup) for run in lightly_runs}
            rounds.append((ours, theirs))
            print(f"batch {batch}: selfsup {ours:.2f} images/s; lightly (workers, mode) {theirs}", flush=True)
        ratios = [
            statistics.median(ours / pick(theirs) for ours, theirs in rounds)
            for pick in (
                lambda theirs: theirs[lightly_runs[0]],
                lambda theirs: max(rate for (_, mode), rate in theirs.items() if mode == same_mode),
                lambda theirs: max(theirs.values()),
            )
        ]
        ours = statistics.median(ours for ours, _ in rounds)
        theirs = {run: statistics.median(t[run] for _, t in rounds) for run in lightly_runs}
        rows.append((batch, ours, theirs, ratios))
    diff = loss_agreement()
    command = "python benchmarks/vs_lightly.py " + " ".join(argv)
    precision = "bf16 autocast + channels_last" if ours_bf16 else "fp32"
    lines = [
        "",
        f"## selfsup vs lightly {lightly.__version__}: SimCLR ResNet-18 on CIFAR-10, CPU ({dt.date.today()})",
        "",
        f"- machine: {device_name(torch.device('cpu'))}, torch {torch.__version__}; native bf16: "
        f"{'yes' if ours_bf16 else 'no'}, so selfsup's default precision here is {precision}; lightly's "
        "default is fp32",
        f"- command: `SELFSUP_DATA=../shared/data {command.strip()}`; {steps} timed steps after {warmup}, each run "
        "in a fresh process, one after the other"
        + (f"; {repeats} rounds: medians of the rates and of the ratios within a round" if repeats > 1 else ""),
        "- selfsup: `selfsup pretrain` defaults (crops, flips and colour ops batched on the device, both views "
        "in one forward); lightly: its SimCLR example (PIL SimCLRTransform per image in workers, one forward "
        "per view)",
        "",
        "| batch | selfsup images/s | "
        + " | ".join(f"lightly, {w} workers, {mode}" for w, mode in lightly_runs)
        + " | selfsup / lightly default | selfsup / lightly best at the same precision | selfsup / lightly best |",
        "| --- | --- | " + " | ".join("---" for _ in lightly_runs) + " | --- | --- | --- |",
    ]
    for batch, ours, theirs, ratios in rows:
        cells = " | ".join(f"{theirs[run]:.2f}" for run in lightly_runs)
        lines.append(f"| {batch} | {ours:.2f} | {cells} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    lines += [
        "",
        f"- NT-Xent, lightly `NTXentLoss` vs `selfsup.losses.nt_xent`, fp32, batches 8/128/256, temperatures "
        f"0.5/0.1: largest absolute difference {diff:.2e}",
        "",
    ]
    append_section(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
