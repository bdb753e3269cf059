#!/usr/bin/env python3
"""Forward throughput of the original MyConvNeXt / MyDenseNet in PyTorch eager and ONNX
Runtime, for `birads bench models` (which runs this beside burn and prints one table).

    python3 scripts/bench_models.py --batches 1,8 --repeats 5 --threads 2 --json
Needs torch, torchvision, onnx, onnxruntime. Prints images/s (median over repeats).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import my_convnext, my_densenet  # noqa: E402


def rate(fn, x, repeats, min_seconds=1.0):
    fn(x)  # warm-up
    times = []
    for _ in range(repeats):
        n, t = 0, time.perf_counter()
        while True:
            fn(x)
            n += 1
            if time.perf_counter() - t >= min_seconds:
                break
        times.append(n * x.shape[0] / (time.perf_counter() - t))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    out = {"threads": args.threads, "torch": torch.__version__, "results": []}
    for name, model in [("convnext", my_convnext()), ("densenet", my_densenet())]:
        model.eval()
        onnx_path = None
        if ort is not None:
            onnx_path = os.path.join(tempfile.mkdtemp(), name + ".onnx")
            torch.onnx.export(model, torch.randn(1, 3, args.size, args.size), onnx_path, dynamo=False,
                              input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        for b in [int(v) for v in args.batches.split(",")]:
            x = torch.randn(b, 3, args.size, args.size)
            with torch.no_grad():
                eager = rate(lambda t: model(t), x, args.repeats)
            onnx = rate(lambda t: sess.run(None, {"x": t}), x.numpy(), args.repeats) if onnx_path else None
            out["results"].append({"model": name, "batch": b, "pytorch": eager, "onnxruntime": onnx})
    if args.json:
        print(json.dumps(out))
    else:
        for r in out["results"]:
            print(r)


if __name__ == "__main__":
    main()
