#!/usr/bin/env python3
"""Medians and ratios of bench/compare.sh's JSON lines, against the targets of the performance issue."""
import json
import statistics
import sys


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
        ("W2 s/epoch", median(x, "w2", "epoch_s_median"), median(t, "w2", "epoch_s_median"), "xtnn <= torch / 1.4",
         lambda a, b: a <= b / 1.4),
        ("W2 s/epoch vs sgemm floor", median(x, "w2", "epoch_s_median"), floor, "xtnn <= 1.15 x floor",
         lambda a, b: a <= 1.15 * b),
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
    print("| figure (medians) | xtnn | reference | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    for name, mine, theirs, target, ok in checks:
        ratio = mine / theirs if theirs else float("nan")
        print(f"| {name} | {mine:.4g} | {theirs:.4g} | {ratio:.3f} | {target} | {'yes' if ok(mine, theirs) else 'NO'} |")


if __name__ == "__main__":
    main(sys.argv[1])
