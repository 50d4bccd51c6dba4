#!/usr/bin/env bash
# The main job: installs what is missing, builds (Release), and trains the book's network on the
# bundled MNIST digits. Extra arguments go to the example (try --epochs 3 or --optimizer sgd).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec build/examples/mnist_mlp --data datasets/mnist-10k "$@"
