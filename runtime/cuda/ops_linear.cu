// Linear layers of ops.h on cuBLAS: fp32 through CublasContext::sgemm (plain fp32, no
// TF32), bf16 through cublasGemmEx with fp32 accumulation (the forward with a bias
// through cuBLASLt, the bias in the epilogue, and the MLP's GELU and its gradient in the
// epilogues of the products around it); plus the two small kernels they need (bias
// broadcast where the epilogue is not used, bias gradient as column sums).
#include "runtime/check.h"
#include "runtime/cuda/ops_common.cuh"

namespace coconut::gpu {
namespace {

using detail::grid_for;
using detail::kThreads;
using detail::load;
using detail::store;

cudaStream_t stream_of(CublasContext& cublas) {
  cudaStream_t stream = nullptr;
  CUBLAS_CHECK(cublasGetStream(cublas.handle(), &stream));
  return stream;
}

// out[r, c] = bias[c]: the GEMM then adds inp W with beta = 1 (as the CPU op).
template <typename T>
__global__ void broadcast_rows_kernel(T* out, const T* bias, int N, int OC) {
  const int64_t total = int64_t(N) * OC;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = bias[i % OC];
}

// Stage 1 of acc[c] += sum over rows of x[r, c] (ops_common.cuh): chunk blockIdx.y of
// `chunk` rows, into acc (one chunk) or into partial row blockIdx.y.
template <typename T>
__global__ void __launch_bounds__(detail::kColTile * detail::kColTile)
    column_sums_kernel(float* acc, float* partial, const T* x, int N, int C, int chunk) {
  __shared__ float tile[detail::kColTile][detail::kColTile + 1];
  const int c = blockIdx.x * detail::kColTile + threadIdx.x;
  const int r0 = blockIdx.y * chunk, r1 = min(N, r0 + chunk);
  float s = 0.f;
  if (c < C)
    for (int r = r0 + threadIdx.y; r < r1; r += detail::kColTile) s += load(x[int64_t(r) * C + c]);
  s = detail::tile_column_sum(s, tile);
  if (threadIdx.y == 0 && c < C) {
    if (gridDim.y == 1) acc[c] += s;
    else partial[int64_t(blockIdx.y) * C + c] = s;
  }
}

template <typename T>
void column_sums(float* acc, const T* x, int N, int C, float* scratch, cudaStream_t stream) {
  const int splits = detail::row_splits(N);
  COCONUT_CHECK(splits == 1 || scratch, "column sums over {} rows need scratch (column_sums_scratch_floats)", N);
  const dim3 grid((C + detail::kColTile - 1) / detail::kColTile, splits);
  column_sums_kernel<<<grid, dim3(detail::kColTile, detail::kColTile), 0, stream>>>(acc, scratch, x, N, C,
                                                                                     detail::rows_per_split(N));
  CUDA_CHECK(cudaGetLastError());
  if (splits > 1) detail::add_column_partials(acc, scratch, splits, C, stream);
}

__global__ void add_column_partials_kernel(float* acc, const float* partial, int splits, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float total = 0.f;
  for (int k = 0; k < splits; ++k) total += partial[int64_t(k) * C + c];
  acc[c] += total;
}

template <typename T>
void broadcast_bias(T* out, const T* bias, int N, int OC, cudaStream_t stream) {
  broadcast_rows_kernel<<<grid_for(int64_t(N) * OC), kThreads, 0, stream>>>(out, bias, N, OC);
  CUDA_CHECK(cudaGetLastError());
}

void gemm_ex(CublasContext& cublas, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const bf16* a,
             int lda, const bf16* b, int ldb, float beta, void* c, cudaDataType c_type, int ldc) {
  COCONUT_CHECK(m >= 0 && n >= 0 && k >= 0, "gemm_bf16: negative size m={} n={} k={}", m, n, k);
  const int a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
  COCONUT_CHECK(lda >= std::max(1, a_cols), "gemm_bf16: lda={} is less than A's {} columns", lda, a_cols);
  COCONUT_CHECK(ldb >= std::max(1, b_cols), "gemm_bf16: ldb={} is less than B's {} columns", ldb, b_cols);
  COCONUT_CHECK(ldc >= std::max(1, n), "gemm_bf16: ldc={} is less than C's {} columns", ldc, n);
  if (m == 0 || n == 0) return;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T (cublas_gemm.h).
  CUBLAS_CHECK(cublasGemmEx(cublas.handle(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                            n, m, k, &alpha, b, CUDA_R_16BF, ldb, a, CUDA_R_16BF, lda, &beta, c, c_type, ldc,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The parameter half of a bf16 linear layer's backward: dw += inp^T dout (fp32) and
// dbias += column sums of dout.
void weight_and_bias_grads(CublasContext& cublas, float* dw, float* dbias, const bf16* dout, const bf16* inp, int N,
                           int IC, int OC, float* scratch) {
  gemm_bf16(cublas, true, false, IC, OC, N, 1.f, inp, IC, dout, OC, 1.f, dw, OC);
  if (dbias) column_sums(dbias, dout, N, OC, scratch, stream_of(cublas));
}

}  // namespace

void detail::add_column_partials(float* acc, const float* partial, int splits, int C, cudaStream_t stream) {
  add_column_partials_kernel<<<(C + kThreads - 1) / kThreads, kThreads, 0, stream>>>(acc, partial, splits, C);
  CUDA_CHECK(cudaGetLastError());
}

size_t column_sums_scratch_floats(int C) { return size_t(2) * detail::kMaxRowSplits * C; }

void gemm_bf16(CublasContext& cublas, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const bf16* a,
               int lda, const bf16* b, int ldb, float beta, bf16* c, int ldc) {
  gemm_ex(cublas, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, CUDA_R_16BF, ldc);
}
void gemm_bf16(CublasContext& cublas, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const bf16* a,
               int lda, const bf16* b, int ldb, float beta, float* c, int ldc) {
  gemm_ex(cublas, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, CUDA_R_32F, ldc);
}

void linear_forward(CublasContext& cublas, float* out, const float* inp, const float* w, const float* bias, int N,
                    int IC, int OC) {
  if (N == 0) return;
  if (bias) broadcast_bias(out, bias, N, OC, stream_of(cublas));
  cublas.sgemm(false, false, N, OC, IC, 1.f, inp, IC, w, OC, bias ? 1.f : 0.f, out, OC);
}
void linear_forward(CublasContext& cublas, bf16* out, const bf16* inp, const bf16* w, const bf16* bias, int N,
                    int IC, int OC) {
  if (N == 0) return;
  if (bias && cublas.linear_bias_bf16(inp, w, bias, out, N, IC, OC)) return;  // the bias in the epilogue
  if (bias) broadcast_bias(out, bias, N, OC, stream_of(cublas));
  gemm_bf16(cublas, false, false, N, OC, IC, 1.f, inp, IC, w, OC, bias ? 1.f : 0.f, out, OC);
}

void linear_backward(CublasContext& cublas, float* dinp, float* dw, float* dbias, const float* dout,
                     const float* inp, const float* w, int N, int IC, int OC, float* scratch) {
  if (N == 0) return;
  cublas.sgemm(false, true, N, IC, OC, 1.f, dout, OC, w, OC, 0.f, dinp, IC);  // dinp = dout W^T
  cublas.sgemm(true, false, IC, OC, N, 1.f, inp, IC, dout, OC, 1.f, dw, OC);  // dW += inp^T dout
  if (dbias) column_sums(dbias, dout, N, OC, scratch, stream_of(cublas));
}
void linear_backward(CublasContext& cublas, bf16* dinp, float* dw, float* dbias, const bf16* dout, const bf16* inp,
                     const bf16* w, int N, int IC, int OC, float* scratch) {
  if (N == 0) return;
  gemm_bf16(cublas, false, true, N, IC, OC, 1.f, dout, OC, w, OC, 0.f, dinp, IC);  // dinp = dout W^T
  weight_and_bias_grads(cublas, dw, dbias, dout, inp, N, IC, OC, scratch);
}

void linear_gelu_forward(CublasContext& cublas, float* out, float* pre, const float* inp, const float* w,
                         const float* bias, int N, int IC, int OC) {
  if (N == 0) return;
  linear_forward(cublas, pre, inp, w, bias, N, IC, OC);
  gelu_forward(out, pre, int64_t(N) * OC, stream_of(cublas));
}
void linear_gelu_forward(CublasContext& cublas, bf16* out, bf16* pre, const bf16* inp, const bf16* w,
                         const bf16* bias, int N, int IC, int OC) {
  if (N == 0) return;
  if (bias && cublas.linear_gelu_bf16(inp, w, bias, out, pre, N, IC, OC)) return;
  linear_forward(cublas, pre, inp, w, bias, N, IC, OC);
  gelu_forward(out, pre, int64_t(N) * OC, stream_of(cublas));
}

void linear_backward_gelu(CublasContext& cublas, float* dpre, float* dw, float* dbias, const float* dout,
                          const float* inp, const float* w, const float* pre, int N, int IC, int OC, float* scratch,
                          float* dgelu) {
  if (N == 0) return;
  linear_backward(cublas, dgelu, dw, dbias, dout, inp, w, N, IC, OC, scratch);
  gelu_backward(dpre, pre, dgelu, int64_t(N) * IC, stream_of(cublas));
}
void linear_backward_gelu(CublasContext& cublas, bf16* dpre, float* dw, float* dbias, const bf16* dout,
                          const bf16* inp, const bf16* w, const bf16* pre, int N, int IC, int OC, float* scratch,
                          bf16* dgelu) {
  if (N == 0) return;
  if (cublas.linear_dgelu_bf16(dout, w, pre, dpre, N, IC, OC)) {
    weight_and_bias_grads(cublas, dw, dbias, dout, inp, N, IC, OC, scratch);
    return;
  }
  linear_backward(cublas, dgelu, dw, dbias, dout, inp, w, N, IC, OC, scratch);
  gelu_backward(dpre, pre, dgelu, int64_t(N) * IC, stream_of(cublas));
}

}  // namespace coconut::gpu
