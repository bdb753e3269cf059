#!/usr/bin/env python3
"""The same training recipe in PyTorch, on the same split, for a side-by-side comparison with
`birads train` (accuracy/F1 per epoch and images per second).

    birads train cls --data DATA --out RUN --config quick.toml --model small
    /tmp/ref/bin/python scripts/train_reference.py RUN [--threads 2] [--out RUN/pytorch.json]

It reads RUN/config.toml (the effective configuration) and RUN/split.json (the images and
labels birads trained and validated on) and runs: PIL decode → (CenterCrop) → Resize
(bilinear) → ToTensor → Normalize, random horizontal/vertical flips with the configured
probabilities (the other augmentations must be switched off in the config: this script
refuses to run otherwise, so the two sides stay comparable), label-smoothed cross-entropy
(BI-RADS) or task-weighted cross-entropy + soft F1 (features), AdamW/Adam with PyTorch's
defaults and CosineAnnealingWarmRestarts stepped per epoch, the class-weighted sampler when
configured. Models come from scripts/make_model_fixtures.py (the same definitions the parity
tests use).
"""
import argparse
import json
import os
import sys
import time
import tomllib

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from make_model_fixtures import my_convnext, my_densenet  # noqa: E402
from make_train_fixtures import feature_loss  # noqa: E402


def load(path, pre):
    img = Image.open(path).convert("RGB")
    if pre.get("crop"):
        img = TF.center_crop(img, [pre["crop"], pre["crop"]])
    img = img.resize((pre["size"], pre["size"]), Image.BILINEAR)
    t = TF.to_tensor(img)
    return TF.normalize(t, pre["mean"], pre["std"])


def batches(images, labels, order, bs, pre, aug, rng):
    for i in range(0, len(order), bs):
        idx = order[i:i + bs]
        xs = []
        for j in idx:
            x = load(images[j], pre)
            if aug and rng.random() < aug.get("hflip", 0):
                x = x.flip(2)
            if aug and rng.random() < aug.get("vflip", 0):
                x = x.flip(1)
            xs.append(x)
        yield torch.stack(xs), torch.tensor([labels[j] for j in idx])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(os.path.join(a.run, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    with open(os.path.join(a.run, "split.json")) as f:
        split = json.load(f)
    aug = cfg["augment"]
    for k in ("affine", "blur", "erasing"):
        if aug.get(k) not in (False, None):
            sys.exit(f"switch off augment.{k} in the birads config for a like-for-like comparison")
    if aug.get("cutmix", {}).get("kind", "off") != "off":
        sys.exit("switch off CutMix in the birads config for a like-for-like comparison")
    pre = cfg["preprocess"]
    if pre.get("cut_black"):
        sys.exit("switch off cut_black for the comparison")
    task = cfg["task"]
    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    m = cfg["model"]
    if task == "cls":
        c = m["convnext"]
        model = my_convnext(tuple(c["dims"]), tuple(c["depths"]), c["num_classes"], c["dropout"], c["sd_rate"])
        for mod in model.modules():
            if hasattr(mod, "layer_scale"):
                torch.nn.init.constant_(mod.layer_scale, c["layer_scale_init"])
    else:
        d = m["densenet"]
        model = my_densenet(d["growth"], tuple(d["blocks"]), d["init_features"], d["bn_size"], d["tasks"], d["dp1"], d["dp2"])
    if cfg["optimizer"] == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"], eps=1e-8)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"], eps=1e-8)
    s = cfg["schedule"]
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=s["t0"], T_mult=s["t_mult"], eta_min=s["eta_min"])
    tr_img, tr_lab = split["train_images"], split["train_labels"]
    va_img, va_lab = split["val_images"], split["val_labels"]
    cw = cfg.get("class_weights") or []
    history = []
    for epoch in range(cfg["epochs"]):
        model.train()
        if task == "cls" and cw:
            w = np.array([cw[y] for y in tr_lab], dtype=float)
            order = rng.choice(len(tr_img), size=len(tr_img), replace=True, p=w / w.sum())
        else:
            order = rng.permutation(len(tr_img))
        t0 = time.perf_counter()
        seen, loss_sum, hits, decisions = 0, 0.0, 0, 0
        compute = 0.0
        for x, y in batches(tr_img, tr_lab, list(order), cfg["batch_size"], pre, aug, rng):
            tc = time.perf_counter()
            z = model(x)
            if task == "cls":
                loss = F.cross_entropy(z, y, label_smoothing=cfg["label_smoothing"])
                hits += (z.argmax(1) == y).sum().item()
                decisions += len(y)
            else:
                z = z.reshape(len(y), 8)
                loss = feature_loss(z, y, cfg["label_smoothing"], cfg["f1_loss_weight"])
                pred = (z.reshape(-1, 4, 2).argmax(2))
                hits += (pred == y).sum().item()
                decisions += y.numel()
            opt.zero_grad()
            loss.backward()
            opt.step()
            compute += time.perf_counter() - tc
            loss_sum += loss.item() * len(y)
            seen += len(y)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        seconds = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            correct, n, per_task = 0, 0, np.zeros(4)
            tp = np.zeros(4); fp = np.zeros(4); fn = np.zeros(4)
            for x, y in batches(va_img, va_lab, list(range(len(va_img))), cfg["batch_size"], pre, None, rng):
                z = model(x)
                if task == "cls":
                    correct += (z.argmax(1) == y).sum().item()
                else:
                    p = z.reshape(-1, 4, 2).argmax(2)
                    per_task += (p == y).sum(0).numpy()
                    tp += ((p == 1) & (y == 1)).sum(0).numpy()
                    fp += ((p == 1) & (y == 0)).sum(0).numpy()
                    fn += ((p == 0) & (y == 1)).sum(0).numpy()
                n += len(y)
        rec = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_accuracy": hits / decisions,
               "seconds": seconds, "images_per_second": seen / seconds, "compute_images_per_second": seen / compute}
        if task == "cls":
            rec["val_accuracy"] = correct / max(n, 1)
        else:
            f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0)
            rec["val_accuracy"] = float((per_task / max(n, 1)).mean())
            rec["val_f1"] = float(f1.mean())
        history.append(rec)
        print(json.dumps(rec), flush=True)
    out = a.out or os.path.join(a.run, "pytorch.json")
    with open(out, "w") as f:
        json.dump(history, f, indent=1)


if __name__ == "__main__":
    main()
