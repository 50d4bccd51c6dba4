#!/usr/bin/env bash
# Installs the Debian packages xtnn builds with, if any are missing. Sourced or run by
# scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config
  libxtensor-dev xtl-dev libxsimd-dev libopenblas-dev
  doctest-dev libfmt-dev zlib1g-dev nlohmann-json3-dev libcli11-dev
  libhdf5-dev libzip-dev
  libopenmpi-dev openmpi-bin
  "$@"
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "xtnn: installing missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "xtnn: cannot install packages (not root, and no password-less sudo)." >&2
  echo "xtnn: please run: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
