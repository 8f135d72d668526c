"""Every method at one budget on the same CIFAR-10 subset: kNN top-1/top-5, time, peak memory.

Each method is pretrained by the `selfsup` CLI in its own process (so its peak resident memory is
its own), then evaluated with kNN (k=200, T=0.1) on the test split; the random-init checkpoint
(epoch-0000) of the first run is the baseline. Finished runs and evaluations are reused, so the
script can be rerun with more methods. Appends a table with command, date and machine to
benchmarks/RESULTS.md.

    python benchmarks/method_zoo.py methods=simclr,moco,byol [runs=output] -- trainer.epochs=1 trainer.batch_size=64

Runs go to `<runs>/bench-zoo-<method>`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from results import append_section

ALL_METHODS = (
    "simclr",
    "moco",
    "byol",
    "simsiam",
    "directpred",
    "directcopy",
    "swav",
    "vicreg",
    "barlow",
    "dino",
    "beta_vae",
)
BUDGET = [
    "data=cifar10",
    "backbone=resnet18",
    "trainer.epochs=1",
    "trainer.batch_size=64",
    "eval.every=0",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.log_every=10",
]


def selfsup(*args: str) -> None:
    """Run the CLI in a fresh process; its output goes to ours."""
    subprocess.run([sys.executable, "-m", "selfsup.cli", *args], check=True)


def knn_result(run: Path, checkpoint: str) -> dict:
    path = run / "eval" / checkpoint / "knn.json"
    if not path.is_file():
        selfsup("eval", "knn", f"run={run}", f"checkpoint={checkpoint}")
    return json.loads(path.read_text())


def main(argv: list[str]) -> None:
    methods = list(ALL_METHODS)
    overrides: list[str] = []
    runs = Path("output")
    for arg in argv:
        if arg.startswith("methods="):
            methods = arg.split("=", 1)[1].split(",")
        elif arg.startswith("runs="):
            runs = Path(arg.split("=", 1)[1])
        elif arg != "--":
            overrides.append(arg)
    rows = []
    random_init = None
    for method in methods:
        run = runs / f"bench-zoo-{method}"
        selfsup("pretrain", f"method={method}", *BUDGET, *overrides, f"output_dir={run}")
        result = knn_result(run, "last")
        random_init = random_init or knn_result(run, "epoch-0000")
        cost = result["cost"]
        rows.append(
            f"| {method} | {result['metrics']['top1']:.2f} | {result['metrics']['top5']:.2f} | "
            f"{cost['flops_per_image'] * cost['images_seen'] / 1e12:.1f} | {cost['device_seconds'] / 60:.1f} | "
            f"{cost['images_seen'] / cost['device_seconds']:.1f} | "
            f"{cost['peak_memory_bytes'] / 2**30:.2f} |"
        )
    cfg = result["config"]
    lines = [
        f"\n## Method zoo at one budget — {cfg['data']['name']}, {cfg['backbone']['name']} "
        f"({dt.date.today().isoformat()})\n",
        f"- command: `python benchmarks/method_zoo.py {shlex.join(argv)}` (fixed: `{' '.join(BUDGET)}`)",
        f"- machine: {cost['device_name']}, {platform.platform()}, torch {torch.__version__}, "
        f"SELFSUP_DATA={os.environ.get('SELFSUP_DATA', './data')}",
        f"- budget per method: {result['checkpoint']['step']} steps, {cost['images_seen']} source images, each "
        f"method's own paper-default views, heads, optimizer and lr (scaled to the batch); kNN (k=200, T=0.1) on "
        f"{result['dataset']['test_size']} test images with a bank of {result['dataset']['train_size']}",
        "",
        "| method | kNN top-1 | top-5 | TFLOP | device-minutes | images/s | peak RSS GiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| random init | {random_init['metrics']['top1']:.2f} | {random_init['metrics']['top5']:.2f} | "
        "- | - | - | - |",
        *rows,
        "",
    ]
    append_section(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
