#!/usr/bin/env python3
"""Reference fixtures for birads-data's tests, made with the libraries the original program
used (Pillow + numpy). CI never runs this; the outputs are committed.

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install pillow numpy
    /tmp/ref/bin/python scripts/make_fixtures.py [--busbra ../shared/data/bus-bra]

Writes crates/birads-data/tests/fixtures/:
  cutblack_busbra.csv      crop box of the original CutBlack on every BUS-BRA image
  cutblack_cases/*.png     crafted edge cases, and cutblack_cases.csv with their boxes
  resize/*.png             Pillow BILINEAR resizes of formula-defined images (see pattern())
  affine/*.png, affine.csv torchvision F.affine (NEAREST, fill 0) on a PIL image, per parameter set
  blur/*.png               torchvision F.gaussian_blur(kernel 5) on a PIL image, per sigma
  decode/*.jpg, decode.csv JPEGs written by Pillow (subsamplings, progressive, grey, restart
                           markers) with the SHA-256 of Pillow's decoded RGB pixels
  decode_busbra.csv        the same digest for every 10th BUS-BRA image
(affine and blur need torchvision: pip install torch torchvision)
"""
import argparse
import csv
import hashlib
import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "birads-data", "tests", "fixtures")


def cut_black_box(rgb, threshold=10, ratio=0.5, min_w=200, min_h=200):
    """The original program's black-border crop, restated: returns (x0, y0, x1, y1) of the
    numpy slice it takes, or the full image when the crop is too small."""
    h, w, _ = rgb.shape
    black = np.all(rgb <= threshold, axis=2)
    left, right, top, bottom = 0, w, 0, h
    for x in range(w // 2):
        if black[:, x].sum() / h > ratio:
            left = x + 1
        else:
            break
    for x in range(w - 1, w // 2, -1):
        if black[:, x].sum() / h > ratio:
            right = x - 1
        else:
            break
    for y in range(h // 2):
        if black[y, :].sum() / w > ratio:
            top = y + 1
        else:
            break
    for y in range(h - 1, h // 2, -1):
        if black[y, :].sum() / w > ratio:
            bottom = y - 1
        else:
            break
    crop = rgb[top:bottom, left:right]
    if crop.shape[1] < min_w or crop.shape[0] < min_h:
        return 0, 0, w, h
    return left, top, right, bottom


def pattern(kind, w, h):
    """Deterministic test images, recomputed identically by the Rust tests."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    if kind == "gradient":
        r = (x * 255) // max(w - 1, 1)
        g = (y * 255) // max(h - 1, 1)
        b = ((x + y) * 255) // max(w + h - 2, 1)
    elif kind == "texture":
        r = (x * 7 + y * 13 + (x * y) % 31) % 256
        g = (x * x + 3 * y) % 256
        b = ((x // 8 + y // 8) % 2) * 200 + (x % 5) * 11
    elif kind == "stripes":
        r = np.where((x // 3) % 2 == 0, 250, 5)
        g = np.where((y // 2) % 2 == 0, 240, 20)
        b = (x * 3 + y * 5) % 256
    else:
        raise ValueError(kind)
    return np.stack([r, g, b], axis=2).clip(0, 255).astype(np.uint8)


RESIZE_CASES = [
    # kind, src w, src h, dst w, dst h
    ("texture", 672, 672, 224, 224),
    ("gradient", 672, 672, 224, 224),
    ("stripes", 500, 333, 224, 224),
    ("texture", 333, 500, 224, 224),
    ("texture", 150, 97, 224, 224),  # upsampling
    ("stripes", 672, 672, 112, 112),
    ("texture", 640, 480, 64, 64),
]


def crafted_cases():
    """Edge cases for CutBlack: (name, uint8 HxWx3 array)."""
    cases = []

    def grey(w, h, v=128):
        return np.full((h, w, 3), v, np.uint8)

    a = grey(400, 300)
    a[:, :20] = 0
    a[:, -30:] = 4
    a[:10] = 10
    a[-15:] = 2
    cases.append(("all_sides", a))
    a = grey(401, 301)
    a[:, :7] = 0
    a[:, -1:] = 0
    cases.append(("odd_sizes", a))
    a = grey(300, 300)
    a[:150, :12] = 0  # exactly half black: not > 0.5, kept
    cases.append(("exactly_half", a))
    a = grey(300, 301)
    a[:151, :12] = 0  # 151/301 > 0.5: trimmed
    cases.append(("just_over_half", a))
    a = grey(300, 300)
    a[:, :15] = 11  # 11 is not black
    a[:, -15:] = (10, 10, 11)  # one channel above threshold: not black
    cases.append(("threshold_values", a))
    a = grey(300, 300)
    a[:, :60] = 0
    a[:, -60:] = 0  # crop narrower than 200: original kept
    cases.append(("too_narrow", a))
    cases.append(("all_black", np.zeros((250, 320, 3), np.uint8)))
    a = grey(500, 300)
    a[:, 250:] = 0  # right half black: scan stops at w//2
    cases.append(("right_half_black", a))
    a = grey(202, 205)
    a[:, :1] = 0
    a[:, -1:] = 0
    cases.append(("just_above_min", a))
    a = grey(360, 280)
    a[:, :5] = 0
    a[:, 5:6] = 200
    a[:, 6:20] = 0  # interrupted border: scan stops at column 5
    cases.append(("interrupted", a))
    a = grey(420, 320)
    a[:200, :] = 0  # top rows black over full width, and black columns only partly
    a[:, :30] = 0
    cases.append(("rows_full_width", a))
    rng = np.random.default_rng(7)
    a = (rng.random((310, 330, 3)) * 60).astype(np.uint8)  # dark noise around the threshold
    a[:, :25] //= 8
    a[-40:, :] //= 8
    cases.append(("dark_noise", a))
    return cases


AFFINE_CASES = [
    # angle, tx, ty, scale, shear_x
    (0.0, 0, 0, 1.0, 0.0),
    (12.5, 0, 0, 1.0, 0.0),
    (-15.0, 7, -5, 1.0, 0.0),
    (3.3, -9, 4, 0.93, 0.0),
    (-7.7, 2, 8, 1.08, 6.5),
    (14.2, -4, -6, 0.9, -10.0),
    (90.0, 0, 0, 1.0, 0.0),
]
BLUR_SIGMAS = [0.1, 0.6, 1.3, 2.0]


def torchvision_fixtures():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    os.makedirs(os.path.join(OUT, "affine"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "blur"), exist_ok=True)
    img = Image.fromarray(pattern("texture", 97, 83))
    with open(os.path.join(OUT, "affine.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["file", "angle", "tx", "ty", "scale", "shear_x"])
        for i, (angle, tx, ty, scale, shear) in enumerate(AFFINE_CASES):
            out = F.affine(img, angle=angle, translate=[tx, ty], scale=scale, shear=[shear, 0.0],
                           interpolation=InterpolationMode.NEAREST, fill=0)
            name = f"affine_{i}.png"
            out.save(os.path.join(OUT, "affine", name), optimize=True)
            wr.writerow([name, angle, tx, ty, scale, shear])
    for sigma in BLUR_SIGMAS:
        out = F.gaussian_blur(img, [5, 5], [sigma, sigma])
        out.save(os.path.join(OUT, "blur", f"blur_{sigma}.png"), optimize=True)


def rgb_digest(path):
    """What the original did to a file (`Image.open(p).convert('RGB')`), as a SHA-256."""
    img = Image.open(path).convert("RGB")
    return img.size, hashlib.sha256(img.tobytes()).hexdigest()


def decode_fixtures(busbra, rows):
    d = os.path.join(OUT, "decode")
    os.makedirs(d, exist_ok=True)
    colour = Image.fromarray(pattern("texture", 301, 211))
    cases = [
        ("c444.jpg", colour, dict(quality=88, subsampling=0)),
        ("c422.jpg", colour, dict(quality=88, subsampling=1)),
        ("c420.jpg", colour, dict(quality=80, subsampling=2)),
        ("c420_progressive.jpg", colour, dict(quality=75, subsampling=2, progressive=True)),
        ("grey.jpg", colour.convert("L"), dict(quality=90)),
        ("c420_q30_odd.jpg", colour.crop((0, 0, 157, 99)), dict(quality=30, subsampling=2)),
    ]
    with open(os.path.join(OUT, "decode.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["image", "width", "height", "sha256"])
        for name, img, kw in cases:
            img.save(os.path.join(d, name), **kw)
            (w, h), digest = rgb_digest(os.path.join(d, name))
            wr.writerow([name, w, h, digest])
    with open(os.path.join(OUT, "decode_busbra.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["image", "width", "height", "sha256"])
        for r in rows[::10]:
            (w, h), digest = rgb_digest(os.path.join(busbra, r["image"]))
            wr.writerow([os.path.basename(r["image"]), w, h, digest])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--busbra", default=os.path.join(HERE, "..", "..", "shared", "data", "bus-bra"))
    args = ap.parse_args()
    os.makedirs(os.path.join(OUT, "cutblack_cases"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "resize"), exist_ok=True)

    with open(os.path.join(args.busbra, "labels.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(OUT, "cutblack_busbra.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["image", "width", "height", "x0", "y0", "x1", "y1"])
        cropped = 0
        for r in rows:
            img = np.array(Image.open(os.path.join(args.busbra, r["image"])).convert("RGB"))
            box = cut_black_box(img)
            cropped += box != (0, 0, img.shape[1], img.shape[0])
            wr.writerow([os.path.basename(r["image"]), img.shape[1], img.shape[0], *box])
    print(f"bus-bra: {len(rows)} images, {cropped} cropped by CutBlack")

    with open(os.path.join(OUT, "cutblack_cases.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["image", "width", "height", "x0", "y0", "x1", "y1"])
        for name, arr in crafted_cases():
            Image.fromarray(arr).save(os.path.join(OUT, "cutblack_cases", name + ".png"), optimize=True)
            wr.writerow([name + ".png", arr.shape[1], arr.shape[0], *cut_black_box(arr)])

    for kind, sw, sh, dw, dh in RESIZE_CASES:
        src = Image.fromarray(pattern(kind, sw, sh))
        out = src.resize((dw, dh), Image.BILINEAR)
        out.save(os.path.join(OUT, "resize", f"{kind}_{sw}x{sh}_to_{dw}x{dh}.png"), optimize=True)
    decode_fixtures(args.busbra, rows)
    torchvision_fixtures()
    print("fixtures written to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
