"""SimCLR pretraining at a fixed budget vs a randomly initialised backbone of the same architecture.

Runs `selfsup pretrain` on the given dataset, then kNN (k=200, T=0.1) on the test split for the
random-init checkpoint (epoch-0000, saved by every run) and for the final one, and appends the
numbers with the command, date and machine to benchmarks/RESULTS.md.

    python benchmarks/knn_vs_random.py data=cifar10 trainer.epochs=4 trainer.batch_size=128
"""

from __future__ import annotations

import datetime as dt
import platform
import shlex
import sys

import torch
from results import append_section

from selfsup.config import load_config
from selfsup.eval.offline import evaluate
from selfsup.precision import resolve_precision
from selfsup.train.loop import pretrain

DEFAULTS = ["method=simclr", "backbone=resnet18", "optim.warmup_epochs=0.5", "eval.every=0", "trainer.num_workers=0"]


def main(overrides: list[str]) -> None:
    cfg = load_config([*DEFAULTS, *overrides])
    if not any(o.startswith("output_dir=") for o in overrides):
        cfg.output_dir = f"output/bench-knn-{cfg.data.name}-{cfg.trainer.epochs}ep"
    run = pretrain(cfg)
    random_init = evaluate("knn", run, "epoch-0000")
    trained = evaluate("knn", run, "last")
    cost = trained["cost"]
    precision = resolve_precision(str(cfg.trainer.precision), "cuda" if torch.cuda.is_available() else "cpu")
    lines = [
        f"\n## kNN after SimCLR vs random init — {cfg.data.name}, {cfg.backbone.name} "
        f"({dt.date.today().isoformat()})\n",
        f"- command: `python benchmarks/knn_vs_random.py {shlex.join(overrides)}`",
        f"- machine: {cost['device_name']}, {platform.platform()}, torch {torch.__version__}, precision {precision}",
        f"- budget: {trained['checkpoint']['epoch']} epochs of {cfg.data.name} "
        f"({'subset ' + str(cfg.data.subset) if cfg.data.subset else 'all'} training images), batch "
        f"{cfg.trainer.batch_size}, {trained['checkpoint']['step']} steps, {cost['images_seen']} images seen, "
        f"{cost['device_seconds'] / 60:.1f} device-minutes, "
        f"{cost['flops_per_image'] * cost['images_seen'] / 1e15:.2f} PFLOP",
        f"- kNN (k={trained['params']['k']}, T={trained['params']['temperature']}) on "
        f"{trained['dataset']['test_size']} test images, bank of {trained['dataset']['train_size']} train images:",
        "",
        "| backbone | top-1 | top-5 |",
        "| --- | --- | --- |",
        f"| random init | {random_init['metrics']['top1']:.2f} | {random_init['metrics']['top5']:.2f} |",
        f"| SimCLR | {trained['metrics']['top1']:.2f} | {trained['metrics']['top5']:.2f} |",
        "",
    ]
    append_section(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
