#!/usr/bin/env python3
"""Fixtures for `birads eval`: prediction/truth CSVs and the metrics scikit-learn computes on
them (crates/birads-infer/tests/fixtures/eval/<case>/expected.json).

    /tmp/ref/bin/python scripts/make_eval_fixtures.py

Cases: `mixed` (all six classes, probabilities with ties) and `sparse` (class 4C absent from
truth and predictions, calcification never predicted, a feature cell left unlabelled), which
exercise scikit-learn's label-set and zero-division conventions.
"""
import csv
import json
import os

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (accuracy_score, cohen_kappa_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support, roc_auc_score)

CLASSES = ["2", "3", "4A", "4B", "4C", "5"]
FEATURES = ["boundary", "calcification", "direction", "shape"]
BINS = 10
OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "birads-infer", "tests", "fixtures", "eval")


def write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def read(path):
    with open(path, newline="") as f:
        r = list(csv.reader(f))
    return r[0], r[1:]


def ece(y_obs, conf):
    """ECE over calibration_curve's uniform bins, weighted by the bin counts."""
    prob_true, prob_pred = calibration_curve(y_obs, conf, n_bins=BINS, strategy="uniform")
    edges = np.linspace(0.0, 1.0, BINS + 1)
    ids = np.searchsorted(edges[1:-1], conf)
    counts = np.bincount(ids, minlength=BINS)
    counts = counts[counts > 0]
    return float(np.sum(counts / len(conf) * np.abs(prob_true - prob_pred))), prob_true.tolist(), prob_pred.tolist()


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_case(name, seed, n_cls, n_fea, sparse):
    rng = np.random.default_rng(seed)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    # --- classification: noisy ordinal predictions, like a real grader.
    classes = [0, 1, 2, 3, 5] if sparse else list(range(6))
    truth = rng.choice(classes, size=n_cls)
    logits = rng.normal(0, 1.0, size=(n_cls, 6))
    for i, t in enumerate(truth):
        logits[i] += 2.2 * np.exp(-0.8 * (np.arange(6) - t) ** 2)
    if sparse:
        logits[:, 4] -= 10.0  # 4C never predicted
    probs = np.round(softmax(logits), 2 if sparse else 6)
    names = [f"{i:04d}.jpg" for i in range(n_cls)]
    write(os.path.join(d, "cla_gt.csv"), ["img_name", "label"], [[n, int(t)] for n, t in zip(names, truth)])
    write(os.path.join(d, "cla_prob.csv"), ["img_name"] + [f"p_{c}" for c in CLASSES],
          [[n] + [f"{p:.6f}" for p in row] for n, row in zip(names, probs)])
    # Labels as `birads predict` writes them: argmax of the probabilities (first on ties).
    _, rows = read(os.path.join(d, "cla_prob.csv"))
    p = np.array([[float(v) for v in r[1:]] for r in rows])
    pred = p.argmax(axis=1)
    write(os.path.join(d, "cla_pre.csv"), ["img_name", "label"], [[n, int(y)] for n, y in zip(names, pred)])

    labels = list(range(6))
    prec, rec, f1, sup = precision_recall_fscore_support(truth, pred, labels=labels, zero_division=0)
    auc = []
    for c in labels:
        pos = (truth == c).astype(int)
        auc.append(float(roc_auc_score(pos, p[:, c])) if 0 < pos.sum() < len(pos) else None)
    defined = [a for a in auc if a is not None]
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == truth).astype(int)
    cls_ece, _, _ = ece(hit, conf)
    cls = {
        "images": int(n_cls),
        "accuracy": accuracy_score(truth, pred),
        "macro_f1": f1_score(truth, pred, average="macro"),
        "quadratic_kappa": cohen_kappa_score(truth, pred, labels=labels, weights="quadratic"),
        "precision": prec.tolist(), "recall": rec.tolist(), "f1": f1.tolist(), "support": sup.tolist(),
        "confusion": confusion_matrix(truth, pred, labels=labels).tolist(),
        "auc_per_class": auc,
        "auc_macro": float(np.mean(defined)),
        "ece": cls_ece,
    }
    if not sparse:
        # All classes present: scikit-learn's own multi-class macro OvR AUC must agree.
        cls["auc_macro_sklearn_ovr"] = float(roc_auc_score(truth, p / p.sum(axis=1, keepdims=True),
                                                           multi_class="ovr", average="macro"))

    # --- features.
    ft = (rng.random((n_fea, 4)) < np.array([0.5, 0.25, 0.3, 0.55])).astype(int)
    score = np.clip(0.5 + (ft - 0.5) * rng.uniform(0.1, 0.9, size=(n_fea, 4)) + rng.normal(0, 0.2, (n_fea, 4)), 0, 1)
    score = np.round(score, 2)  # ties, like a coarse model
    if sparse:
        score[:, 1] = np.minimum(score[:, 1], 0.45)  # calcification never predicted
    fnames = [f"f{i:04d}.png" for i in range(n_fea)]
    gt_rows = []
    for i, n in enumerate(fnames):
        cells = [str(v) for v in ft[i]]
        if sparse and i % 7 == 3:
            cells[2] = ""  # direction unlabelled for this image
        gt_rows.append([n] + cells)
    write(os.path.join(d, "fea_gt.csv"), ["img_name"] + FEATURES, gt_rows)
    write(os.path.join(d, "fea_prob.csv"), ["img_name"] + [f"p_{f}" for f in FEATURES],
          [[n] + [f"{v:.6f}" for v in row] for n, row in zip(fnames, score)])
    fp = (score > 0.5).astype(int)
    write(os.path.join(d, "fea_pre.csv"), ["img_name"] + FEATURES, [[n] + [int(v) for v in row] for n, row in zip(fnames, fp)])
    feats = []
    for j, f in enumerate(FEATURES):
        mask = np.array([r[j + 1] != "" for r in gt_rows])
        t, y, s = ft[mask, j], fp[mask, j], score[mask, j]
        pr, rc, f1b, _ = precision_recall_fscore_support(t, y, average="binary", zero_division=0)
        e, _, _ = ece(t, s)
        feats.append({
            "name": f, "images": int(mask.sum()), "accuracy": accuracy_score(t, y),
            "precision": float(pr), "recall": float(rc), "f1": float(f1b),
            "auc": float(roc_auc_score(t, s)), "ece": e,
            "confusion": confusion_matrix(t, y, labels=[0, 1]).tolist(),
        })
    mean_acc = float(np.mean([x["accuracy"] for x in feats]))
    mean_f1 = float(np.mean([x["f1"] for x in feats]))
    c_score = 0.6 * cls["accuracy"] + 0.4 * cls["macro_f1"]
    f_score = 0.6 * mean_acc + 0.4 * mean_f1
    expected = {
        "classification": cls,
        "features": {"features": feats, "mean_accuracy": mean_acc, "mean_f1": mean_f1},
        "competition": {"classification": c_score, "features": f_score, "overall": (c_score + f_score) / 2},
    }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    make_case("mixed", 7, 240, 180, sparse=False)
    make_case("sparse", 11, 90, 70, sparse=True)
    print("wrote", os.path.normpath(OUT))
