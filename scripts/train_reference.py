#!/usr/bin/env python3
"""The same training recipe in PyTorch, on the same split, for a side-by-side comparison with
`birads train` / `birads cv` (metrics per epoch, images per second, test metrics).

    birads train cls --data DATA --out RUN --config quick.toml --model small
    /tmp/ref/bin/python scripts/train_reference.py RUN [--threads 2] [--seed S] [--out F.json]

    # one fold of a cross-validation, evaluated on its test images:
    /tmp/ref/bin/python scripts/train_reference.py CV/fold-1/run --test CV/fold-1/test_predictions.csv

It reads RUN/config.toml (the effective configuration) and RUN/split.json (the images, labels
and pathology birads trained and validated on) and runs: PIL decode → CutBlack (if on) →
CenterCrop (if any) → random horizontal/vertical flips, RandomAffine and GaussianBlur with the
configured parameters, birads' lesion zoom and brightness/contrast jitter when on (restated
here from crates/birads-data/src/augment_more.rs) → Resize (bilinear) → ToTensor → Normalize → RandomErasing, using
torchvision's transforms (the same distributions birads draws from, not the same draws);
label-smoothed cross-entropy (BI-RADS) or task-weighted cross-entropy + soft F1 (features),
AdamW/Adam with PyTorch's defaults and CosineAnnealingWarmRestarts stepped per epoch or per
batch, the class-weighted sampler when configured. The checkpoint is chosen on the validation
images by the config's `best_metric`, as birads does, and evaluated on `--test` images (a CSV
with `image`, `birads` and optional `pathology`, as `birads cv` writes per fold). CutMix is not
reproduced: the script refuses configs that use it. Models come from
scripts/make_model_fixtures.py (the same definitions the parity tests use).
"""
import argparse
import copy
import csv
import json
import os
import sys
import time
import tomllib

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from bench_preprocess import cut_black_box  # noqa: E402
from make_model_fixtures import my_convnext, my_densenet  # noqa: E402
from make_train_fixtures import feature_loss  # noqa: E402


def suspicious(name):
    """BI-RADS 4, 4A-4C, 5 (and 6): the categories whose probability is the malignancy score."""
    return name.strip().upper()[:1] in ("4", "5", "6")


class Pipeline:
    """Decode and preprocess (and augment, when training) one image into a CHW tensor."""

    def __init__(self, pre, aug, rng):
        self.pre, self.aug, self.rng = pre, aug, rng
        a = aug or {}
        self.affine = None
        if a.get("affine"):
            p = a["affine"]
            self.affine = T.RandomAffine(degrees=p["degrees"], translate=(p["translate"], p["translate"]),
                                         scale=(p["scale_min"], p["scale_max"]), shear=p["shear"])
        self.blur = None
        if a.get("blur"):
            p = a["blur"]
            self.blur = T.GaussianBlur(kernel_size=p["kernel"], sigma=(p["sigma_min"], p["sigma_max"]))
        self.erasing = None
        if a.get("erasing"):
            p = a["erasing"]
            self.erasing = T.RandomErasing(p=p["p"], scale=(p["area_min"], p["area_max"]),
                                           ratio=(p["ratio_min"], p["ratio_max"]), value=p["value"])

    def zoom(self, img, box):
        """birads' lesion zoom (augment_more.rs): a window of the image's shape around the box."""
        p = self.aug["zoom"]
        if self.rng.random() >= p["p"]:
            return img
        lo, hi = p["margin_min"], p["margin_max"]
        margin = self.rng.uniform(lo, hi) if hi > lo else lo
        w, h = img.size
        bw, bh = max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)
        scale = min(max(bw / w, bh / h) * margin, 1.0)
        cw, ch = min(max(round(w * scale), 1), w), min(max(round(h * scale), 1), h)

        def place(a, b, size, full, u):
            first, last = max(int(np.ceil(b - size)), 0), min(max(int(np.floor(a)), 0), full - size)
            first, last = min(first, last), max(first, last)
            return first + min(int((last - first + 1) * u), last - first)

        x0 = place(box[0], box[2], cw, w, self.rng.random())
        y0 = place(box[1], box[3], ch, h, self.rng.random())
        return img.crop((x0, y0, x0 + cw, y0 + ch))

    def intensity(self, img):
        """birads' brightness/contrast jitter (augment_more.rs): brightness first, 8-bit steps."""
        p = self.aug["intensity"]
        b = self.rng.uniform(1 - p["brightness"], 1 + p["brightness"]) if p["brightness"] > 0 else 1.0
        c = self.rng.uniform(1 - p["contrast"], 1 + p["contrast"]) if p["contrast"] > 0 else 1.0
        a = np.clip(np.round(np.asarray(img, dtype=np.float32) * b), 0, 255)
        mean = np.round((a @ np.array([0.299, 0.587, 0.114])).mean())
        a = np.clip(np.round(mean + c * (a - mean)), 0, 255)
        return Image.fromarray(a.astype(np.uint8))

    def __call__(self, path, train, lesion=None):
        pre = self.pre
        img = Image.open(path).convert("RGB")
        box = None
        if lesion:
            w, h = img.size
            box = [(lesion["cx"] - lesion["w"] / 2) * w, (lesion["cy"] - lesion["h"] / 2) * h,
                   (lesion["cx"] + lesion["w"] / 2) * w, (lesion["cy"] + lesion["h"] / 2) * h]
        if pre.get("cut_black"):
            c = pre.get("cut_black_params", {})
            cut = cut_black_box(img, c.get("threshold", 10), c.get("black_ratio", 0.5), c.get("min_width", 200),
                                c.get("min_height", 200))
            if cut:
                img = img.crop(cut)
                box = box and [box[0] - cut[0], box[1] - cut[1], box[2] - cut[0], box[3] - cut[1]]
        if pre.get("crop"):
            w, h = img.size
            left, top = int(round((w - pre["crop"]) / 2.0)), int(round((h - pre["crop"]) / 2.0))
            img = TF.center_crop(img, [pre["crop"], pre["crop"]])
            box = box and [box[0] - left, box[1] - top, box[2] - left, box[3] - top]
        if box:
            w, h = img.size
            box = [max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)]
            box = box if box[2] > box[0] and box[3] > box[1] else None
        if train and self.aug:
            if self.aug.get("zoom") and box:
                img = self.zoom(img, box)
            if self.rng.random() < self.aug.get("hflip", 0):
                img = TF.hflip(img)
            if self.rng.random() < self.aug.get("vflip", 0):
                img = TF.vflip(img)
            if self.affine:
                img = self.affine(img)
            if self.blur:
                img = self.blur(img)
            if self.aug.get("intensity"):
                img = self.intensity(img)
        img = img.resize((pre["size"], pre["size"]), Image.BILINEAR)
        t = TF.normalize(TF.to_tensor(img), pre["mean"], pre["std"])
        if train and self.erasing:
            t = self.erasing(t)
        return t


def ordinal_targets(k, eps):
    """birads' ordinal label smoothing (losses.rs): 1 − ε on the class, ε over the others in
    proportion to 2^−|c − y|."""
    m = np.zeros((k, k))
    for y in range(k):
        w = np.array([0.0 if c == y else 0.5 ** abs(c - y) for c in range(k)])
        m[y] = eps * w / w.sum() if w.sum() > 0 else 0.0
        m[y, y] = 1.0 - (eps if w.sum() > 0 else 0.0)
    return torch.tensor(m, dtype=torch.float32)


def batches(images, labels, order, bs, pipe, train, lesions=None):
    for i in range(0, len(order), bs):
        idx = order[i:i + bs]
        x = [pipe(images[j], train, lesions[j] if lesions else None) for j in idx]
        yield torch.stack(x), torch.tensor([labels[j] for j in idx])


def build_model(cfg):
    m = cfg["model"]
    if cfg["task"] == "cls" and m.get("arch", "convnext") == "convnext":
        c = m["convnext"]
        model = my_convnext(tuple(c["dims"]), tuple(c["depths"]), len(cfg["classes"]), c["dropout"], c["sd_rate"])
        for mod in model.modules():
            if hasattr(mod, "layer_scale"):
                torch.nn.init.constant_(mod.layer_scale, c["layer_scale_init"])
        return model
    d = m["densenet"]
    classes = len(cfg["classes"]) if cfg["task"] == "cls" else 0
    return my_densenet(d["growth"], tuple(d["blocks"]), d["init_features"], d["bn_size"], d["tasks"], d["dp1"],
                       d["dp2"], classes=classes)


def cls_metrics(classes, truth, probs, malignant):
    """Accuracy, macro-F1, quadratic κ, macro AUC and malignancy AUC (as birads cv computes them)."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score
    truth = np.asarray(truth)
    pred = probs.argmax(1)
    out = {
        "accuracy": accuracy_score(truth, pred),
        "macro_f1": f1_score(truth, pred, labels=range(len(classes)), average="macro", zero_division=0),
        "quadratic_kappa": cohen_kappa_score(truth, pred, labels=range(len(classes)), weights="quadratic"),
    }
    aucs = [roc_auc_score(truth == k, probs[:, k]) for k in range(len(classes)) if 0 < (truth == k).sum() < len(truth)]
    out["auc_macro"] = float(np.mean(aucs)) if aucs else None
    known = np.array([m is not None for m in malignant])
    if known.any():
        y = np.array([bool(m) for m in np.asarray(malignant, dtype=object)[known]])
        score = probs[known][:, [suspicious(c) for c in classes]].sum(1)
        two = 0 < y.sum() < len(y)
        out["malignancy_auc"] = roc_auc_score(y, score) if two else None
        out["radiologist_auc"] = roc_auc_score(y, truth[known]) if two else None
    return out


def predict(model, images, bs, pipe):
    model.eval()
    out = []
    with torch.no_grad():
        for x, _ in batches(images, [0] * len(images), list(range(len(images))), bs, pipe, False):
            out.append(torch.softmax(model(x).reshape(len(x), -1), 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, help="override the config's seed")
    ap.add_argument("--test", help="CSV of test images (image, birads[, pathology]) to evaluate the chosen checkpoint on")
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(os.path.join(a.run, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    with open(os.path.join(a.run, "split.json")) as f:
        split = json.load(f)
    aug = cfg["augment"]
    if aug.get("cutmix", {}).get("kind", "off") != "off":
        sys.exit("switch off CutMix in the birads config for a like-for-like comparison")
    for k in ("affine", "blur", "erasing", "zoom", "intensity"):
        if aug.get(k) is False:
            aug[k] = None
    pre = cfg["preprocess"]
    task = cfg["task"]
    seed = cfg["seed"] if a.seed is None else a.seed
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pipe = Pipeline(pre, aug, rng)
    model = build_model(cfg)
    if cfg["optimizer"] == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"], eps=1e-8)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"], eps=1e-8)
    s = cfg["schedule"]
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=s["t0"], T_mult=s["t_mult"], eta_min=s["eta_min"])
    tr_img, tr_lab = split["train_images"], split["train_labels"]
    va_img, va_lab = split["val_images"], split["val_labels"]
    va_mal = split.get("val_malignant") or [None] * len(va_img)
    classes = cfg.get("classes") or []
    cw = cfg.get("class_weights") or []
    bs = cfg["batch_size"]
    iters = (len(tr_img) + bs - 1) // bs
    best = {"value": None, "epoch": None, "state": None}
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
        lesions = split.get("train_lesions")
        for i, (x, y) in enumerate(batches(tr_img, tr_lab, list(order), bs, pipe, True, lesions)):
            if s.get("per_batch"):
                sched.step(epoch + i / iters)
            tc = time.perf_counter()
            z = model(x)
            if task == "cls":
                z = z.reshape(len(y), -1)
                if cfg.get("smoothing") == "ordinal":
                    q = ordinal_targets(z.shape[1], cfg["label_smoothing"])[y]
                    loss = -(q * F.log_softmax(z, 1)).sum(1).mean()
                else:
                    loss = F.cross_entropy(z, y, label_smoothing=cfg["label_smoothing"])
                hits += (z.argmax(1) == y).sum().item()
                decisions += len(y)
            else:
                z = z.reshape(len(y), 8)
                loss = feature_loss(z, y, cfg["label_smoothing"], cfg["f1_loss_weight"])
                hits += (z.reshape(-1, 4, 2).argmax(2) == y).sum().item()
                decisions += y.numel()
            opt.zero_grad()
            loss.backward()
            opt.step()
            compute += time.perf_counter() - tc
            loss_sum += loss.item() * len(y)
            seen += len(y)
        lr = opt.param_groups[0]["lr"]
        if not s.get("per_batch"):
            sched.step()
        seconds = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_accuracy": hits / decisions,
               "seconds": seconds, "images_per_second": seen / seconds, "compute_images_per_second": seen / compute}
        if task == "cls":
            p = predict(model, va_img, bs, pipe)
            if len(va_img):
                m = cls_metrics(classes, va_lab, p, va_mal)
                rec.update({"val_" + k: v for k, v in m.items()})
                rec["val_loss"] = float(F.nll_loss(torch.log(torch.tensor(p).clamp_min(1e-12)), torch.tensor(va_lab)))
        else:
            model.eval()
            with torch.no_grad():
                per_task, n = np.zeros(4), 0
                tp = np.zeros(4); fp = np.zeros(4); fn = np.zeros(4)
                for x, y in batches(va_img, va_lab, list(range(len(va_img))), bs, pipe, False):
                    q = model(x).reshape(-1, 4, 2).argmax(2)
                    per_task += (q == y).sum(0).numpy()
                    tp += ((q == 1) & (y == 1)).sum(0).numpy()
                    fp += ((q == 1) & (y == 0)).sum(0).numpy()
                    fn += ((q == 0) & (y == 1)).sum(0).numpy()
                    n += len(y)
            f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0)
            rec["val_accuracy"] = float((per_task / max(n, 1)).mean())
            rec["val_f1"] = float(f1.mean())
        metric = {"mean_accuracy": "val_accuracy", "mean_f1": "val_f1", "macro_f1": "val_macro_f1",
                  "auc": "val_auc_macro", "malignancy_auc": "val_malignancy_auc"}.get(cfg["best_metric"], "val_accuracy")
        value = rec.get(metric)
        if cfg["best_metric"] == "loss":
            value = -rec["val_loss"] if "val_loss" in rec else None
        if value is not None and (best["value"] is None or value > best["value"]) or not len(va_img):
            best = {"value": value, "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
            rec["best"] = True
        history.append(rec)
        print(json.dumps(rec), flush=True)
    result = {"seed": seed, "history": history, "best_epoch": best["epoch"]}
    if a.test:
        model.load_state_dict(best["state"])
        with open(a.test, newline="") as f:
            rows = list(csv.DictReader(f))
        truth = [classes.index(r["birads"]) for r in rows]
        mal = [{"malignant": True, "benign": False}.get(r.get("pathology", "")) for r in rows]
        p = predict(model, [r["image"] for r in rows], bs, pipe)
        result["test"] = cls_metrics(classes, truth, p, mal)
        print(json.dumps({"test": result["test"]}), flush=True)
    out = a.out or os.path.join(a.run, f"pytorch-seed{seed}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
