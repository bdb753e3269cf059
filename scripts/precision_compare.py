#!/usr/bin/env python3
"""Mixed precision against the CPU's run-to-run spread (issue #15, point 2). Standard library
only.

    precision_compare.py collect --data-digest D --runs RUN...   # CSV of last-epoch figures
    precision_compare.py compare --reference docs/gpu/precision-cpu.csv --data-digest D --runs RUN...

A run folder is named TASK-LABEL-SEED (e.g. cls-amp-1) and holds birads' metrics.csv.
`compare` prints, per task and figure, the CPU seeds' mean and sd and each GPU run's value,
and whether it lies within mean ± 2 sd (sd over the seeds, n − 1); exit 1 if any does not.
"""
import argparse
import csv
import os
import statistics
import sys

FIGURES = ["train_loss", "val_loss", "val_accuracy", "val_f1", "val_auc"]


def last_epoch(run):
    with open(os.path.join(run, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1]


def collect(a):
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["task", "label", "seed", "data_digest"] + FIGURES)
    for run in sorted(a.runs):
        task, label, seed = os.path.basename(run.rstrip("/")).split("-")
        row = last_epoch(run)
        w.writerow([task, label, seed, a.data_digest] + [row[k] for k in FIGURES])


def compare(a):
    with open(a.reference, newline="") as f:
        ref = list(csv.DictReader(f))
    digests = {r["data_digest"] for r in ref}
    if digests != {a.data_digest}:
        print(f"data differ: reference {sorted(digests)}, here {a.data_digest}")
        return 1
    failed = 0
    print("| task | run | " + " | ".join(FIGURES) + " |")
    print("|---|---|" + "---|" * len(FIGURES))
    for task in sorted({r["task"] for r in ref}):
        cpu = [r for r in ref if r["task"] == task]
        stats = {}
        for k in FIGURES:
            v = [float(r[k]) for r in cpu]
            stats[k] = (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in (stats[k] for k in FIGURES)]
        print(f"| {task} | CPU f32, {len(cpu)} seeds | " + " | ".join(cells) + " |")
        for run in sorted(a.runs):
            t, label, seed = os.path.basename(run.rstrip("/")).split("-")
            if t != task:
                continue
            row = last_epoch(run)
            cells = []
            for k in FIGURES:
                m, s = stats[k]
                x = float(row[k])
                ok = abs(x - m) <= 2 * s
                failed += not ok
                cells.append(f"{x:.4f}{'' if ok else ' ✗'}")
            print(f"| {task} | {label} seed {seed} | " + " | ".join(cells) + " |")
    print(f"\n{failed} figure(s) outside mean ± 2 sd of the CPU runs" if failed else "\nall within mean ± 2 sd of the CPU runs")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--data-digest", required=True)
    c.add_argument("--runs", nargs="+", required=True)
    p = sub.add_parser("compare")
    p.add_argument("--reference", required=True)
    p.add_argument("--data-digest", required=True)
    p.add_argument("--runs", nargs="+", required=True)
    a = ap.parse_args()
    sys.exit(collect(a) if a.cmd == "collect" else compare(a))


if __name__ == "__main__":
    main()
