// Small CUDA kernels of the backend, callable from plain C++ (kernels.cu holds
// the device code). The skeleton has one, which also proves that the fatbinary
// carries code the GPU can run (sm_90 machine code, PTX for newer chips).
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

namespace coconut {

// data[0, count) = value, queued on `stream`.
void fill_f32(float* data, size_t count, float value, cudaStream_t stream = nullptr);

}  // namespace coconut
