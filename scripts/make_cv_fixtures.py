#!/usr/bin/env python3
"""Fixture for the cross-validation metrics of `birads cv` (crates/birads-infer/src/cv.rs):
test predictions of a 4-class BI-RADS grader (BUS-BRA's classes 2, 3, 4, 5) with biopsy
pathology, and what scikit-learn computes on them.

    /tmp/ref/bin/python scripts/make_cv_fixtures.py

Writes crates/birads-infer/tests/fixtures/cv/{predictions.csv,expected.json}. The malignancy
score is P(4) + P(5); the radiologist's score is the true category's index. Rows with an empty
pathology take part in the BI-RADS metrics only. Probabilities are multiples of 1/64, exact in
f32 and in their sums, so that scores tie (as real outputs sometimes do) identically here and
in Rust.
"""
import csv
import json
import os

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

CLASSES = ["2", "3", "4", "5"]
OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "birads-infer", "tests", "fixtures", "cv")


def main():
    rng = np.random.default_rng(17)
    n = 240
    truth = rng.choice(4, size=n, p=[0.3, 0.25, 0.35, 0.1])
    # Pathology follows the category loosely, as in BUS-BRA (benign 4s, a few malignant 3s).
    p_malignant = np.array([0.02, 0.07, 0.6, 0.97])[truth]
    malignant = rng.random(n) < p_malignant
    unknown = rng.random(n) < 0.05
    logits = rng.normal(0, 1.0, size=(n, 4))
    logits[np.arange(n), truth] += 1.2
    logits[:, 2:] += np.where(malignant, 0.8, -0.3)[:, None]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs = np.round(probs * 64) / 64
    probs[:, 0] = 1.0 - probs[:, 1:].sum(1)
    probs = np.clip(probs, 0.0, 1.0)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "predictions.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["truth", "pathology"] + [f"p_{c}" for c in CLASSES])
        for t, m, u, p in zip(truth, malignant, unknown, probs):
            w.writerow([CLASSES[t], "" if u else ("malignant" if m else "benign")] + [f"{v:.6f}" for v in p])
    pred = probs.argmax(1)
    known = ~unknown
    score = probs[known, 2] + probs[known, 3]
    expected = {
        "images": int(n),
        "with_pathology": int(known.sum()),
        "accuracy": accuracy_score(truth, pred),
        "macro_f1": f1_score(truth, pred, labels=range(4), average="macro", zero_division=0),
        "quadratic_kappa": cohen_kappa_score(truth, pred, weights="quadratic"),
        # multi_class="ovr", average="macro": the mean of the per-class binary AUCs below.
        "auc_macro": float(np.mean([roc_auc_score(truth == k, probs[:, k]) for k in range(4)])),
        "malignancy_auc": roc_auc_score(malignant[known], score),
        "radiologist_auc": roc_auc_score(malignant[known], truth[known]),
        "per_class_auc": [roc_auc_score(truth == k, probs[:, k]) for k in range(4)],
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main()
