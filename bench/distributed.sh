#!/usr/bin/env bash
# Data-parallel training (issue 14) measured on this machine: W2 (Fashion-MNIST MLP, batch 128)
# and the book's CNN (W4 on the bundled digits, batch 64), each on 1 rank and on 2 ranks
# (mpirun -np 2) of 1 thread each, and as one process of 2 threads (the same split of every batch,
# summed in one address space: the reference for what 2 ranks can reach here), in interleaved
# rounds so that the machine's drift hits all of them. Each round also times what 2 ranks can reach
# at most: 2 processes that each train alone on their half of the samples and of every batch, with
# no exchange (--no-exchange), and W2's floor, its matrix products alone (OpenBLAS sgemm) for one
# rank's epoch and for each of 2 ranks' shards at once.
# The 2-rank and 2-thread runs sit between two measures of the core-to-core round trip
# (bench/core_to_core): on a VM the host moves the two vCPUs between cores that share a cache and
# cores that do not, from minute to minute, and what the ranks exchange costs with it.
# Prints the CPU, the medians, the speed-up and, from the measured step times and the bytes each
# step allreduces, the speed-up a ring allreduce model expects on 8, 32 and 64 machines
# (bench/scaling.py; its network figures are stated there).
#
#   bench/distributed.sh            (ROUNDS=3 EPOCHS_W2=4 EPOCHS_W4=3 REDUCTION=ring|allreduce|fixed_order)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-3}"
scripts/install-deps.sh dataset-fashion-mnist
scripts/build.sh >/dev/null

results="build/bench/distributed-$(date +%Y%m%d-%H%M%S).jsonl"
: >"$results"
mpirun=(mpirun -np 2)
# Open MPI refuses to start as root without these (and this machine's CI runs as root).
if [ "$(id -u)" -eq 0 ]; then mpirun+=(--allow-run-as-root); fi

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
python3 -c 'import json,sys; print(json.dumps({"peer": "machine", "cpu": sys.argv[1], "cores": int(sys.argv[2])}))' \
  "$cpu" "$(nproc)" >>"$results"

# Appends the training line (the first) of a run, with the round added.
record() {
  local round="$1"
  shift
  local output
  output=$("$@")
  python3 -c 'import json,sys
row = json.loads(sys.argv[2].splitlines()[0]); row["round"] = int(sys.argv[1]); print(json.dumps(row))' "$round" "$output" >>"$results"
}

# Appends the slower of the lines a command prints (each process of an mpirun prints one).
record_slowest() {
  local round="$1"
  shift
  "$@" | python3 -c 'import json,sys
rows = [json.loads(line) for line in sys.stdin if line.strip()]
row = max(rows, key=lambda r: r["epoch_s_median"]); row["round"] = int(sys.argv[1]); row["processes"] = len(rows)
print(json.dumps(row))' "$round" >>"$results"
}

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  w2=(build/bench/xtnn_mlp --workload w2 --data fashion --epochs "${EPOCHS_W2:-4}" --latency-calls 10
      --reduction "${REDUCTION:-ring}")
  w4=(build/bench/xtnn_cnn --workload w4 --data mnist10k --epochs "${EPOCHS_W4:-3}" --latency-calls 1 --thr-batches 1
      --reduction "${REDUCTION:-ring}")
  for workload in w2 w4; do
    declare -n run="$workload"
    record "$round" "${run[@]}" --threads 1
    record "$round" build/bench/core_to_core "before_$workload"
    record "$round" "${mpirun[@]}" "${run[@]}" --threads 1
    record "$round" "${run[@]}" --threads 2
    record "$round" build/bench/core_to_core "after_$workload"
    record_slowest "$round" "${mpirun[@]}" "${run[@]}" --threads 1 --no-exchange
  done
  record_slowest "$round" build/bench/sgemm_floor 1 w2 1
  record_slowest "$round" "${mpirun[@]}" build/bench/sgemm_floor 1 w2 2
done
echo "results: $results" >&2
python3 bench/scaling.py "$results"
