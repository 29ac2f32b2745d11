// Error checks for CUDA, cuBLAS and NCCL calls. Each macro evaluates the call
// once and, on failure, throws coconut::Error (runtime/check.h) naming the
// library's error code, its description, the call as written, and file:line.
//
//   CUDA_CHECK(cudaMalloc(&p, bytes));
//   CUBLAS_CHECK(cublasCreate(&handle));
//   NCCL_CHECK(ncclAllReduce(...));
//
// Kernel launches return nothing: follow them with CUDA_CHECK(cudaGetLastError()).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

namespace coconut {

// Out of line so the macros stay small at every call site.
[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file,
                                     int line);
[[noreturn]] void throw_nccl_error(ncclResult_t status, const char* call, const char* file,
                                   int line);

}  // namespace coconut

#define CUDA_CHECK(call)                                                                \
  do {                                                                                  \
    const cudaError_t coconut_status_ = (call);                                         \
    if (coconut_status_ != cudaSuccess) [[unlikely]] {                                  \
      ::coconut::throw_cuda_error(coconut_status_, #call, __FILE__, __LINE__);          \
    }                                                                                   \
  } while (0)

#define CUBLAS_CHECK(call)                                                              \
  do {                                                                                  \
    const cublasStatus_t coconut_status_ = (call);                                      \
    if (coconut_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]] {                        \
      ::coconut::throw_cublas_error(coconut_status_, #call, __FILE__, __LINE__);        \
    }                                                                                   \
  } while (0)

#define NCCL_CHECK(call)                                                                \
  do {                                                                                  \
    const ncclResult_t coconut_status_ = (call);                                        \
    if (coconut_status_ != ncclSuccess) [[unlikely]] {                                  \
      ::coconut::throw_nccl_error(coconut_status_, #call, __FILE__, __LINE__);          \
    }                                                                                   \
  } while (0)
