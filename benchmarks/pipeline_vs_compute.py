"""Full pretraining step against the compute limit and the data path, per batch size (issue 7's targets).

Runs `selfsup bench` (compute variants, loader, full step) for SimCLR ResNet-18 on CIFAR-10 at each batch
and appends one table to benchmarks/RESULTS.md. With records=a.json,b.json it formats records that
`selfsup bench ... out=a.json` already wrote instead of measuring again.

    SELFSUP_DATA=../shared/data python benchmarks/pipeline_vs_compute.py [batches=128,256] [steps=3] [warmup=1]
    python benchmarks/pipeline_vs_compute.py records=output/bench/simclr-resnet18-b128-cpu.json,...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from results import append_section

from selfsup.config import load_config
from selfsup.tools.bench import STAGES, bench


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    if "records" in args:
        records = [json.loads(Path(p).read_text()) for p in args["records"].split(",")]
        command = "selfsup bench data=cifar10 trainer.batch_size=B steps=S warmup=W (per batch B)"
    else:
        steps, warmup = int(args.get("steps", 3)), int(args.get("warmup", 1))
        batches = [int(b) for b in args.get("batches", "128,256").split(",")]
        records = [
            bench(load_config(["data=cifar10", f"trainer.batch_size={b}"]), list(STAGES), steps=steps, warmup=warmup)
            for b in batches
        ]
        command = "python benchmarks/pipeline_vs_compute.py " + " ".join(argv)
    first = records[0]
    variants = list(first["stages"]["compute"])
    lines = [
        "",
        f"## Full step vs compute limit vs data path — SimCLR ResNet-18, CIFAR-10 ({first['date']})",
        "",
        f"- machine: {first['device']}, torch {first['torch']}; command: `SELFSUP_DATA=../shared/data {command}`",
        f"- images/s over {first['steps']} timed steps after {first['warmup']}; each figure from its own fresh "
        "process, one after the other; peak memory is the process's resident set on CPU",
        "",
        "| batch | "
        + " | ".join(f"compute {v}" for v in variants)
        + " | loader | full step | full / compute limit | loader / full | peak memory, full step |",
        "| --- | " + " | ".join("---" for _ in variants) + " | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        stages = r["stages"]
        compute = " | ".join(f"{stages['compute'][v]['images_per_s']:.2f}" for v in variants)
        lines.append(
            f"| {r['batch_size']} | {compute} | {stages['loader']['images_per_s']:.0f} | "
            f"{stages['full']['images_per_s']:.2f} | {r['ratios']['full/compute']:.2f} "
            f"({r['compute_limit']['variant']}) | {r['ratios']['loader/full']:.0f} | "
            f"{stages['full']['peak_memory_bytes'] / 2**30:.2f} GiB |"
        )
    append_section([*lines, ""])


if __name__ == "__main__":
    main(sys.argv[1:])
