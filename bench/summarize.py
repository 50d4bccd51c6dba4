#!/usr/bin/env python3
"""Medians and ratios of bench/compare.sh's JSON lines, against the targets of the performance issue."""
import json
import statistics
import sys


def median_infer(rows, peer, workload, key):
    """The CNN scripts print their inference figures on a second line of the same workload."""
    values = [r[key] for r in rows if r["peer"].startswith(peer) and r["workload"] == workload and key in r]
    return statistics.median(values) if values else float("nan")


def main(path):
    rows = [json.loads(line) for line in open(path)]

    def median(peer, workload, key, threads=1):
        values = [r[key] for r in rows if r["peer"].startswith(peer) and r["workload"] == workload
                  and r.get("threads", 1) == threads and key in r]
        return statistics.median(values) if values else float("nan")

    def peak_rss(peer, workload):
        # the W3 line comes from the W2 process: its RSS is the W2 run's
        return median(peer, workload, "peak_rss_mb")

    x, t = "xtnn", "torch"
    floor = median("openblas", "sgemm_floor_w2", "epoch_s_median")
    checks = [
        ("W1 s/epoch", median(x, "w1", "epoch_s_median"), median(t, "w1", "epoch_s_median"), "xtnn <= torch / 8",
         lambda a, b: a <= b / 8),
        ("W1 s/epoch vs sgemm floor", median(x, "w1", "epoch_s_median"), median("openblas", "sgemm_floor_w1", "epoch_s_median"),
         "(no target)", lambda a, b: True),
        ("W1 sgemm floor (OpenBLAS alone) vs torch", median("openblas", "sgemm_floor_w1", "epoch_s_median"),
         median(t, "w1", "epoch_s_median"), "floor <= torch / 8, else the W1 target is below the floor",
         lambda a, b: a <= b / 8),
        ("W2 s/epoch", median(x, "w2", "epoch_s_median"), median(t, "w2", "epoch_s_median"), "xtnn <= torch / 1.4",
         lambda a, b: a <= b / 1.4),
        ("W2 s/epoch vs sgemm floor", median(x, "w2", "epoch_s_median"), floor, "xtnn <= 1.15 x floor",
         lambda a, b: a <= 1.15 * b),
        ("W2 sgemm floor (OpenBLAS alone) vs torch", floor, median(t, "w2", "epoch_s_median"),
         "floor <= torch / 1.4, else the W2 target is below the floor", lambda a, b: a <= b / 1.4),
        # One W2 epoch is 60.4 GFLOP of products; a W3 image is 469,504 FLOP: the sgemm rate of
        # the floor run bounds the batch-1000 throughput.
        ("W3 img/s ceiling at the floor's sgemm rate vs torch", 60.4e9 / floor / 469504,
         median(t, "w3", "thr_img_s_median"), "ceiling >= 1.5 x torch, else the W3 target is above it",
         lambda a, b: a >= 1.5 * b),
        ("W3 img/s, batch 1000", median(x, "w3", "thr_img_s_median"), median(t, "w3", "thr_img_s_median"),
         "xtnn >= 1.5 x torch", lambda a, b: a >= 1.5 * b),
        ("W3 latency us, batch 1 (mean)", median(x, "w3", "lat_us_mean"), median(t, "w3", "lat_us_mean"),
         "xtnn <= torch / 6", lambda a, b: a <= b / 6),
        ("W2 peak RSS MB", peak_rss(x, "w2"), peak_rss(t, "w2"), "xtnn <= torch / 2", lambda a, b: a <= b / 2),
        ("W1 test accuracy", median(x, "w1", "test_acc"), median(t, "w1", "test_acc"), "|diff| <= 0.01",
         lambda a, b: abs(a - b) <= 0.01),
        ("W2 test accuracy", median(x, "w2", "test_acc"), median(t, "w2", "test_acc"), "|diff| <= 0.01",
         lambda a, b: abs(a - b) <= 0.01),
        ("W2 s/epoch, default threads vs 1 thread", median(x, "w2", "epoch_s_median", threads=0),
         median(x, "w2", "epoch_s_median"), "default <= 1 thread (+3% noise)", lambda a, b: a <= 1.03 * b),
    ]
    # ../shared/bench/README.md's CNN floor: three times the forward FLOPs at the 75 GFLOP/s peak
    # of one core (W4 24.0, W5 0.384 MFLOP per image; 8,000 mnist10k training images).
    flop_floor = {"w4": 3 * 24.0e6 * 8000 / 75e9, "w5": 3 * 0.384e6 * 8000 / 75e9}
    for cnn in ("w4", "w5"):
        if any(r["workload"] == cnn and r["peer"] == "xtnn" for r in rows):
            goal = 1.5 if cnn == "w4" else 4
            checks += [
                (f"{cnn.upper()} FLOP floor (3x forward at 75 GFLOP/s) vs torch", flop_floor[cnn],
                 median(t, cnn, "epoch_s_median"), f"floor <= torch / {goal}, else the target is below the floor",
                 lambda a, b, goal=goal: a <= b / goal),
            ]
            checks += [
                (f"{cnn.upper()} s/epoch (mnist10k)", median(x, cnn, "epoch_s_median"), median(t, cnn, "epoch_s_median"),
                 f"xtnn <= torch / {goal}", lambda a, b, goal=goal: a <= b / goal),
                (f"{cnn.upper()} latency us, batch 1 (mean)", median_infer(rows, x, cnn, "lat_us_mean"),
                 median_infer(rows, t, cnn, "lat_us_mean"), "xtnn <= torch / 2", lambda a, b: a <= b / 2),
                (f"{cnn.upper()} img/s, batch 1000", median_infer(rows, x, cnn, "thr_img_s_median"),
                 median_infer(rows, t, cnn, "thr_img_s_median"), "(no target)", lambda a, b: True),
                (f"{cnn.upper()} test accuracy", median(x, cnn, "test_acc"), median(t, cnn, "test_acc"), "|diff| <= 0.01",
                 lambda a, b: abs(a - b) <= 0.01),
            ]
    print("| figure (medians) | xtnn | reference | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    for name, mine, theirs, target, ok in checks:
        ratio = mine / theirs if theirs else float("nan")
        print(f"| {name} | {mine:.4g} | {theirs:.4g} | {ratio:.3f} | {target} | {'yes' if ok(mine, theirs) else 'NO'} |")


if __name__ == "__main__":
    main(sys.argv[1])
