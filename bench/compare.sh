#!/usr/bin/env bash
# xtnn against PyTorch and against the hardware on the workloads of ../shared/bench, measured in
# one run: three rounds, each running xtnn (1 thread, then its default threads) and PyTorch
# (1 thread) back to back so drift hits all of them, the default-thread runs between two measures of
# the core-to-core round trip (bench/core_to_core), plus the floors of the same run: OpenBLAS
# sgemm alone on W1's and W2's products, and the one-thread sgemm rate on 1024^3 that defines the
# CNNs' FLOP floors (3x the forward FLOPs that torch_cnn.py --flops counts). Round r uses seed r - 1
# in both frameworks, so accuracies are medians over three seeds (W6's over EXTRA_W6_SEEDS=6 more,
# untimed). Peak RSS from /usr/bin/time -v.
# Prints the CPU, then the medians, their ratios (and each round's ratio) and issue 15's targets
# as a Markdown table.
#
#   bench/compare.sh            (PEER_DIR=../shared/bench ROUNDS=3 EPOCHS=5 DATA=fashion)
#   CNN=1 bench/compare.sh      also W4 (3 epochs), W5 (5) and W6 (3) on mnist10k
set -euo pipefail
cd "$(dirname "$0")/.."
peer_dir="${PEER_DIR:-../shared/bench}"
rounds="${ROUNDS:-3}"
epochs="${EPOCHS:-5}"
data="${DATA:-fashion}"
scripts/install-deps.sh python3-torch python3-numpy time dataset-fashion-mnist
scripts/build.sh >/dev/null

results="build/bench/compare-$(date +%Y%m%d-%H%M%S).jsonl"
: >"$results"
# Runs a command under /usr/bin/time -v; appends its JSON lines with the round and peak RSS added
# (and "variant": $variant when set).
variant=""
measure() {
  local round="$1"
  shift
  local out err
  out=$(mktemp) err=$(mktemp)
  /usr/bin/time -v "$@" >"$out" 2>"$err" || { cat "$err" >&2; exit 1; }
  local rss_kb
  rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$err")
  python3 -c 'import json,sys
for line in open(sys.argv[1]):
    row = json.loads(line); row["round"] = int(sys.argv[2]); row["peak_rss_mb"] = int(sys.argv[3]) / 1024
    if sys.argv[4]: row["variant"] = sys.argv[4]
    print(json.dumps(row))' "$out" "$round" "$rss_kb" "$variant" >>"$results"
  rm -f "$out" "$err"
}

# A run on the default threads, between two measures of how far apart the host has placed the
# first two CPUs (bench/core_to_core): on a VM that changes from minute to minute, and the threads'
# exchange with it.
default_threads() {
  local round="$1" workload="$2"
  shift 2
  measure "$round" build/bench/core_to_core "before_$workload"
  measure "$round" "$@"
  measure "$round" build/bench/core_to_core "after_$workload"
}

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
avx512=$(grep -q -w avx512f /proc/cpuinfo && echo yes || echo no)
python3 -c 'import json,sys; print(json.dumps({"peer": "machine", "workload": "cpu", "cpu": sys.argv[1], "avx512": sys.argv[2] == "yes", "cores": int(sys.argv[3])}))' \
  "$cpu" "$avx512" "$(nproc)" >>"$results"
if [ "${CNN:-0}" = 1 ]; then
  /usr/bin/python3 "$peer_dir/torch_cnn.py" --flops | python3 -c 'import json,sys
for line in sys.stdin:
    row = json.loads(line)
    if row["n_train"] == 8000: row["peer"] = "flops"; print(json.dumps(row))' >>"$results"
fi

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  seed=$((round - 1))
  measure "$round" build/bench/sgemm_floor 1 rate
  # Where the environment forces OpenBLAS's kernels (this workplace sets OPENBLAS_CORETYPE on
  # some CPUs, for older OpenBLAS builds' sake), the rate of the kernels OpenBLAS would pick for
  # the CPU itself, unset in this one command: a floor for the record, beside the run's own.
  if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
    variant=openblas_for_this_cpu
    measure "$round" env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE build/bench/sgemm_floor 1 rate
    variant=""
  fi
  for workload in w1 w2; do
    measure "$round" build/bench/xtnn_mlp --workload "$workload" --threads 1 --data "$data" --epochs "$epochs" --seed "$seed"
    measure "$round" env OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 "$peer_dir/torch_mlp.py" \
      --workload "$workload" --threads 1 --data "$data" --epochs "$epochs" --seed "$seed"
    default_threads "$round" "$workload" build/bench/xtnn_mlp --workload "$workload" --threads 0 --data "$data" \
      --epochs "$epochs" --seed "$seed"
    measure "$round" build/bench/sgemm_floor 1 "$workload"
  done
  if [ "${CNN:-0}" = 1 ]; then
    for workload in w4 w5 w6; do
      cnn_epochs=$([ "$workload" = w5 ] && echo 5 || echo 3)
      measure "$round" build/bench/xtnn_cnn --workload "$workload" --threads 1 --data mnist10k --epochs "$cnn_epochs" \
        --seed "$seed"
      measure "$round" env OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 "$peer_dir/torch_cnn.py" \
        --workload "$workload" --threads 1 --data mnist10k --epochs "$cnn_epochs" --seed "$seed"
      default_threads "$round" "$workload" build/bench/xtnn_cnn --workload "$workload" --threads 0 --data mnist10k \
        --epochs "$cnn_epochs" --seed "$seed"
    done
  fi
done
# W6's test accuracy after 3 epochs swings by 0.2 from seed to seed in both frameworks (the
# BatchNormalization moving statistics still lag): its accuracy target is judged on the median
# of more seeds, runs that are marked round 0 and not timed.
if [ "${CNN:-0}" = 1 ]; then
  for seed in $(seq "$rounds" $((rounds + ${EXTRA_W6_SEEDS:-6} - 1))); do
    echo "W6 accuracy, seed $seed" >&2
    measure 0 build/bench/xtnn_cnn --workload w6 --threads 1 --data mnist10k --epochs 3 --seed "$seed" \
      --latency-calls 1 --lat-warmup 0 --thr-batches 1
    measure 0 env OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 "$peer_dir/torch_cnn.py" --workload w6 --threads 1 \
      --data mnist10k --epochs 3 --seed "$seed" --latency-calls 1 --lat-warmup 0 --thr-batches 1
  done
fi
python3 bench/summarize.py "$results"
echo "raw results: $results" >&2
