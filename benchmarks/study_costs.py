"""Compute each full-scale study run needs: training FLOPs per image (counted by torch's FlopCounterMode on
the run's exact model and crops, as every checkpoint's cost record does), images seen, total PFLOP, and the
device-hours at a given sustained TFLOP/s. Appends a table to benchmarks/RESULTS.md.

    python benchmarks/study_costs.py [tflops=100]   # sustained training TFLOP/s of the device to plan for
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from results import append_section

from selfsup.config import load_config
from selfsup.methods.build import build_model
from selfsup.study import load_study, study_names
from selfsup.train.loop import measure_flops

# Training-split sizes of the datasets the studies use (the files are not needed to plan).
SPLIT_SIZES = {("cifar10", "train"): 50_000, ("stl10", "unlabeled"): 100_000, ("folder", "train"): 1_281_167}


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    tflops = float(args.get("tflops", 100))
    lines = [
        "",
        f"## Study costs at full scale: training FLOPs and device-hours at {tflops:g} TFLOP/s ({dt.date.today()})",
        "",
        f"- command: `python benchmarks/study_costs.py tflops={tflops:g}`; FLOPs of one training step (forward + "
        "backward of every crop) per source image, counted on the run's model; the image folder of "
        "`vicreg_detection` is assumed ImageNet-sized (1.28 M images); evaluations not included",
        "",
        "| study | run | backbone | crops | GFLOP/image | images seen | PFLOP | hours at the rate above |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in study_names():
        study = load_study(name)
        for run in study.runs:
            cfg = load_config(study.run_args(run, Path("output/plan"), ["data.root=/datasets"]))
            flops = measure_flops(build_model(cfg), cfg)
            size = SPLIT_SIZES[(cfg.data.name, cfg.data.train_split)]
            images = cfg.trainer.epochs * (size // cfg.trainer.batch_size) * cfg.trainer.batch_size
            crops = f"{cfg.views.num}x{cfg.views.crop_size}" + (
                f" + {cfg.views.local_crops}x{cfg.views.local_crop_size}" if cfg.views.local_crops else ""
            )
            total = flops * images
            lines.append(
                f"| {name} | {run} | {cfg.backbone.name} | {crops} | {flops / 1e9:.2f} | {images:,} | "
                f"{total / 1e15:,.0f} | {total / (tflops * 1e12) / 3600:,.1f} |"
            )
            print(lines[-1], flush=True)
    append_section([*lines, ""])


if __name__ == "__main__":
    main(sys.argv[1:])
