#!/usr/bin/env python3
"""Medians and ratios of bench/compare.sh's JSON lines, against the targets of issue 15 (speed near
the hardware): every ratio is between figures of the same run."""
import json
import statistics
import sys


class Figure(float):
    """A median that keeps the value of each timed round it was taken over, so that a ratio can be
    shown round by round too: both sides of a round ran back to back, so drift of the machine between
    rounds does not enter the round's ratio."""

    def __new__(cls, values, rounds):
        figure = super().__new__(cls, statistics.median(values) if values else float("nan"))
        figure.rounds = rounds
        return figure


def by_round(mine, theirs):
    common = sorted(set(getattr(mine, "rounds", {})) & set(getattr(theirs, "rounds", {})))
    return ", ".join(f"{mine.rounds[k] / theirs.rounds[k]:.3f}" for k in common if theirs.rounds[k])


def main(path):
    rows = [json.loads(line) for line in open(path)]

    def median(peer, workload, key, threads=1, variant=None):
        # Round 0 holds untimed runs that only add seeds to an accuracy.
        matching = [r for r in rows if r["peer"].startswith(peer) and r["workload"] == workload
                    and r.get("threads", 1) == threads and key in r and (r.get("round") != 0 or key == "test_acc")
                    and r.get("variant") == variant]
        return Figure([r[key] for r in matching], {r["round"]: r[key] for r in matching if r.get("round", 0) > 0})

    x, t = "xtnn", "torch"
    machine = next((r for r in rows if r["peer"] == "machine"), {})
    rate = median("openblas", "sgemm_rate_1024", "gflops")
    core = next((r["openblas_core"] for r in rows if r.get("openblas_core") and not r.get("variant")), "?")
    # The kernels OpenBLAS picks for the CPU itself, where the environment forced others.
    own_rate = median("openblas", "sgemm_rate_1024", "gflops", variant="openblas_for_this_cpu")
    own_core = next((r["openblas_core"] for r in rows if r.get("variant") == "openblas_for_this_cpu"), None)
    print(f"CPU: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, AVX-512: "
          f"{'yes' if machine.get('avx512') else 'no'} (xtnn is built with -march=native); OpenBLAS kernel: {core}; "
          f"one-thread sgemm 1024^3: {rate:.1f} GFLOP/s (median)"
          + (f"; with OPENBLAS_CORETYPE unset OpenBLAS picks {own_core} for this CPU: {own_rate:.1f} GFLOP/s"
             if own_core else "") + "\n")

    floor_w1 = median("openblas", "sgemm_floor_w1", "epoch_s_median")
    floor_w2 = median("openblas", "sgemm_floor_w2", "epoch_s_median")
    checks = [
        ("W1 s/epoch vs its sgemm floor", median(x, "w1", "epoch_s_median"), floor_w1, "xtnn <= 1.3 x floor",
         lambda a, b: a <= 1.3 * b),
        ("W1 s/epoch vs torch", median(x, "w1", "epoch_s_median"), median(t, "w1", "epoch_s_median"), "(no target)",
         lambda a, b: True),
        ("W2 s/epoch vs its sgemm floor", median(x, "w2", "epoch_s_median"), floor_w2, "xtnn <= 1.10 x floor",
         lambda a, b: a <= 1.10 * b),
        ("W2 s/epoch vs torch", median(x, "w2", "epoch_s_median"), median(t, "w2", "epoch_s_median"), "(no target)",
         lambda a, b: True),
        # One W2 epoch is 60.4 GFLOP of products and a W3 image 469,504 FLOP: the sgemm rate of the
        # floor run bounds the batch-1000 throughput of one core.
        ("W3 img/s at the W2 floor's sgemm rate vs torch", 60.4e9 / floor_w2 / 469504,
         median(t, "w3", "thr_img_s_median"), "(the bound for OpenBLAS's products: the W3 target is above it "
         "unless >= 1.2 x torch or xtnn's own products pass it)", lambda a, b: None),
        ("W3 img/s, batch 1000", median(x, "w3", "thr_img_s_median"), median(t, "w3", "thr_img_s_median"),
         "xtnn >= 1.2 x torch", lambda a, b: a >= 1.2 * b),
        ("W3 latency us, batch 1 (mean)", median(x, "w3", "lat_us_mean"), median(t, "w3", "lat_us_mean"),
         "xtnn <= torch / 4", lambda a, b: a <= b / 4),
        ("W2 peak RSS MB", median(x, "w2", "peak_rss_mb"), median(t, "w2", "peak_rss_mb"), "(no target)",
         lambda a, b: True),
        ("W1 test accuracy", median(x, "w1", "test_acc"), median(t, "w1", "test_acc"), "|diff| <= 0.01",
         lambda a, b: abs(a - b) <= 0.01),
        ("W2 test accuracy", median(x, "w2", "test_acc"), median(t, "w2", "test_acc"), "|diff| <= 0.01",
         lambda a, b: abs(a - b) <= 0.01),
    ]

    def flop_floor(workload, gflops=rate):
        """../shared/bench's CNN floor: 3x the forward FLOPs at the one-thread sgemm rate of this run."""
        counts = [r for r in rows if r["peer"] == "flops" and r["workload"] == workload]
        return 3 * counts[0]["fwd_flop_per_sample"] * counts[0]["n_train"] / (gflops * 1e9) if counts else float("nan")

    def seeds(workload):
        return len({r.get("seed") for r in rows if r["peer"] == x and r["workload"] == workload
                    and "test_acc" in r and r.get("threads", 1) == 1})

    cnn_targets = {"w4": 1.4, "w5": 3.0, "w6": 2.5}
    for cnn, goal in cnn_targets.items():
        if not any(r["workload"] == cnn and r["peer"] == x for r in rows):
            continue
        name = cnn.upper()
        checks.append((f"{name} s/epoch vs its FLOP floor", median(x, cnn, "epoch_s_median"), flop_floor(cnn),
                       f"xtnn <= {goal} x floor", lambda a, b, goal=goal: a <= goal * b))
        if own_core:
            checks.append((f"{name} s/epoch vs its FLOP floor at the rate of {own_core}'s kernels",
                           median(x, cnn, "epoch_s_median"), flop_floor(cnn, own_rate),
                           f"(for the record: xtnn <= {goal} x that floor?)", lambda a, b, goal=goal: a <= goal * b))
        if cnn == "w6":
            checks.append((f"{name} s/epoch vs torch", median(x, cnn, "epoch_s_median"), median(t, cnn, "epoch_s_median"),
                           "xtnn <= torch / 2", lambda a, b: a <= b / 2))
        else:
            checks.append((f"{name} s/epoch vs torch", median(x, cnn, "epoch_s_median"), median(t, cnn, "epoch_s_median"),
                           "(no target)", lambda a, b: True))
        if cnn == "w4":
            checks.append((f"{name} peak RSS MB", median(x, cnn, "peak_rss_mb"), median(t, cnn, "peak_rss_mb"),
                           "xtnn <= torch / 4", lambda a, b: a <= b / 4))
        if cnn == "w6":
            counts = [r for r in rows if r["peer"] == "flops" and r["workload"] == cnn]
            forward_us = counts[0]["fwd_flop_per_sample"] / (rate * 1e9) * 1e6 if counts else float("nan")
            checks.append((f"{name} latency floor us (one image's forward FLOPs at the sgemm rate) vs torch",
                           forward_us, median(t, cnn, "lat_us_mean"),
                           "floor <= torch / 4, else the latency target is below the floor", lambda a, b: a <= b / 4))
        checks += [
            (f"{name} latency us, batch 1 (mean)", median(x, cnn, "lat_us_mean"), median(t, cnn, "lat_us_mean"),
             "xtnn <= torch / 4" if cnn == "w6" else "(no target)", (lambda a, b: a <= b / 4) if cnn == "w6" else (lambda a, b: True)),
            (f"{name} img/s, batch 1000", median(x, cnn, "thr_img_s_median"), median(t, cnn, "thr_img_s_median"),
             "(no target)", lambda a, b: True),
            (f"{name} test accuracy" + (f" ({seeds(cnn)} seeds)" if cnn == "w6" else ""),
             median(x, cnn, "test_acc"), median(t, cnn, "test_acc"),
             "|diff| <= 0.02" if cnn == "w6" else "|diff| <= 0.01",
             (lambda a, b: abs(a - b) <= 0.02) if cnn == "w6" else (lambda a, b: abs(a - b) <= 0.01)),
        ]
    # The default thread count against one thread: W2 and W4 at least 1.6x faster, none slower
    # (3% allowed for the machine's drift between the two runs).
    for workload in ("w1", "w2", "w4", "w5", "w6"):
        if not any(r["workload"] == workload and r["peer"] == x for r in rows):
            continue
        speedup = workload in ("w2", "w4")
        checks.append((f"{workload.upper()} s/epoch, default threads vs 1 thread",
                       median(x, workload, "epoch_s_median", threads=0), median(x, workload, "epoch_s_median"),
                       "default <= 1 thread / 1.6" if speedup else "default <= 1 thread (+3% noise)",
                       (lambda a, b: a <= b / 1.6) if speedup else (lambda a, b: a <= 1.03 * b)))

    print("| figure (medians) | xtnn | reference | ratio | ratio by round | target | met |")
    print("|---|---|---|---|---|---|---|")
    for name, mine, theirs, target, ok in checks:
        ratio = mine / theirs if theirs else float("nan")
        met = ok(mine, theirs)
        print(f"| {name} | {mine:.4g} | {theirs:.4g} | {ratio:.3f} | {by_round(mine, theirs)} | {target} | "
              f"{'-' if met is None else 'yes' if met else 'NO'} |")
    placement(rows, x)


def core_to_core_by_round(rows):
    """bench/core_to_core's figures by (round, label), as compare.sh and distributed.sh take them
    before and after a run on two threads or two ranks."""
    return {(r["round"], r["label"]): r for r in rows
            if r.get("workload") == "core_to_core" and "round_trip_ns" in r and r.get("label")}


def chase_text(machine):
    """Each vCPU's 16 MB load time from one core_to_core record; "-" in runs from before it."""
    return ", ".join(f"{ns:.0f}" for ns in machine["chase_16mb_ns"]) if "chase_16mb_ns" in machine else "-"


def placement(rows, x):
    """Each default-thread run's ratio to the one-thread run of its round, beside the core-to-core
    round trip measured just before and after it: on a VM the host moves the two vCPUs between
    cores that share a cache and cores that do not, and what the threads exchange costs with it.
    Then how fast each vCPU reached memory (a 16 MB pointer chase, before the run) and where each
    run's steps ended: a workload that trains in one piece (W1) runs at the speed of its vCPU."""
    machine = core_to_core_by_round(rows)
    if not machine:
        return
    print()
    print("| workload | round | default threads / 1 thread | core-to-core round trip before, after (ns) "
          "| 16 MB chase on CPU 0, 1 before (ns) | steps ended on CPU 0, 1: 1 thread; default |")
    print("|---|---|---|---|---|---|")

    def shares(run):
        counts = run.get("steps_on_cpu", []) + [0, 0]
        total = sum(counts)
        return ", ".join(f"{counts[cpu] / total:.0%}" for cpu in (0, 1)) if total else "-"

    for workload in ("w1", "w2", "w4", "w5", "w6"):
        runs = {(r["round"], r.get("threads", 1)): r for r in rows
                if r["peer"] == x and r["workload"] == workload and "epoch_s_median" in r and r.get("round", 0) > 0}
        for round_ in sorted({k[0] for k in runs}):
            if (round_, 0) not in runs or (round_, 1) not in runs:
                continue
            before, after = machine.get((round_, f"before_{workload}")), machine.get((round_, f"after_{workload}"))
            if before is None or after is None:
                continue
            ratio = runs[(round_, 0)]["epoch_s_median"] / runs[(round_, 1)]["epoch_s_median"]
            print(f"| {workload.upper()} | {round_} | {ratio:.3f} | {before['round_trip_ns']:.0f}, "
                  f"{after['round_trip_ns']:.0f} | {chase_text(before)} | {shares(runs[(round_, 1)])}; {shares(runs[(round_, 0)])} |")


if __name__ == "__main__":
    main(sys.argv[1])
