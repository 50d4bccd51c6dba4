#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test with g++ and libstdc++,
# then again with clang and libc++ (scripts/test-clang.sh; XTNN_SKIP_CLANG=1 skips that half).
# Exit status 0 = all passed.
set -euo pipefail
cd "$(dirname "$0")/.."
# python3-h5py: the test-time peer that checks the .keras files xtnn writes against Keras's.
if [ "${XTNN_SKIP_CLANG:-0}" = 1 ]; then
  scripts/install-deps.sh python3-h5py
else
  scripts/install-deps.sh python3-h5py clang libc++-dev libc++abi-dev
fi
scripts/build.sh
# --verbose shows doctest's own counts of test cases and assertions for every test file.
ctest --test-dir build --output-on-failure --verbose --timeout 600
if [ "${XTNN_SKIP_CLANG:-0}" != 1 ]; then
  echo "== the same suite with clang and libc++"
  scripts/test-clang.sh
fi
