// CublasContext (cublas_gemm.h): handle lifetime and the row-major sgemm mapping.
#include "runtime/cuda/cublas_gemm.h"

#include <algorithm>

#include "runtime/check.h"

namespace coconut {

// 32 MiB: what NVIDIA recommends for Hopper (cuBLAS docs, cublasSetWorkspace).
constexpr size_t kWorkspaceBytes = size_t(32) << 20;

CublasContext::CublasContext() : workspace_(kWorkspaceBytes) {
  CUBLAS_CHECK(cublasCreate(&handle_));
  CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
  CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(), workspace_.bytes()));
}

CublasContext::~CublasContext() {
  // A destructor must not throw; a failing destroy leaves nothing to retry.
  if (handle_) (void)cublasDestroy(handle_);
}

void CublasContext::set_stream(cudaStream_t stream) {
  CUBLAS_CHECK(cublasSetStream(handle_, stream));
  // cublasSetStream puts the handle back on cuBLAS's own workspace pool: ours again.
  CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(), workspace_.bytes()));
}

void CublasContext::sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                          const float* a, int lda, const float* b, int ldb, float beta, float* c,
                          int ldc) {
  COCONUT_CHECK(m >= 0 && n >= 0 && k >= 0, "sgemm: negative size m={} n={} k={}", m, n, k);
  // Row strides must cover a stored row: A is m x k (k x m if transposed), B is k x n (n x k).
  const int a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
  COCONUT_CHECK(lda >= std::max(1, a_cols), "sgemm: lda={} is less than A's {} columns", lda, a_cols);
  COCONUT_CHECK(ldb >= std::max(1, b_cols), "sgemm: ldb={} is less than B's {} columns", ldb, b_cols);
  COCONUT_CHECK(ldc >= std::max(1, n), "sgemm: ldc={} is less than C's {} columns", ldc, n);
  if (m == 0 || n == 0) return;
  // See the header: column-major C^T (n x m) = op(B)^T (n x k) * op(A)^T (k x m).
  CUBLAS_CHECK(cublasSgemm(handle_, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                           trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, a, lda,
                           &beta, c, ldc));
}

}  // namespace coconut
