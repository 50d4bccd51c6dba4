#!/usr/bin/env bash
# The threading tests (tests/test_threads.cpp) under ThreadSanitizer, with the whole library
# instrumented: any data race in xtnn fails the run. OpenBLAS is not instrumented, and its worker
# threads hand results back through memory the sanitizer cannot see (every product would be
# reported), so it runs on the calling threads here (OPENBLAS_NUM_THREADS=1): what is checked is
# xtnn's own code across the threads that call it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# AVX2 instead of -march=native, as scripts/sanitize.sh (g++ 12's sanitizer builds and AVX-512).
flags="-fsanitize=thread -fno-omit-frame-pointer -g -mavx2 -mfma"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DXTNN_NATIVE=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" \
  -DXTNN_BUILD_EXAMPLES=OFF -DXTNN_BUILD_BENCH=OFF
cmake --build build-tsan -j "$(nproc)" --target xtnn_tests
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan-suppressions.txt"
export OPENBLAS_NUM_THREADS=1
ctest --test-dir build-tsan --output-on-failure --verbose --timeout 1200 -R '^test_threads$'
