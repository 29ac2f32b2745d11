// Row-major matrix products on the GPU through cuBLAS: the CUDA counterpart of
// coconut::sgemm (runtime/blas.h), with the same arguments, on device pointers.
#pragma once

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device.h"

namespace coconut {

// Owns one cuBLAS handle, bound to the device current at construction, and its
// workspace. Math is plain fp32 (CUBLAS_DEFAULT_MATH, no TF32 tensor cores): this is
// the reference path that the CPU backend is compared against. The workspace is ours
// (cublasSetWorkspace) so that products captured into a CUDA graph allocate nothing.
class CublasContext {
 public:
  CublasContext();
  ~CublasContext();
  CublasContext(const CublasContext&) = delete;
  CublasContext& operator=(const CublasContext&) = delete;

  cublasHandle_t handle() const { return handle_; }
  // Later calls are queued on `stream` (nullptr: the legacy default stream).
  void set_stream(cudaStream_t stream);

  // C[m, n] = alpha * op(A) op(B) + beta * C, all row-major, with op(X) = X or
  // X^T; lda/ldb/ldc are row strides as stored. Asynchronous on the stream.
  //
  // cuBLAS is column-major. A row-major matrix with row stride ld, read as
  // column-major with leading dimension ld, is its transpose. So row-major
  // C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: we call cuBLAS with
  // the operands swapped (B first, then A), the sizes swapped (n, m, k), and
  // the same transpose flags and strides as given.
  void sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
             const float* b, int ldb, float beta, float* c, int ldc);

 private:
  cublasHandle_t handle_ = nullptr;
  DeviceBuffer<char> workspace_;
};

}  // namespace coconut
