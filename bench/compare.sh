#!/usr/bin/env bash
# xtnn against PyTorch on the MLP workloads W1, W2, W3 (../shared/bench), 1 thread, Fashion-MNIST:
# three rounds, each running xtnn and PyTorch back to back (A B A B) so drift hits both, plus
# OpenBLAS sgemm alone on W1's and W2's shapes (the floors) and xtnn with its default threads.
# Round r uses seed r - 1 in both frameworks, so accuracies are medians over three seeds. Peak
# RSS from /usr/bin/time -v. Prints the medians, their ratios and the targets as a Markdown table.
#
#   bench/compare.sh            (PEER_DIR=../shared/bench ROUNDS=3 EPOCHS=5 DATA=fashion)
#   CNN=1 bench/compare.sh      also W4 (3 epochs) and W5 on mnist10k against torch_cnn.py
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
# Runs a command under /usr/bin/time -v; appends its JSON lines with the round and peak RSS added.
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
    print(json.dumps(row))' "$out" "$round" "$rss_kb" >>"$results"
  rm -f "$out" "$err"
}

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  seed=$((round - 1))
  for workload in w1 w2; do
    measure "$round" build/bench/xtnn_mlp --workload "$workload" --threads 1 --data "$data" --epochs "$epochs" --seed "$seed"
    measure "$round" env OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 "$peer_dir/torch_mlp.py" \
      --workload "$workload" --threads 1 --data "$data" --epochs "$epochs" --seed "$seed"
  done
  measure "$round" build/bench/sgemm_floor 1 w1
  measure "$round" build/bench/sgemm_floor 1 w2
  measure "$round" build/bench/xtnn_mlp --workload w2 --threads 0 --data "$data" --epochs "$epochs" --seed "$seed"
  if [ "${CNN:-0}" = 1 ]; then
    for workload in w4 w5; do
      cnn_epochs=$([ "$workload" = w4 ] && echo 3 || echo 5)
      measure "$round" build/bench/xtnn_cnn --workload "$workload" --threads 1 --data mnist10k --epochs "$cnn_epochs" \
        --seed "$seed"
      measure "$round" env OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 "$peer_dir/torch_cnn.py" \
        --workload "$workload" --threads 1 --data mnist10k --epochs "$cnn_epochs" --seed "$seed"
    done
  fi
done
python3 bench/summarize.py "$results"
echo "raw results: $results" >&2
