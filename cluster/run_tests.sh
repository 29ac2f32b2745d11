#!/usr/bin/env bash
# The test command: install dependencies, configure, build (CPU, and CUDA when nvcc is
# present), run every test with CTest. Tests that need a GPU report as skipped here.
# Usage: bash cluster/run_tests.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bash cluster/bootstrap.sh
source cluster/env.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 600
