#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test. Exit status 0 = all passed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
# --verbose shows doctest's own counts of test cases and assertions for every test file.
ctest --test-dir build --output-on-failure --verbose --timeout 600
