#!/usr/bin/env bash
# The whole test suite under AddressSanitizer (with LeakSanitizer) and UndefinedBehaviorSanitizer:
# any finding fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# AVX2 instead of -march=native: on an AVX-512 machine (a Zen 5) g++ 12's AddressSanitizer build
# crashed in BatchNormalization's per-channel sums (SIGSEGV reading 0x1119 in
# per_channel<double, 8>, ops_internal.hpp), with or without -ffp-contract=off, where the same
# code passes under ASan on AVX2 and passes un-instrumented on AVX-512 (g++ and clang).
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -mavx2 -mfma"
# Examples and benchmarks are left out: the library and everything the tests run are instrumented.
cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DXTNN_NATIVE=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DXTNN_BUILD_EXAMPLES=OFF -DXTNN_BUILD_BENCH=OFF -DXTNN_UNITY_BUILD=OFF
cmake --build build-sanitize -j "$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-sanitize --output-on-failure --verbose --timeout 1200
