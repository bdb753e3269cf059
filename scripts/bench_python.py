#!/usr/bin/env python3
"""The birads Python package beside what it replaces, in one run: `birads.preprocess` against
the original PIL + torchvision chain (CenterCrop 672 → Resize 224 → ToTensor → Normalize), on
one thread and on a thread pool, and `Model.predict` against PyTorch eager on the CPU with the
same full-size weights (MyConvNeXt and MyDenseNet at 224 px, batch 1 and 8). Medians of
`--repeats` timed runs after one warm-up; images/s.

    /tmp/ref/bin/python scripts/bench_python.py [--images ../shared/data/bus-bra/images] [--count 64]

Needs torch, torchvision and pillow beside the birads package (pip install ./python). The
weights come from `scripts/bench_pipeline.py setup` (original-architecture .pth files),
written into a temporary folder.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import birads

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pipeline import models, transform  # noqa: E402


def median_rate(n, fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    here = Path(__file__).resolve().parent
    ap.add_argument("--images", default=str(here.parent.parent / "shared" / "data" / "bus-bra" / "images"))
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    paths = sorted(Path(a.images).iterdir())[: a.count]
    n = len(paths)
    torch.set_num_threads(a.threads)
    tv = transform()

    def pil_one(p):
        return tv(Image.open(p).convert("RGB"))

    rows = []
    for threads in (1, a.threads):
        with ThreadPoolExecutor(threads) as pool:
            birads_rate = median_rate(n, lambda: list(pool.map(birads.preprocess, paths)), a.repeats)
            pil_rate = median_rate(n, lambda: list(pool.map(pil_one, paths)), a.repeats)
        rows.append((f"preprocess, {threads} thread{'s' if threads > 1 else ''}", birads_rate, pil_rate))
    # Same pixels either way (the package is bit-identical to Pillow + torchvision).
    same = max(float(np.abs(birads.preprocess(p) - pil_one(p).numpy()).max()) for p in paths[:8])

    my_convnext, my_densenet = models()
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, str(here / "bench_pipeline.py"), "setup", "--out", d],
                       check=True, capture_output=True)
        for name, task, ctor, pth in (("MyConvNeXt", "cls", my_convnext, "MyConv.pth"),
                                      ("MyDenseNet", "fea", my_densenet, "MyDense.pth")):
            model = birads.Model.load(Path(d) / pth, task=task)
            net = ctor()
            state = torch.load(Path(d) / pth, map_location="cpu")
            net.load_state_dict(state)
            net.eval()
            for bs in (1, 8):
                x = np.stack([birads.preprocess(p) for p in paths[:bs * max(1, 16 // bs)]])
                m = len(x)
                b_rate = median_rate(m, lambda: model.predict(x, batch_size=bs, threads=a.threads), a.repeats)
                xt = torch.from_numpy(x)

                def eager():
                    with torch.no_grad():
                        for i in range(0, m, bs):
                            net(xt[i:i + bs])

                t_rate = median_rate(m, eager, a.repeats)
                rows.append((f"{name} predict, batch {bs}", b_rate, t_rate))
    print(f"{n} BUS-BRA images, {a.threads} threads, medians of {a.repeats}; "
          f"max |birads - torchvision| preprocessing difference {same:.1e}\n")
    print("| measure | birads (Python package) | PIL + torchvision / PyTorch eager | ratio |")
    print("|---|---|---|---|")
    for what, b, t in rows:
        print(f"| {what} | {b:.1f} img/s | {t:.1f} img/s | **{b / t:.2f}×** |")


if __name__ == "__main__":
    main()
