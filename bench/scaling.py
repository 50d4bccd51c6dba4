#!/usr/bin/env python3
"""Summarizes bench/distributed.sh's runs and models data-parallel training on more machines.

Measured (medians over rounds): seconds per epoch on 1 and 2 ranks of 1 thread, on one process
of 2 threads (the same split of every batch without MPI) and on 2 processes that train alone on
their halves of the samples and of every batch (the compute of 2 ranks without any exchange: the
slower of the two; what 2 ranks can reach at most), the speed-ups, the bytes each step sums
over the ranks (every weight's gradient as float32, `fused_bytes_per_step`); and W2's floor, its
matrix products alone for one rank's epoch and for 2 ranks' shards at once (the slower of the two),
which bounds what any exchange can reach. And, for each round of W2, the exchange's cost a step
beside the time to read the 940 KB each rank takes from the other every step (bench/core_to_core's
`w2_read_us`, from this CPU's own writes and from the other's).

Modelled: one rank of one thread per machine, the global batch unchanged, each rank computing
1/N of every step (the measured one-rank step time / N; optimistic for small batches: W2's 128
rows leave 2 per rank on 64 machines) plus a ring allreduce of the fused gradients,
    2 (N - 1) alpha + 2 (N - 1) / N * bytes / beta,
plus two latency-bound collectives per step (the figures' allgather and the stop flag),
2 ceil(log2 N) alpha. Networks: 10 Gb/s Ethernet over TCP (beta 1.25 GB/s, alpha 25 us) and
100 Gb/s InfiniBand (beta 12.5 GB/s, alpha 2 us), nominal figures, not measured here.

    python3 bench/scaling.py build/bench/distributed-YYYYMMDD-HHMMSS.jsonl
"""
import json
import math
import statistics
import sys

from summarize import chase_text, core_to_core_by_round

NETWORKS = [("10 Gb/s Ethernet (1.25 GB/s, 25 us)", 1.25e9, 25e-6), ("100 Gb/s InfiniBand (12.5 GB/s, 2 us)", 12.5e9, 2e-6)]
MACHINES = [8, 32, 64]


def step_time(n, compute, nbytes, beta, alpha):
    if n == 1:
        return compute
    ring = 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes / beta
    small = 2 * math.ceil(math.log2(n)) * alpha
    return compute / n + ring + small


def epochs(rows, workload, round_=None):
    """A workload's epoch seconds by kind of run (of one round, or of all): one rank of one thread,
    2 ranks, one process of 2 threads, and 2 processes that do not exchange."""
    runs = [r for r in rows if r.get("workload") == workload and "epoch_s_median" in r
            and (round_ is None or r["round"] == round_)]
    kinds = {"one": [], "ranks": [], "threads": [], "alone": []}
    for r in runs:
        if r["ranks"] == 2:
            kinds["alone" if r.get("no_exchange") else "ranks"].append(r["epoch_s_median"])
        elif r["threads"] == 1:
            kinds["one"].append(r["epoch_s_median"])
        elif r["threads"] == 2:
            kinds["threads"].append(r["epoch_s_median"])
    return kinds


def steps_per_epoch(rows, workload):
    sample = next(r for r in rows if r.get("workload") == workload and "epoch_s_median" in r)
    return math.ceil(sample["n_train"] / sample["batch"])


def placement(rows):
    """Each round's speed-ups beside the core-to-core round trip measured before the 2-rank run and
    after the 2-thread one (bench/core_to_core): where the host placed the two vCPUs; and how fast
    each vCPU reached memory before (a 16 MB pointer chase): the slower one sets the pace of both."""
    machine = core_to_core_by_round(rows)
    if not machine:
        return
    print()
    print("| workload | round | 2 ranks speed-up | 2 threads speed-up | core-to-core round trip before, after (ns) "
          "| 16 MB chase on CPU 0, 1 before (ns) |")
    print("|---|---|---|---|---|---|")
    for workload in ["w2", "w4"]:
        for round_ in sorted({r["round"] for r in rows if r.get("workload") == workload}):
            one, ranks, threads = (epochs(rows, workload, round_)[kind] for kind in ("one", "ranks", "threads"))
            before, after = machine.get((round_, f"before_{workload}")), machine.get((round_, f"after_{workload}"))
            if not (one and ranks and threads) or before is None or after is None:
                continue
            print(f"| {workload} | {round_} | {one[0] / ranks[0]:.2f}x | {one[0] / threads[0]:.2f}x "
                  f"| {before['round_trip_ns']:.0f}, {after['round_trip_ns']:.0f} | {chase_text(before)} |")


def w2_exchange(rows):
    """Each W2 round's exchange cost a step on 2 ranks (the 2-rank epoch less the no-exchange one,
    over the steps) beside what reading the values that cross costs there: W2's 940 KB (half the
    summed gradient and half the new weights, which a rank of 2 takes from the other each step)
    copied from this CPU's own writes and from the other CPU's (bench/core_to_core, before the
    2-rank run). The no-exchange processes each update all of the weights, the ranks half, so the
    difference is not a floor: it is the exchange's price net of the update it halves."""
    machine = core_to_core_by_round(rows)
    lines = []
    for round_ in sorted({r["round"] for r in rows if r.get("workload") == "w2"}):
        one, ranks, alone = (epochs(rows, "w2", round_)[kind] for kind in ("one", "ranks", "alone"))
        before = machine.get((round_, "before_w2"), {})
        if not (one and ranks and alone) or "w2_read_us" not in before:
            continue
        local, across = before["w2_read_us"]
        steps = steps_per_epoch(rows, "w2")
        lines.append(f"| {round_} | {one[0] / ranks[0]:.2f}x | {one[0] / alone[0]:.2f}x "
                     f"| {(ranks[0] - alone[0]) / steps * 1e6:.0f} us | {local:.1f}, {across:.1f} us |")
    if not lines:
        return
    print()
    print("W2 on 2 ranks by round: the exchange's cost a step beside the cost of reading the 940 KB that cross:")
    print()
    print("| round | 2 ranks speed-up | no exchange | exchange's cost a step | 940 KB read from own, other CPU's writes |")
    print("|---|---|---|---|---|")
    print("\n".join(lines))


def main(path):
    rows = [json.loads(line) for line in open(path)]
    machine = next(r for r in rows if r.get("peer") == "machine")
    print(f"CPU: {machine['cpu']} ({machine['cores']} cores); {path}")
    print()
    print("| workload | 1 rank s/epoch | 2 ranks s/epoch | speed-up | target | 1 process, 2 threads | its speed-up "
          "| 2 ranks, no exchange | its speed-up | steps/epoch | bytes allreduced/step | exchange cost/step on 2 ranks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    models = []
    for workload in ["w2", "w4"]:
        kinds = epochs(rows, workload)
        if not kinds["one"]:
            continue
        one = statistics.median(kinds["one"])
        two = statistics.median(kinds["ranks"])
        alone = statistics.median(kinds["alone"]) if kinds["alone"] else None
        ceiling = f"{alone:.3f} | {one / alone:.2f}x" if alone else "- | -"
        threads = kinds["threads"]
        threaded = f"{statistics.median(threads):.3f} | {one / statistics.median(threads):.2f}x" if threads else "- | -"
        steps = steps_per_epoch(rows, workload)
        nbytes = next(r for r in rows if r.get("workload") == workload and "epoch_s_median" in r)["fused_bytes_per_step"]
        # What 2 ranks spend per step beyond their compute alone (or, unmeasured, half of one rank's
        # step): the exchange, on this machine.
        exchange = (two - alone) / steps if alone else two / steps - one / steps / 2
        print(f"| {workload} | {one:.3f} | {two:.3f} | {one / two:.2f}x | >= 1.7x: {'yes' if one / two >= 1.7 else 'NO'} | "
              f"{threaded} | {ceiling} | {steps} | {nbytes / 1e6:.2f} MB | {exchange * 1e6:.0f} us |")
        models.append((workload, one / steps, nbytes))
    placement(rows)
    w2_exchange(rows)
    floors = [r for r in rows if r.get("workload") == "sgemm_floor_w2"]
    if floors:
        one = statistics.median(r["epoch_s_median"] for r in floors if r["shards"] == 1)
        two = statistics.median(r["epoch_s_median"] for r in floors if r["shards"] == 2)
        print()
        print("W2's floor, its matrix products alone (OpenBLAS sgemm, 1 thread a process):")
        print()
        print("| 1 rank s/epoch | 2 ranks s/epoch (slower shard) | speed-up | every round's speed-up |")
        print("|---|---|---|---|")
        by_round = {}
        for r in floors:
            by_round.setdefault(r["round"], {})[r["shards"]] = r["epoch_s_median"]
        rounds = ", ".join(f"{t[1] / t[2]:.2f}x" for _, t in sorted(by_round.items()) if 1 in t and 2 in t)
        print(f"| {one:.3f} | {two:.3f} | {one / two:.2f}x | {rounds} |")
    print()
    for name, beta, alpha in NETWORKS:
        print(f"Modelled speed-up over one machine, {name}:")
        print()
        print("| workload | one-rank step | " + " | ".join(f"{n} machines" for n in MACHINES) + " | best | stops scaling at |")
        print("|---|---|" + "---|" * len(MACHINES) + "---|---|")
        for workload, compute, nbytes in models:
            speedups = {n: compute / step_time(n, compute, nbytes, beta, alpha) for n in range(1, 1025)}
            best = max(speedups, key=speedups.get)
            # Where adding machines stops paying: efficiency (speed-up / N) below one half.
            half = next((n for n in range(2, 1025) if speedups[n] / n < 0.5), None)
            cells = " | ".join(f"{speedups[n]:.1f}x" for n in MACHINES)
            print(f"| {workload} | {compute * 1e3:.2f} ms | {cells} | {speedups[best]:.1f}x on {best} | "
                  f"efficiency < 50% from {half} machines |")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
