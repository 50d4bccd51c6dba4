#!/usr/bin/env bash
# Runs each libFuzzer target (clang, ASan + UBSan) for FUZZ_SECONDS seconds (default 60), seeded
# with tests/fuzz/seeds/<target> (fuzz_keras and fuzz_hdf5: the fixtures in tests/data/keras) and
# the earlier crashers in tests/fuzz/regressions/<target>. FUZZ_HDF5=1 adds fuzz_hdf5, which
# finds libhdf5's own hangs and crashes (docs/keras-files.md).
# A new crasher is copied into tests/fuzz/regressions/<target>/ (the test suite replays that
# folder) and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh clang libclang-rt-14-dev
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DXTNN_BUILD_FUZZERS=ON -DXTNN_BUILD_TESTS=OFF -DXTNN_BUILD_EXAMPLES=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -g"
cmake --build build-fuzz -j "$(nproc)"

seconds="${FUZZ_SECONDS:-60}"
failed=0
targets="idx model config keras"
if [ "${FUZZ_HDF5:-0}" = 1 ]; then targets="$targets hdf5"; fi
for target in $targets; do
  corpus="build-fuzz/corpus/$target"
  artifacts="build-fuzz/artifacts/$target/"
  seeds="tests/fuzz/seeds/$target"
  if [ "$target" = keras ] || [ "$target" = hdf5 ]; then seeds="tests/data/keras"; fi
  mkdir -p "$corpus" "$artifacts" "tests/fuzz/regressions/$target"
  echo "== fuzz_$target for $seconds s"
  # -malloc_limit_mb: one allocation above 512 MB counts as a crash (sizes come from the input).
  # -timeout: one input running 10 s is a hang, and fails the run.
  if ! build-fuzz/tests/fuzz/fuzz_$target -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
      -artifact_prefix="$artifacts" -print_final_stats=1 \
      "$corpus" "$seeds" "tests/fuzz/regressions/$target" 2>"build-fuzz/fuzz_$target.log"; then
    failed=1
    cp "$artifacts"* "tests/fuzz/regressions/$target/" 2>/dev/null || true
    tail -40 "build-fuzz/fuzz_$target.log"
    echo "fuzz_$target: FOUND A CRASH; the input is now in tests/fuzz/regressions/$target/"
  fi
  grep -E "^(stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb)" "build-fuzz/fuzz_$target.log" |
    sed "s/^/fuzz_$target: /"
done
exit "$failed"
