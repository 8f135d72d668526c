"""kNN accuracy of fp32 against bf16-autocast pretraining at equal steps (issue 7: bf16 by default must
not cost accuracy; target within 1 point).

Pretrains SimCLR ResNet-18 on CIFAR-10 once per precision and seed with the same settings and reports the
online kNN top-1 at the end, with the spread between seeds for scale.

    SELFSUP_DATA=../shared/data python benchmarks/precision_knn.py [epochs=20] [seeds=0,1] [key=value ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from selfsup.config import load_config
from selfsup.train.loop import pretrain

OWN_KEYS = ("epochs", "seeds", "out")


def main(argv: list[str]) -> None:
    keys = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in OWN_KEYS)
    overrides = [a for a in argv if a.split("=", 1)[0] not in OWN_KEYS]
    epochs, seeds = int(keys.get("epochs", 20)), [int(s) for s in keys.get("seeds", "0,1").split(",")]
    out = Path(keys.get("out", "output/precision_knn"))
    results = []
    for seed in seeds:
        for precision in ("32", "bf16"):
            cfg = load_config(
                [
                    "data=cifar10",
                    f"trainer.epochs={epochs}",
                    f"eval.every={epochs}",
                    f"seed={seed}",
                    f"trainer.precision={precision}",
                    "trainer.progress=false",
                    f"output_dir={out}/p{precision}-s{seed}",
                    *overrides,
                ]
            )
            run = pretrain(cfg)
            records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            knn = [r["monitor/knn_top1"] for r in records if "monitor/knn_top1" in r][-1]
            results.append({"seed": seed, "precision": precision, "knn_top1": knn, "steps": records[-1]["step"]})
            print(json.dumps(results[-1]), flush=True)
    print("\n| seed | fp32 kNN top-1 | bf16 kNN top-1 | bf16 - fp32 |\n| --- | --- | --- | --- |")
    for seed in seeds:
        fp32, bf16 = (
            next(r["knn_top1"] for r in results if r["seed"] == seed and r["precision"] == p) for p in ("32", "bf16")
        )
        print(f"| {seed} | {fp32:.2f} | {bf16:.2f} | {bf16 - fp32:+.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
