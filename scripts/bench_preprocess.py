#!/usr/bin/env python3
"""The original program's preprocessing, timed on one core, for `birads bench preprocess`.

Inference chain: PIL open + convert('RGB') -> CutBlack (numpy, as the original) ->
torchvision CenterCrop(672) -> Resize((224, 224)) -> ToTensor -> Normalize(ImageNet).
Training chain: the same with RandomHorizontalFlip, RandomVerticalFlip,
RandomAffine(15, (0.1, 0.1), (0.9, 1.1), 10) and GaussianBlur(5, (0.1, 2.0)) before the
resize and RandomErasing(0.9, (0.02, 0.33), (0.3, 3.3), 0) after Normalize.

    python3 scripts/bench_preprocess.py --images DIR [--limit N] [--repeats R] [--json]
Prints images/s (median over repeats); with --json a single JSON object.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
from PIL import Image

try:
    import torch
    from torchvision import transforms as T

    torch.set_num_threads(1)
except ImportError:  # inference chain still measurable with PIL + numpy alone
    torch = None
    T = None

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def cut_black(img, threshold=10, ratio=0.5, min_w=200, min_h=200):
    """The original CropBlackBordersRGB, restated (same loops, same quirks)."""
    box = cut_black_box(img, threshold, ratio, min_w, min_h)
    return img if box is None else img.crop(box)


def cut_black_box(img, threshold=10, ratio=0.5, min_w=200, min_h=200):
    """CutBlack's crop box (left, top, right, bottom), or None when it keeps the image."""
    arr = np.array(img)
    h, w, _ = arr.shape
    left, right, top, bottom = 0, w, 0, h
    for x in range(w // 2):
        col = arr[:, x]
        if np.sum((col[:, 0] <= threshold) & (col[:, 1] <= threshold) & (col[:, 2] <= threshold)) / h > ratio:
            left = x + 1
        else:
            break
    for x in range(w - 1, w // 2, -1):
        col = arr[:, x]
        if np.sum((col[:, 0] <= threshold) & (col[:, 1] <= threshold) & (col[:, 2] <= threshold)) / h > ratio:
            right = x - 1
        else:
            break
    for y in range(h // 2):
        row = arr[y, :]
        if np.sum((row[:, 0] <= threshold) & (row[:, 1] <= threshold) & (row[:, 2] <= threshold)) / w > ratio:
            top = y + 1
        else:
            break
    for y in range(h - 1, h // 2, -1):
        row = arr[y, :]
        if np.sum((row[:, 0] <= threshold) & (row[:, 1] <= threshold) & (row[:, 2] <= threshold)) / w > ratio:
            bottom = y - 1
        else:
            break
    crop = arr[top:bottom, left:right]
    if crop.shape[1] < min_w or crop.shape[0] < min_h:
        return None
    return (left, top, left + crop.shape[1], top + crop.shape[0])


def numpy_inference(img):
    """CenterCrop(672) + Resize + ToTensor + Normalize with PIL/numpy only (no torchvision)."""
    w, h = img.size
    c = 672
    if w < c or h < c:
        canvas = Image.new("RGB", (max(w, c), max(h, c)))
        canvas.paste(img, ((max(w, c) - w) // 2, (max(h, c) - h) // 2))
        img, (w, h) = canvas, canvas.size
    left, top = int(round((w - c) / 2.0)), int(round((h - c) / 2.0))
    img = img.crop((left, top, left + c, top + c)).resize((224, 224), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (x - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    names = sorted(n for n in os.listdir(args.images) if n.lower().endswith((".jpg", ".jpeg", ".png", ".bmp")))
    paths = [os.path.join(args.images, n) for n in names[: args.limit]]

    if T is not None:
        infer_t = T.Compose([T.CenterCrop(672), T.Resize((224, 224)), T.ToTensor(), T.Normalize(MEAN, STD)])
        train_t = T.Compose([
            T.CenterCrop(672),
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10),
            T.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0)),
            T.Resize((224, 224)),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
            T.RandomErasing(p=0.9, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0),
        ])
    else:
        infer_t, train_t = numpy_inference, None

    def rate(transform):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for p in paths:
                transform(cut_black(Image.open(p).convert("RGB")))
            times.append(len(paths) / (time.perf_counter() - t))
        return statistics.median(times)

    for p in paths[:10]:  # warm-up
        infer_t(cut_black(Image.open(p).convert("RGB")))
    result = {"images": len(paths), "inference": rate(infer_t)}
    if train_t is not None:
        result["train"] = rate(train_t)
    result["torchvision"] = T is not None
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
