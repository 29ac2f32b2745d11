// Device-buffer helpers shared by the CUDA model's sources (cuda_gpt2.cpp,
// cuda_multipass.cpp, cuda_decoder.cpp) and the pipeline's CUDA stage
// (parallel/cuda_stage_compute.cpp): growing a buffer, clearing and copying device
// memory on a stream.
#pragma once

#include <cstddef>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device.h"

namespace coconut::model::cuda_buffers {

// Grows a device buffer to at least n elements (contents are not kept).
template <typename T>
void ensure(DeviceBuffer<T>& buffer, size_t n) {
  if (buffer.size() < n) buffer = DeviceBuffer<T>(n);
}

template <typename T>
void zero(T* p, size_t n, cudaStream_t stream) {  // all-zero bits are 0.0 in fp32 and bf16
  CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(T), stream));
}

template <typename T>
void copy(T* dst, const T* src, size_t n, cudaStream_t stream) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, stream));
}

}  // namespace coconut::model::cuda_buffers
