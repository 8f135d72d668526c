"""ATen ops (on a GPU, kernel launches) and CPU time per batch of BatchCropFlip at two commits, in one
process, interleaved: what drawing all crops of an image in one product saves over one call per view.

    git show 168b834:selfsup/data/batched_crops.py > /tmp/old_batched_crops.py
    OMP_NUM_THREADS=1 python benchmarks/crop_ops.py /tmp/old_batched_crops.py
"""

import collections
import importlib.util
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from selfsup.data import batched_crops as new

spec = importlib.util.spec_from_file_location("old_batched_crops", sys.argv[1])
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


print("| views, batch | ops before | ops after | ms before | ms after | speed-up |")
print("| --- | --- | --- | --- | --- | --- |")
for name, cfg, B, side in [
    ("simclr 2x32", {"num": 2, "crop_size": 32}, 128, 32),
    ("swav 2x32+6x16", {"num": 2, "crop_size": 32, "local_crops": 6, "local_crop_size": 16}, 128, 32),
]:
    imgs = torch.randint(0, 255, (B, 3, side, side), dtype=torch.uint8)
    fo, fn = old.BatchCropFlip(cfg), new.BatchCropFlip(cfg)
    counts = {}
    for tag, f in (("old", fo), ("new", fn)):
        with Count() as r:
            f(imgs)
        counts[tag] = r.n
    times = collections.defaultdict(list)
    for _ in range(5):
        for tag, f in (("old", fo), ("new", fn)):
            t = time.perf_counter()
            for _ in range(10):
                f(imgs)
            times[tag].append((time.perf_counter() - t) / 10)
    o, n = min(times["old"]), min(times["new"])
    print(f"| {name}, batch {B} | {counts['old']} | {counts['new']} | {o * 1e3:.1f} | {n * 1e3:.1f} | {o / n:.2f} |")
