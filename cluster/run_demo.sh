#!/usr/bin/env bash
# The main job: install dependencies, build, then train a tiny Coconut model on running
# sums that it generates (configs/running_sum_tiny.yaml: 5 digits added modulo 10) through
# its curriculum with two pipeline ranks under mpirun (the latent passes circulate between
# them), evaluate after every epoch and print the accuracy table.
# Usage: bash cluster/run_demo.sh [--set key=value ...]   (overrides go to `coconut train`)
set -euo pipefail
cd "$(dirname "$0")/.."
bash cluster/bootstrap.sh
source cluster/env.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target coconut
# 4 micro-batches of 8 per step keep both pipeline stages busy (the ring schedule
# interleaves their latent passes); the loss is the same global-batch mean.
# tests/launcher/test_demo_learns.sh runs this same command line.
mpirun --oversubscribe -np 2 ./build/launcher/coconut train configs/running_sum_tiny.yaml --set parallel.pp=2 \
  --set train.micro_batch_size=8 "$@"
