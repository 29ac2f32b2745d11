#!/usr/bin/env bash
# Packs what a GPU machine needs beside this checkout into one gzip archive: the
# build folder's GPU test and benchmark binaries and the coconut command (gpu_train_cuda)
# with their CTest files (no object
# files), and the shared libraries that machine lacks (tools/collect_gpu_libs.sh
# --no-cuda --mpi, Open MPI included). A lent GPU machine takes at most 64 MiB beside
# the checkout; the folders themselves are over that, the archive about 25 MB.
#   usage: tests/gpu/pack.sh [build-dir=build-gpu] [archive=.gpurun/gpu-run.tar.gz]
# On the GPU machine, from the repo root:
#   tar -xzf .gpurun/gpu-run.tar.gz && bash tests/gpu/run.sh build-gpu .gpulibs
set -euo pipefail
build=${1:-build-gpu}
archive=${2:-.gpurun/gpu-run.tar.gz}
[ -f "$build/CMakeCache.txt" ] || { echo "pack.sh: $build is not a CMake build folder" >&2; exit 2; }
for bin in tests/gpu/test_cuda tests/gpu/test_cuda_ops tests/gpu/test_cuda_gpt2 tests/gpu/test_cuda_decoder tests/gpu/test_nccl_mpi \
           tests/gpu/test_device_step_mpi tests/gpu/test_pipeline_cuda_mpi \
           bench/coconut_gpu_bench launcher/coconut; do
  # Only a build that found nvcc (COCONUT_CUDA ON, or AUTO with the toolkit) has the GPU binaries.
  [ -x "$build/$bin" ] || { echo "pack.sh: $build/$bin is missing: build it first (with CUDA)" >&2; exit 2; }
done

rm -rf .gpulibs
bash tools/collect_gpu_libs.sh "$build" .gpulibs --no-cuda --mpi
# CTest reads CTestTestfile.cmake in every folder and the test lists that
# gtest_discover_tests wrote (*_tests.cmake, *_include.cmake) beside the binaries.
mapfile -t files < <(cd "$build" && find . -path ./CMakeFiles -prune -o \
  \( -name CTestTestfile.cmake -o -name '*_tests.cmake' -o -name '*_include.cmake' \) -print)
files+=(./CMakeCache.txt ./tests/gpu/test_cuda ./tests/gpu/test_cuda_ops ./tests/gpu/test_cuda_gpt2 ./tests/gpu/test_cuda_decoder
        ./tests/gpu/test_nccl_mpi ./tests/gpu/test_device_step_mpi ./tests/gpu/test_pipeline_cuda_mpi ./bench/coconut_gpu_bench ./launcher/coconut)
mkdir -p "$(dirname "$archive")"
# The ProsQA validation split for tests/gpu/prosqa.sh, where the GPU machine has no ../shared.
if [ -f ../shared/data/prosqa_valid.json ]; then cp ../shared/data/prosqa_valid.json "$(dirname "$archive")/"; fi
tar -czf "$archive" .gpulibs "${files[@]/#./$build}"
echo "pack.sh: $archive ($(du -h "$archive" | cut -f1)): ${#files[@]} files of $build and .gpulibs"
