// Matrix products for the CPU backend, on top of CBLAS (OpenBLAS). Row-major throughout.
#pragma once

namespace coconut {

// OpenBLAS 0.3.21 (Debian 12) does not recognise recent Xeons and falls back to its
// SSE3 "Prescott" kernels, 4x slower than its AVX-512 ones on the same core. Called
// first thing in main(): when OPENBLAS_CORETYPE is unset and OpenBLAS picked such a
// generic kernel on a CPU with AVX2/AVX-512, sets OPENBLAS_CORETYPE to the matching
// kernel family and re-executes the program (OpenBLAS reads it only at load time).
// Does nothing when OPENBLAS_CORETYPE is already set, so the environment can override.
void select_blas_kernels(char** argv);
// The kernel family OpenBLAS is using ("SkylakeX", "Haswell", ...).
const char* blas_kernel_name();

// C[m, n] = alpha * op(A) op(B) + beta * C, row-major, with op(X) = X or X^T.
// lda/ldb/ldc are the row strides of A, B, C as stored.
void sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
           const float* b, int ldb, float beta, float* c, int ldc);

}  // namespace coconut
