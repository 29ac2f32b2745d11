// Matrix products for the CPU backend, on top of CBLAS (OpenBLAS). Row-major throughout.
#pragma once

namespace coconut {

// C[m, n] = alpha * op(A) op(B) + beta * C, row-major, with op(X) = X or X^T.
// lda/ldb/ldc are the row strides of A, B, C as stored.
void sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
           const float* b, int ldb, float beta, float* c, int ldc);

}  // namespace coconut
