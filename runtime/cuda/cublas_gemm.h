// Row-major matrix products on the GPU through cuBLAS: the CUDA counterpart of
// coconut::sgemm (runtime/blas.h), with the same arguments, on device pointers.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>

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
  const void* workspace() const { return workspace_.data(); }  // captured graphs hold its address
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

  // bf16 products with work folded into cuBLASLt's epilogue, fp32 accumulation, all
  // row-major. Each returns false, having queued nothing, when cuBLASLt offers no
  // algorithm for these operands (or the GELU buffers are not 16-byte aligned with a
  // row length that is a multiple of 8); the caller then does the work itself.
  // The plan of each shape and pointer alignment (descriptors, the heuristic's algorithm)
  // is made on first use and kept, so later calls (and graph captures) only launch.
  //
  // out[N, OC] = inp[N, IC] W[IC, OC] + bias[OC]: one pass over out (instead of writing
  // the bias, then a product with beta = 1 reading it).
  bool linear_bias_bf16(const __nv_bfloat16* inp, const __nv_bfloat16* w, const __nv_bfloat16* bias,
                        __nv_bfloat16* out, int N, int IC, int OC);
  // pre[N, OC] = inp W + bias and out = gelu(pre) (tanh form, GPT-2's), both written by
  // the product (CUBLASLT_EPILOGUE_GELU_AUX_BIAS): no separate pass reading pre.
  bool linear_gelu_bf16(const __nv_bfloat16* inp, const __nv_bfloat16* w, const __nv_bfloat16* bias,
                        __nv_bfloat16* out, __nv_bfloat16* pre, int N, int IC, int OC);
  // dpre[N, IC] = (dout[N, OC] W[IC, OC]^T) * gelu'(pre[N, IC]): the input gradient of a
  // layer whose input was gelu(pre), carried through the GELU in the epilogue
  // (CUBLASLT_EPILOGUE_DGELU).
  bool linear_dgelu_bf16(const __nv_bfloat16* dout, const __nv_bfloat16* w, const __nv_bfloat16* pre,
                         __nv_bfloat16* dpre, int N, int IC, int OC);

 private:
  struct LtPlan;  // the cuBLASLt descriptors and algorithm of one shape (cublas_gemm.cpp)
  struct LtProduct;  // one product's operands and epilogue (cublas_gemm.cpp)
  bool lt_matmul(const LtProduct& product);
  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer<char> workspace_;  // shared by the cuBLAS and cuBLASLt calls, all on stream_
  cublasLtHandle_t lt_ = nullptr;
  // (epilogue, transpose of A, M, N, K, alignment of A, B, D, bias, aux) -> plan
  std::map<std::array<int64_t, 10>, std::unique_ptr<LtPlan>> lt_plans_;
};

}  // namespace coconut
