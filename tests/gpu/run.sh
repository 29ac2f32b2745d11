#!/usr/bin/env bash
# Runs the GPU tests (CTest label "gpu") on a machine with NVIDIA GPUs, from the
# repo root, on a build folder configured with -DCOCONUT_CUDA=ON and built on
# another machine. Shared libraries that machine lacks come from a carried
# folder (tools/collect_gpu_libs.sh makes it; with --mpi it also holds Open MPI
# for the mpirun tests gpu_nccl_np1/np2). A missing GPU fails the tests
# here instead of skipping them (COCONUT_REQUIRE_GPU=1).
#   usage: tests/gpu/run.sh [build-dir=build-gpu] [lib-dir=.gpulibs]
# tests/gpu/pack.sh packs both into one archive for a machine that lacks them.
# COCONUT_GPU_BENCH_ARGS passes options to the benchmark (default: --seconds 120 --phases); sets
# of options separated by ';' run it once per set. COCONUT_GPU_NCU="OPTIONS[;OPTIONS]" then
# profiles one training step of the benchmark run with each set of OPTIONS under ncu
# (per-kernel GPU time, summed by tools/ncu_summary.py; add --rows to pick the
# configuration), into ncu-1.txt, ncu-2.txt, ... under COCONUT_GPU_OUT (default: here).
# COCONUT_GPU_PROSQA_MINUTES=M last runs tests/gpu/prosqa.sh for M minutes (see the end).
set -euo pipefail
build=${1:-build-gpu}
libs=${2:-.gpulibs}
[ -f "$build/CMakeCache.txt" ] || { echo "run.sh: $build is not a CMake build folder" >&2; exit 2; }
if [ -d "$libs" ]; then export LD_LIBRARY_PATH="$(cd "$libs" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi

# CTest files and RPATHs hold the absolute paths of the machine that configured
# the build: when this checkout lives elsewhere, make the old path point here.
src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")
if [ -n "$src" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi

# Open MPI carried by tools/collect_gpu_libs.sh --mpi, for the mpirun tests (gpu_nccl_np*)
# on a machine without it; OPAL_PREFIX relocates it to where it was carried.
if [ -d "$libs/openmpi/bin" ]; then
  export OPAL_PREFIX="$(cd "$libs/openmpi" && pwd)"
  export PATH="$OPAL_PREFIX/bin:$PATH"
  ompi_libdir=$(dirname "$(find "$OPAL_PREFIX" -name 'libmpi.so*' | head -n 1)")
  export LD_LIBRARY_PATH="$ompi_libdir:$LD_LIBRARY_PATH"
fi
# CTest starts mpiexec by the path it had on the machine that configured the build.
mpiexec=$(sed -n 's/^MPIEXEC_EXECUTABLE:FILEPATH=//p' "$build/CMakeCache.txt")
if [ -n "$mpiexec" ] && [ ! -x "$mpiexec" ]; then
  if command -v mpirun >/dev/null; then mkdir -p "$(dirname "$mpiexec")" && ln -sf "$(command -v mpirun)" "$mpiexec"
  else echo "run.sh: no mpirun here (carry one: tools/collect_gpu_libs.sh --mpi): the gpu_nccl tests will fail" >&2; fi
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# Any library still unresolved (e.g. NCCL only inside a Python wheel): look for it.
for lib in $(ldd "$build/tests/gpu/test_cuda" "$build/tests/gpu/test_nccl_mpi" 2>/dev/null |
             awk '/not found/ {print $1}' | sort -u); do
  found=$(find /usr /opt /root -name "$lib" -not -path '*/proc/*' 2>/dev/null | head -n 1 || true)
  if [ -n "$found" ]; then export LD_LIBRARY_PATH="$(dirname "$found"):${LD_LIBRARY_PATH:-}"
  else echo "run.sh: $lib not found on this machine" >&2; fi
done

nvidia-smi || echo "run.sh: nvidia-smi failed" >&2
export COCONUT_REQUIRE_GPU=1
# The tests first; then the 2-minute training benchmark (bench/gpu_train.cpp, with its
# PyTorch peer), which runs even when a test failed. The exit status is the tests'.
# COCONUT_GPU_BENCH=0 skips the benchmark.
status=0
start=$SECONDS
(cd "$build" && ctest -L gpu --output-on-failure --timeout 180) || status=$?
echo "run.sh: gpu tests took $((SECONDS - start)) s (exit status $status)"
if [ "${COCONUT_GPU_BENCH:-1}" = 1 ] && [ -x "$build/bench/coconut_gpu_bench" ]; then
  IFS=';' read -ra option_sets <<< "${COCONUT_GPU_BENCH_ARGS:---seconds 120 --phases}"
  for options in "${option_sets[@]}"; do
    start=$SECONDS
    echo "run.sh: coconut_gpu_bench $options"
    # shellcheck disable=SC2086 # the options are words
    "$build/bench/coconut_gpu_bench" $options || echo "run.sh: the GPU benchmark failed" >&2
    echo "run.sh: the benchmark took $((SECONDS - start)) s"
  done
fi
if [ -n "${COCONUT_GPU_NCU:-}" ]; then
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1 || true)
  if [ -z "$ncu" ]; then echo "run.sh: no ncu on this machine" >&2
  else
    IFS=';' read -ra ncu_sets <<< "$COCONUT_GPU_NCU"
    for k in "${!ncu_sets[@]}"; do
      out=${COCONUT_GPU_OUT:-.}/ncu-$((k + 1)).txt
      start=$SECONDS
      echo "run.sh: ncu (one step): coconut_gpu_bench ${ncu_sets[$k]}"
      # shellcheck disable=SC2086 # the options are words
      "$ncu" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
        "$build/bench/coconut_gpu_bench" ${ncu_sets[$k]} --seconds 0 --no-torch --profile-step >"$out" 2>&1 ||
        echo "run.sh: ncu failed (see $out)" >&2
      python3 tools/ncu_summary.py "$out" --top 30 || true
      echo "run.sh: ncu took $((SECONDS - start)) s"
    done
  fi
fi
# COCONUT_GPU_PROSQA_MINUTES=M then runs tests/gpu/prosqa.sh for M minutes (CoT, Coconut
# and no_curriculum on ProsQA, issue #8); its table, logs and metrics go to
# COCONUT_GPU_OUT/prosqa.
if [ -n "${COCONUT_GPU_PROSQA_MINUTES:-}" ]; then
  start=$SECONDS
  echo "run.sh: tests/gpu/prosqa.sh $build $COCONUT_GPU_PROSQA_MINUTES"
  bash tests/gpu/prosqa.sh "$build" "$COCONUT_GPU_PROSQA_MINUTES" runs/prosqa-gpu || echo "run.sh: prosqa.sh failed" >&2
  keep=${COCONUT_GPU_OUT:-.}/prosqa
  mkdir -p "$keep"
  cp runs/prosqa-gpu/table.md runs/prosqa-gpu/*.log "$keep/" 2>/dev/null || true
  for run in runs/prosqa-gpu/*/metrics.jsonl; do
    cp "$run" "$keep/$(basename "$(dirname "$run")")-metrics.jsonl" 2>/dev/null || true
  done
  echo "run.sh: prosqa.sh took $((SECONDS - start)) s"
fi
exit $status
