#!/usr/bin/env python3
"""Fixtures for birads-train: the losses (value and gradient with respect to the logits) and
the learning-rate schedule, computed by PyTorch.

    /tmp/ref/bin/python scripts/make_train_fixtures.py

Writes crates/birads-train/tests/fixtures/train_reference.json.
"""
import json
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "birads-train", "tests", "fixtures")
TASK_WEIGHTS = [1.2, 1.5, 1.0, 1.0]


def soft_f1_loss(logits, targets):
    """1 - mean over the four tasks of the soft F1 of P(finding) over the batch."""
    f1s = []
    for t in range(4):
        p = F.softmax(logits[:, 2 * t:2 * t + 2], dim=1)[:, 1]
        y = targets[:, t].float()
        tp = (p * y).sum()
        fp = (p * (1 - y)).sum()
        fn = ((1 - p) * y).sum()
        f1s.append(2 * tp / (2 * tp + fp + fn + 1e-7))
    return 1 - torch.stack(f1s).mean()


def feature_loss(logits, targets, smoothing, f1_weight):
    ce = sum(w * F.cross_entropy(logits[:, 2 * t:2 * t + 2], targets[:, t], label_smoothing=smoothing)
             for t, w in enumerate(TASK_WEIGHTS))
    return ce + f1_weight * soft_f1_loss(logits, targets)


def main():
    torch.manual_seed(3)
    out = {}
    # BI-RADS: label-smoothed cross-entropy.
    cases = []
    for n, c, s in [(8, 6, 0.2), (5, 6, 0.0), (7, 4, 0.1)]:
        z = (torch.randn(n, c) * 2).requires_grad_()
        y = torch.randint(0, c, (n,))
        loss = F.cross_entropy(z, y, label_smoothing=s)
        loss.backward()
        cases.append({"logits": z.detach().tolist(), "targets": y.tolist(), "smoothing": s,
                      "loss": loss.item(), "grad": z.grad.tolist()})
    out["cross_entropy"] = cases
    # Features: task-weighted smoothed CE + soft F1.
    cases = []
    for n, s, w in [(8, 0.2, 1.0), (6, 0.2, 0.0), (9, 0.0, 0.5)]:
        z = (torch.randn(n, 8) * 1.5).requires_grad_()
        y = torch.randint(0, 2, (n, 4))
        loss = feature_loss(z, y, s, w)
        loss.backward()
        cases.append({"logits": z.detach().tolist(), "targets": y.tolist(), "smoothing": s,
                      "f1_weight": w, "loss": loss.item(), "grad": z.grad.tolist()})
    out["feature_loss"] = cases
    # CosineAnnealingWarmRestarts, stepped per epoch and with fractional epochs.
    sched = []
    for t0, t_mult, eta_min in [(10, 2, 0.0), (10, 2, 1e-6), (3, 1, 1e-5), (5, 3, 0.0)]:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=1e-4)
        s = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=t_mult, eta_min=eta_min)
        per_epoch = []
        for _ in range(80):
            per_epoch.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=1e-4)
        s = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=t_mult, eta_min=eta_min)
        fractional = []
        iters = 7
        for epoch in range(30):
            for i in range(iters):
                s.step(epoch + i / iters)
                fractional.append([epoch + i / iters, opt.param_groups[0]["lr"]])
        sched.append({"t0": t0, "t_mult": t_mult, "eta_min": eta_min, "base": 1e-4,
                      "per_epoch": per_epoch, "fractional": fractional})
    out["schedule"] = sched
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "train_reference.json"), "w") as f:
        json.dump(out, f)
    print("wrote", os.path.normpath(os.path.join(OUT, "train_reference.json")))


if __name__ == "__main__":
    main()
