"""Writes crates/birads-infer/tests/fixtures/fusion/sklearn.json: image-model and descriptor
probabilities of 300 made-up images with 4 labels, and what scikit-learn's multinomial
LogisticRegression fits on them (after birads' input transform and standardisation).
tests/fusion.rs fits the same rows with birads' solver and compares.

    /tmp/ref/bin/python scripts/make_fusion_fixture.py
"""
import json
from pathlib import Path

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

OUT = Path(__file__).resolve().parents[1] / "crates/birads-infer/tests/fixtures/fusion/sklearn.json"
rng = np.random.default_rng(20261201)
n, k = 300, 4
labels = rng.integers(0, k, n)
# Image-model probabilities leaning (noisily) towards the label; descriptors more suspicious
# for higher labels.
logits = rng.normal(0, 1.2, (n, k)) + 1.5 * np.eye(k)[labels]
p = np.exp(logits)
p = (p / p.sum(1, keepdims=True)).astype(np.float32)
q = 1 / (1 + np.exp(-(rng.normal(0, 1.5, (n, 4)) + (labels[:, None] - 1.5))))
q = q.astype(np.float32)
q[0, 0], p[1, 0] = 1.0, 0.0  # the clamps


def raw(p, q):
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    q = np.clip(q.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.concatenate([np.log(p), np.log(q / (1 - q))], axis=1)


x = raw(p, q)
mean, scale = x.mean(0), x.std(0)
xs = (x - mean) / scale
C = 0.3
m = LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(xs, labels)
b = m.intercept_ - m.intercept_.mean()
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps({
    "about": "scripts/make_fusion_fixture.py, scikit-learn " + sklearn.__version__,
    "c": C,
    "class_probabilities": p.tolist(),
    "descriptors": q.tolist(),
    "labels": labels.tolist(),
    "mean": mean.tolist(),
    "scale": scale.tolist(),
    "coef": m.coef_.tolist(),
    "intercept": b.tolist(),
    "probabilities": m.predict_proba(xs).tolist(),
}))
print(OUT, m.n_iter_)
