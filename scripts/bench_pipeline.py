#!/usr/bin/env python3
"""The PyTorch and ONNX Runtime side of `birads bench compare` (which runs this script,
times each pipeline in its own process and prints one table beside birads' figures).

    python3 scripts/bench_pipeline.py setup --out DIR            # MyConv.pth, MyDense.pth, *.onnx
    python3 scripts/bench_pipeline.py runpy --input testB --weights DIR --output OUT
    python3 scripts/bench_pipeline.py ort --input testB --weights DIR --output OUT --batch-size 8
    python3 scripts/bench_pipeline.py train --model convnext --batch 8 --size 224 --runs 5 [--device cuda --amp]
    python3 scripts/bench_pipeline.py infer --model convnext --batch 32 --size 224 --runs 5 [--device cuda --amp]

`runpy` is the original competition entry point as written: PIL RGB → CenterCrop(672) →
Resize((224, 224)) → ToTensor → Normalize, batch 1, argmax, `cla_pre.csv` / `fea_pre.csv`.
`ort` runs the same two models exported to ONNX with the same preprocessing, batched as
birads batches. `train` times optimiser steps (forward, loss, backward, AdamW) of the
original models in train mode on a fixed random batch and prints one JSON line; `infer` does
the same for forward passes in eval mode (softmax read back to the host, as a prediction does).
Needs torch, torchvision, pillow; onnx and onnxruntime for `setup`'s export and `ort`.
"""
import argparse
import csv
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def models():
    from make_model_fixtures import my_convnext, my_densenet  # noqa: E402
    return my_convnext, my_densenet


def transform():
    from torchvision import transforms as T
    return T.Compose([T.CenterCrop(672), T.Resize((224, 224)), T.ToTensor(), T.Normalize(MEAN, STD)])


def images(folder):
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(EXTS))


def setup(a):
    import torch
    my_convnext, my_densenet = models()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    for name, model in [("MyConv", my_convnext()), ("MyDense", my_densenet())]:
        model.eval()
        torch.save(model.state_dict(), os.path.join(a.out, name + ".pth"))
        torch.onnx.export(model, torch.randn(1, 3, 224, 224), os.path.join(a.out, name + ".onnx"), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    print(json.dumps({"torch": torch.__version__}))


def write_csvs(out, cla_rows, fea_rows):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cla_pre.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_name", "label"])
        w.writerows(cla_rows)
    with open(os.path.join(out, "fea_pre.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_name", "boundary", "calcification", "direction", "shape"])
        w.writerows(fea_rows)


def runpy(a):
    """The original run.py: both models, one image at a time."""
    import torch
    from PIL import Image
    my_convnext, my_densenet = models()
    tf = transform()
    conv, dense = my_convnext(), my_densenet()
    conv.load_state_dict(torch.load(os.path.join(a.weights, "MyConv.pth")))
    dense.load_state_dict(torch.load(os.path.join(a.weights, "MyDense.pth")))
    conv.eval()
    dense.eval()
    cla_rows, fea_rows = [], []
    cla_dir, fea_dir = os.path.join(a.input, "cla"), os.path.join(a.input, "fea")
    with torch.no_grad():
        for n in images(cla_dir):
            x = tf(Image.open(os.path.join(cla_dir, n)).convert("RGB")).unsqueeze(0)
            cla_rows.append([n, int(conv(x).argmax(1).item())])
        for n in images(fea_dir):
            x = tf(Image.open(os.path.join(fea_dir, n)).convert("RGB")).unsqueeze(0)
            fea_rows.append([n] + [int(v) for v in dense(x).argmax(2)[0].tolist()])
    write_csvs(a.output, cla_rows, fea_rows)


def ort(a):
    """The same models in ONNX Runtime, the same preprocessing, batches of `--batch-size`."""
    import numpy as np
    import onnxruntime as rt
    from PIL import Image
    tf = transform()
    so = rt.SessionOptions()
    so.inter_op_num_threads = 1
    conv = rt.InferenceSession(os.path.join(a.weights, "MyConv.onnx"), so, providers=["CPUExecutionProvider"])
    dense = rt.InferenceSession(os.path.join(a.weights, "MyDense.onnx"), so, providers=["CPUExecutionProvider"])
    cla_rows, fea_rows = [], []
    for part, sess, rows in [("cla", conv, cla_rows), ("fea", dense, fea_rows)]:
        folder = os.path.join(a.input, part)
        names = images(folder)
        for i in range(0, len(names), a.batch_size):
            chunk = names[i:i + a.batch_size]
            x = np.stack([tf(Image.open(os.path.join(folder, n)).convert("RGB")).numpy() for n in chunk])
            y = sess.run(None, {"x": x})[0]
            for n, v in zip(chunk, y):
                rows.append([n, int(v.argmax())] if part == "cla" else [n] + [int(t) for t in v.argmax(1)])
    write_csvs(a.output, cla_rows, fea_rows)


def torch_device(a):
    """torch, the device of `a.device` and the original model classes, threads and seed set."""
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    return (torch, torch.device(a.device)) + models()


def train(a):
    """Images/s of optimiser steps in train mode (dropout, stochastic depth, batch statistics)."""
    torch, dev, my_convnext, my_densenet = torch_device(a)
    from torch import nn
    model = (my_convnext(dropout=0.05) if a.model == "convnext" else my_densenet()).to(dev)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
    y = torch.randint(0, 6 if a.model == "convnext" else 2, (a.batch,) if a.model == "convnext" else (a.batch, 4),
                      device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.amp):
            out = model(x)
            loss = ce(out, y) if a.model == "convnext" else sum(ce(out[:, t], y[:, t]) for t in range(4))
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rates = timed(step, sync, a.batch, a.runs, a.warmup, a.min_seconds)
    print(json.dumps({"model": a.model, "batch": a.batch, "size": a.size, "device": a.device, "amp": a.amp,
                      "threads": torch.get_num_threads(), "img_s": statistics.median(rates), "runs": rates}))


def timed(step, sync, batch, runs, warmup, min_seconds):
    """Images/s of `step` over `runs` runs of at least `min_seconds`, after `warmup` steps."""
    for _ in range(warmup):
        step()
    sync()
    rates = []
    for _ in range(runs):
        n, t = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t < min_seconds:
            step()
            n += 1
            sync()
        rates.append(n * batch / (time.perf_counter() - t))
    return rates


def infer(a):
    """Images/s of eval-mode forward passes, probabilities copied back to the host."""
    torch, dev, my_convnext, my_densenet = torch_device(a)
    model = (my_convnext() if a.model == "convnext" else my_densenet()).to(dev).eval()
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)

    def step():
        with torch.inference_mode(), torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.amp):
            torch.softmax(model(x).float(), -1).cpu()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rates = timed(step, sync, a.batch, a.runs, a.warmup, a.min_seconds)
    print(json.dumps({"model": a.model, "batch": a.batch, "size": a.size, "device": a.device, "amp": a.amp,
                      "threads": torch.get_num_threads(), "img_s": statistics.median(rates), "runs": rates}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--out", required=True)
    for name in ["runpy", "ort"]:
        p = sub.add_parser(name)
        p.add_argument("--input", required=True)
        p.add_argument("--weights", required=True)
        p.add_argument("--output", required=True)
        p.add_argument("--batch-size", type=int, default=8)
    for name in ["train", "infer"]:
        t = sub.add_parser(name)
        t.add_argument("--model", choices=["convnext", "densenet"], required=True)
        t.add_argument("--batch", type=int, default=8)
        t.add_argument("--size", type=int, default=224)
        t.add_argument("--runs", type=int, default=5)
        t.add_argument("--warmup", type=int, default=1)
        t.add_argument("--min-seconds", type=float, default=1.0)
        t.add_argument("--threads", type=int, default=0)
        t.add_argument("--device", default="cpu")
        t.add_argument("--amp", action="store_true", help="bf16 autocast")
    a = ap.parse_args()
    {"setup": setup, "runpy": runpy, "ort": ort, "train": train, "infer": infer}[a.cmd](a)


if __name__ == "__main__":
    main()
