#!/usr/bin/env bash
# Runs the GPU tests (CTest label "gpu") on a machine with NVIDIA GPUs, from the
# repo root, on a build folder configured with -DCOCONUT_CUDA=ON and built on
# another machine. Shared libraries that machine lacks come from a carried
# folder (tools/collect_gpu_libs.sh makes it). A missing GPU fails the tests
# here instead of skipping them (COCONUT_REQUIRE_GPU=1).
#   usage: tests/gpu/run.sh [build-dir=build-cuda] [lib-dir=.gpulibs]
set -euo pipefail
build=${1:-build-cuda}
libs=${2:-.gpulibs}
[ -f "$build/CMakeCache.txt" ] || { echo "run.sh: $build is not a CMake build folder" >&2; exit 2; }
if [ -d "$libs" ]; then export LD_LIBRARY_PATH="$(cd "$libs" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi

# CTest files and RPATHs hold the absolute paths of the machine that configured
# the build: when this checkout lives elsewhere, make the old path point here.
src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")
if [ -n "$src" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi

# Any library still unresolved (e.g. NCCL only inside a Python wheel): look for it.
for lib in $(ldd "$build/tests/gpu/test_cuda" | awk '/not found/ {print $1}'); do
  found=$(find /usr /opt /root -name "$lib" -not -path '*/proc/*' 2>/dev/null | head -n 1 || true)
  if [ -n "$found" ]; then export LD_LIBRARY_PATH="$(dirname "$found"):${LD_LIBRARY_PATH:-}"
  else echo "run.sh: $lib not found on this machine" >&2; fi
done

nvidia-smi || echo "run.sh: nvidia-smi failed" >&2
export COCONUT_REQUIRE_GPU=1
cd "$build" && ctest -L gpu --output-on-failure
