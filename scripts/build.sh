#!/usr/bin/env bash
# Configures and builds xtnn (Release) into build/ with all cores. Extra arguments go to CMake.
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
else
  cmake -S . -B build "$@"
fi
cmake --build build -j "$(nproc)"
