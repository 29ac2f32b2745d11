// Device code of the CUDA backend (see kernels.h). Kept in one translation unit
// so that nvcc, the slow part of the build, runs once.
#include "runtime/cuda/kernels.h"

#include <algorithm>

#include "runtime/cuda/cuda_check.h"

namespace coconut {

namespace {

// Grid-stride loop: any grid size covers any count.
__global__ void fill_f32_kernel(float* data, size_t count, float value) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    data[i] = value;
  }
}

}  // namespace

void fill_f32(float* data, size_t count, float value, cudaStream_t stream) {
  if (count == 0) return;
  constexpr int kThreads = 256;
  // Enough blocks to fill the largest GPUs several times over; the loop does the rest.
  const int blocks = static_cast<int>(std::min<size_t>((count + kThreads - 1) / kThreads, 4096));
  fill_f32_kernel<<<blocks, kThreads, 0, stream>>>(data, count, value);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace coconut
