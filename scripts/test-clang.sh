#!/usr/bin/env bash
# The test suite built with clang and libc++ instead of g++ and libstdc++: the pinned seed-42
# values and every other test must pass with both standard libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh clang libc++-dev libc++abi-dev
# Examples and benchmarks are left out: the suite is what must agree across standard libraries.
# When the g++ build is there (scripts/test.sh builds it first), its training tool is the peer of
# the cross_library test: a run saved by either build resumes exactly in the other.
peer=""
if [ -x build/tests/xtnn_train_run ]; then peer="$PWD/build/tests/xtnn_train_run"; fi
CC=clang CXX=clang++ cmake -S . -B build-clang -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS="-stdlib=libc++" -DCMAKE_EXE_LINKER_FLAGS="-stdlib=libc++" -DXTNN_FMT_HEADER_ONLY=ON \
  -DXTNN_BUILD_EXAMPLES=OFF -DXTNN_BUILD_BENCH=OFF -DXTNN_PEER_TRAIN_RUN="$peer"
cmake --build build-clang -j "$(nproc)"
ctest --test-dir build-clang --output-on-failure --verbose --timeout 600
