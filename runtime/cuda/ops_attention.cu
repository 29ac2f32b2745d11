// Attention over a column range with a KV cache (ops.h): the algorithm of
// model::attention_forward/backward step for step. Each (sequence s, head h) pair is one
// entry of a batched cuBLAS product over strided views of q|k|v (row stride B*3C);
// the masked causal softmax, its backward and the probability dropout are kernels with
// one block per query row. The pairs own disjoint columns of q|k|v and of their
// gradients, so the batched products never write the same element twice.
// Two input types: fp32 (SGEMM, the reference path) and bf16, where q|k|v, the output
// and its gradient are bf16 and the products run on tensor cores with fp32
// accumulation; scores and the gradient dP stay fp32, the saved probabilities and dS are
// bf16 (the operands of the products; the softmax kernels are templates over them).
// bf16 passes of one column without dropout (latent passes) go to ops_attention_row.cu.
#include <type_traits>

#include "runtime/check.h"
#include "runtime/cuda/ops_attention_row.cuh"
#include "runtime/cuda/ops_common.cuh"

namespace coconut::gpu {
namespace {

// The roles of the per-pair pointer arrays in the workspace, kRoles arrays of B*H.
// kPB, kSB: bf16 copies of the weights of V and of dS (bf16 inputs only).
enum Role { kQ, kK, kV, kP, kS0, kS1, kY, kDQ, kDK, kDV, kPB, kSB, kRoles };
constexpr int kRowThreads = 128;

size_t pointer_bytes(int pairs) { return (size_t(kRoles) * pairs * sizeof(void*) + 255) / 256 * 256; }

// The pointers of pair p = s * H + h. P is probs' row block of the pair (row stride
// B*H*T) when probs is given, else the pair's [nq, nk] slice of scratch0 (fp32 P) or of
// the bf16 scratch (bf16 P, the same slice as kPB: without saved probabilities P is the
// bf16 weight operand itself).
template <typename In, typename Prob>
__global__ void pair_pointers_kernel(void** ptr, int pairs, const In* qkv, float* dqkv, Prob* probs,
                                     int64_t probs_row0, float* scratch0, float* scratch1, bf16* scratch_bf16,
                                     const In* y, int a, int nq, int nk, int B, int T, int C, int H) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= pairs) return;
  const int s = p / H, h = p % H, hd = C / H;
  const int64_t q_off = (int64_t(a) * B + s) * 3 * C + h * hd, k_off = int64_t(s) * 3 * C + C + h * hd;
  const int64_t slice = int64_t(p) * nq * nk;
  ptr[kQ * pairs + p] = const_cast<In*>(qkv + q_off);
  ptr[kK * pairs + p] = const_cast<In*>(qkv + k_off);
  ptr[kV * pairs + p] = const_cast<In*>(qkv + k_off + C);
  // P: the saved probabilities, or without them the pair's slice of a scratch of P's type.
  Prob* p_scratch = nullptr;
  if constexpr (std::is_same_v<Prob, float>) p_scratch = scratch0 + slice;
  else p_scratch = scratch_bf16 + slice;
  ptr[kP * pairs + p] = probs ? probs + ((int64_t(a) * B + s - probs_row0) * H + h) * T : p_scratch;
  ptr[kS0 * pairs + p] = scratch0 + slice;
  ptr[kS1 * pairs + p] = scratch1 + slice;
  ptr[kY * pairs + p] = const_cast<In*>(y + int64_t(s) * C + h * hd);
  ptr[kDQ * pairs + p] = dqkv ? dqkv + q_off : nullptr;
  ptr[kDK * pairs + p] = dqkv ? dqkv + k_off : nullptr;
  ptr[kDV * pairs + p] = dqkv ? dqkv + k_off + C : nullptr;
  ptr[kPB * pairs + p] = scratch_bf16 ? scratch_bf16 + slice : nullptr;
  ptr[kSB * pairs + p] = scratch_bf16 ? scratch_bf16 + int64_t(pairs) * nq * nk + slice : nullptr;
}

// Row i of pair blockIdx.y of role src (Src, row stride ld) rounded to bf16 into role
// dst (row stride nk): the operand of a bf16 product.
template <typename Src>
__global__ void rows_to_bf16_kernel(void** ptr, int pairs, int src, int ld, int dst, int nk) {
  const int i = blockIdx.x, p = blockIdx.y;
  const Src* from = static_cast<const Src*>(ptr[src * pairs + p]) + int64_t(i) * ld;
  bf16* to = static_cast<bf16*>(ptr[dst * pairs + p]) + int64_t(i) * nk;
  for (int j = threadIdx.x; j < nk; j += blockDim.x) to[j] = __float2bfloat16_rn(detail::load(from[j]));
}

// The softmax kernels give each query row one warp (kSoftmaxRows rows a block, grid
// softmax_grid): the row's maximum and sum are shuffles within the warp, with no shared
// memory and no barrier, and the keys after the query (half of a causal pass) are not
// read at all.
constexpr int kSoftmaxRows = kRowThreads / detail::kWarp;
dim3 softmax_grid(int nq, int pairs) { return dim3((nq + kSoftmaxRows - 1) / kSoftmaxRows, pairs); }

// Masked causal softmax of query row i (column a + i) of pair blockIdx.y over keys
// [0, nk): scores from role src (fp32, row stride ld_src), probabilities into role kP
// (Prob, row stride ld_p; src may be kP itself in fp32: each lane reads a column before
// it writes it, and no other lane touches it). Keys after the query or hidden by the key
// mask get 0, a row with no visible key is all zeros (as the CPU op). The exponentials
// are computed twice (for the sum, then for the output) rather than stored between the
// passes. With tail > nk, P's [nk, tail) is zeroed (the saved probabilities' unused
// columns).
template <typename Prob>
__global__ void softmax_kernel(void** ptr, int pairs, int src, int ld_src, int ld_p, int a, int nq, int nk, int tail,
                               const uint8_t* key_mask, int B, int H) {
  const int i = blockIdx.x * kSoftmaxRows + threadIdx.x / detail::kWarp;
  if (i >= nq) return;  // the whole warp: nothing below synchronises the block
  const int lane = threadIdx.x % detail::kWarp, p = blockIdx.y, s = p / H;
  const float* row = static_cast<const float*>(ptr[src * pairs + p]) + int64_t(i) * ld_src;
  Prob* out = static_cast<Prob*>(ptr[kP * pairs + p]) + int64_t(i) * ld_p;
  const int visible_end = min(nk, a + i + 1);  // keys after the query's own column are never visible
  float m = -INFINITY;
  for (int j = lane; j < visible_end; j += detail::kWarp)
    if (key_mask[int64_t(j) * B + s]) m = fmaxf(m, row[j]);
  m = detail::warp_max(m);
  float sum = 0.f;
  if (m != -INFINITY)
    for (int j = lane; j < visible_end; j += detail::kWarp)
      if (key_mask[int64_t(j) * B + s]) sum += expf(row[j] - m);
  sum = detail::warp_sum(sum);
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  for (int j = lane; j < nk; j += detail::kWarp) {
    const bool visible = m != -INFINITY && j < visible_end && key_mask[int64_t(j) * B + s];
    out[j] = detail::store<Prob>(visible ? expf(row[j] - m) * inv : 0.f);
  }
  for (int j = nk + lane; j < tail; j += detail::kWarp) out[j] = detail::store<Prob>(0.f);
}

// Probability dropout of query row i of pair blockIdx.y: S1 = keep * P (the weights of
// V) and, in the backward (scale_grad), S0 *= keep (the gradient reaching P). keep is
// 0 or 1/(1-p) from the row's stream at h * head_stride + key_pos; a zero probability
// draws nothing (it contributes nothing either way), as the CPU op.
template <typename Prob>
__global__ void attention_dropout_kernel(void** ptr, int pairs, int ld_p, int a, int nk, int B, int H,
                                         DropoutKeys d, uint32_t threshold, float scale, bool scale_grad) {
  const int i = blockIdx.x, p = blockIdx.y, s = p / H, h = p % H;
  const Prob* P = static_cast<const Prob*>(ptr[kP * pairs + p]) + int64_t(i) * ld_p;
  float* kept = static_cast<float*>(ptr[kS1 * pairs + p]) + int64_t(i) * nk;
  float* dP = static_cast<float*>(ptr[kS0 * pairs + p]) + int64_t(i) * nk;
  const RowStream rs = d.rows[int64_t(i) * B + s];
  const int causal_end = min(nk, a + i + 1);
  for (int j = threadIdx.x; j < nk; j += blockDim.x) {
    const float pj = detail::load(P[j]);
    float keep = 0.f;
    if (j < causal_end && pj != 0.f) {
      const uint64_t index = d.first + uint64_t(h) * d.head_stride + uint64_t(d.key_pos[int64_t(j) * B + s]);
      keep = detail::stream_word(rs, index) >= threshold ? scale : 0.f;
    }
    kept[j] = keep * pj;
    if (scale_grad) dP[j] *= keep;
  }
}

// Softmax backward of row i of pair blockIdx.y: dS_j = p_j (dp_j - sum_k p_k dp_k) * scale,
// from P (Prob) and dP in role kS0 into role `out` (row stride nk): kS0 itself in fp32
// (each lane reads a column before it writes it), kSB in bf16 (the operand of the bf16
// products that follow). One warp a row, as the forward; p_j is 0 after the query's own
// column (the forward wrote it so), so those columns are not read and get dS 0.
template <typename Prob, typename Out>
__global__ void softmax_backward_kernel(void** ptr, int pairs, int ld_p, int a, int nq, int nk, float scale,
                                        int out) {
  const int i = blockIdx.x * kSoftmaxRows + threadIdx.x / detail::kWarp;
  if (i >= nq) return;
  const int lane = threadIdx.x % detail::kWarp, p = blockIdx.y;
  const Prob* P = static_cast<const Prob*>(ptr[kP * pairs + p]) + int64_t(i) * ld_p;
  const float* d = static_cast<const float*>(ptr[kS0 * pairs + p]) + int64_t(i) * nk;
  Out* ds = static_cast<Out*>(ptr[out * pairs + p]) + int64_t(i) * nk;
  const int visible_end = min(nk, a + i + 1);
  float dot = 0.f;
  for (int j = lane; j < visible_end; j += detail::kWarp) dot += detail::load(P[j]) * d[j];
  dot = detail::warp_sum(dot);
  for (int j = lane; j < nk; j += detail::kWarp)
    ds[j] = detail::store<Out>(j < visible_end ? detail::load(P[j]) * (d[j] - dot) * scale : 0.f);
}

// Row-major batched C_i = alpha op(A_i) op(B_i) + beta C_i (see cublas_gemm.h for the
// row-major to column-major swap), pointer arrays taken from the workspace by role.
void batched(cublasHandle_t handle, void** ptr, int pairs, bool trans_a, bool trans_b, int m, int n, int k,
             float alpha, Role a, int lda, Role b, int ldb, float beta, Role c, int ldc) {
  const auto arr = [&](Role r) { return reinterpret_cast<float* const*>(ptr + size_t(r) * pairs); };
  CUBLAS_CHECK(cublasSgemmBatched(handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  n, m, k, &alpha, arr(b), ldb, arr(a), lda, &beta, arr(c), ldc, pairs));
}

// The bf16 counterpart: tensor-core products with fp32 accumulation, each operand and
// the result of its own type.
void batched_ex(cublasHandle_t handle, void** ptr, int pairs, bool trans_a, bool trans_b, int m, int n, int k,
                float alpha, Role a, cudaDataType a_type, int lda, Role b, cudaDataType b_type, int ldb, float beta,
                Role c, cudaDataType c_type, int ldc) {
  const auto arr = [&](Role r) { return ptr + size_t(r) * pairs; };
  CUBLAS_CHECK(cublasGemmBatchedEx(handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   n, m, k, &alpha, arr(b), b_type, ldb, arr(a), a_type, lda, &beta, arr(c), c_type,
                                   ldc, pairs, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

struct Setup {
  cudaStream_t stream;
  void** ptr;
  int pairs, nq, nk, hd;
};

size_t scratch_elements(int pairs, int nq, int nk) { return size_t(pairs) * nq * nk; }

template <typename In, typename Prob>
Setup setup(CublasContext& cublas, void* workspace, const In* qkv, float* dqkv, Prob* probs,
            int64_t probs_row0, const In* y, int a, int b, int B, int T, int C, int H) {
  COCONUT_CHECK(B > 0 && H > 0 && C % H == 0, "attention: C={} is not a multiple of H={} (B={})", C, H, B);
  COCONUT_CHECK(0 <= a && a < b && b <= T, "attention: columns [{}, {}) outside [0, {})", a, b, T);
  COCONUT_CHECK(workspace, "attention: no workspace (size it with attention_workspace_bytes)");
  COCONUT_CHECK(probs_row0 >= 0 && probs_row0 <= int64_t(a) * B,
                "attention probabilities start at row {}, after the pass's first row {}", probs_row0, int64_t(a) * B);
  COCONUT_CHECK(B * H <= 65535, "attention: {} (sequence, head) pairs exceed the grid's 65535 rows", B * H);
  Setup st{};
  CUBLAS_CHECK(cublasGetStream(cublas.handle(), &st.stream));
  st.pairs = B * H;
  st.nq = b - a;
  st.nk = b;
  st.hd = C / H;
  st.ptr = static_cast<void**>(workspace);
  float* scratch0 = reinterpret_cast<float*>(static_cast<char*>(workspace) + pointer_bytes(st.pairs));
  float* scratch1 = scratch0 + scratch_elements(st.pairs, st.nq, st.nk);
  bf16* scratch_bf16 =
      std::is_same_v<In, bf16> ? reinterpret_cast<bf16*>(scratch1 + scratch_elements(st.pairs, st.nq, st.nk)) : nullptr;
  pair_pointers_kernel<<<(st.pairs + 127) / 128, 128, 0, st.stream>>>(st.ptr, st.pairs, qkv, dqkv, probs, probs_row0,
                                                                      scratch0, scratch1, scratch_bf16, y, a, st.nq,
                                                                      st.nk, B, T, C, H);
  CUDA_CHECK(cudaGetLastError());
  return st;
}

void check_dropout(const DropoutKeys* drop) {
  if (!drop) return;
  COCONUT_CHECK(drop->p >= 0.f && drop->p < 1.f, "attention dropout probability {} outside [0, 1)", drop->p);
  COCONUT_CHECK(drop->rows && drop->key_pos, "attention dropout needs row streams and key positions");
}

}  // namespace

size_t attention_workspace_bytes(int B, int H, int nq, int nk, bool bf16_inputs) {
  const size_t n = scratch_elements(B * H, nq, nk);
  return pointer_bytes(B * H) + 2 * n * sizeof(float) + (bf16_inputs ? 2 * n * sizeof(bf16) : 0);
}

void attention_forward(CublasContext& cublas, float* out, float* probs, const float* qkv, const uint8_t* key_mask,
                       int a, int b, int B, int T, int C, int H, const DropoutKeys* drop, void* workspace,
                       int64_t probs_row0) {
  COCONUT_CHECK(!drop || probs, "attention dropout needs the saved probabilities (training activations)");
  check_dropout(drop);
  const Setup st = setup(cublas, workspace, qkv, nullptr, probs, probs_row0, out, a, b, B, T, C, H);
  const int ld_qkv = 3 * C * B, ld_out = C * B, ld_p = probs ? B * H * T : st.nk;
  const float scale = 1.f / sqrtf(static_cast<float>(st.hd));
  cublasHandle_t handle = cublas.handle();
  batched(handle, st.ptr, st.pairs, false, true, st.nq, st.nk, st.hd, scale, kQ, ld_qkv, kK, ld_qkv, 0.f, kP,
          ld_p);  // scores
  const dim3 rows(st.nq, st.pairs);
  softmax_kernel<float><<<softmax_grid(st.nq, st.pairs), kRowThreads, 0, st.stream>>>(
      st.ptr, st.pairs, kP, ld_p, ld_p, a, st.nq, st.nk, probs ? T : st.nk, key_mask, B, H);  // in place
  CUDA_CHECK(cudaGetLastError());
  Role weights = kP;  // the weights of V: the probabilities, or their dropped copy
  int ld_w = ld_p;
  if (drop) {
    attention_dropout_kernel<float><<<rows, kRowThreads, 0, st.stream>>>(st.ptr, st.pairs, ld_p, a, st.nk, B, H, *drop,
                                                                  detail::drop_threshold(drop->p),
                                                                  1.f / (1.f - drop->p), false);
    CUDA_CHECK(cudaGetLastError());
    weights = kS1;
    ld_w = st.nk;
  }
  batched(handle, st.ptr, st.pairs, false, false, st.nq, st.hd, st.nk, 1.f, weights, ld_w, kV, ld_qkv, 0.f, kY,
          ld_out);  // P V
}

void attention_backward(CublasContext& cublas, float* dqkv, const float* dout, const float* probs,
                        const float* qkv, int a, int b, int B, int T, int C, int H, const DropoutKeys* drop,
                        void* workspace, int64_t probs_row0) {
  COCONUT_CHECK(probs, "attention backward needs the saved probabilities");
  check_dropout(drop);
  const Setup st =
      setup(cublas, workspace, qkv, dqkv, const_cast<float*>(probs), probs_row0, dout, a, b, B, T, C, H);
  const int ld_qkv = 3 * C * B, ld_out = C * B, ld_p = B * H * T;
  const float scale = 1.f / sqrtf(static_cast<float>(st.hd));
  cublasHandle_t handle = cublas.handle();
  const dim3 rows(st.nq, st.pairs);
  batched(handle, st.ptr, st.pairs, false, true, st.nq, st.nk, st.hd, 1.f, kY, ld_out, kV, ld_qkv, 0.f, kS0,
          st.nk);  // dP = dY V^T
  Role weights = kP;
  int ld_w = ld_p;
  if (drop) {
    // The forward's masks again: V was weighted by the dropped probabilities, and the
    // gradient reaching P is the dropped one times the keep factor.
    attention_dropout_kernel<float><<<rows, kRowThreads, 0, st.stream>>>(st.ptr, st.pairs, ld_p, a, st.nk, B, H, *drop,
                                                                  detail::drop_threshold(drop->p),
                                                                  1.f / (1.f - drop->p), true);
    CUDA_CHECK(cudaGetLastError());
    weights = kS1;
    ld_w = st.nk;
  }
  batched(handle, st.ptr, st.pairs, true, false, st.nk, st.hd, st.nq, 1.f, weights, ld_w, kY, ld_out, 1.f, kDV,
          ld_qkv);  // dV += P^T dY
  softmax_backward_kernel<float, float><<<softmax_grid(st.nq, st.pairs), kRowThreads, 0, st.stream>>>(
      st.ptr, st.pairs, ld_p, a, st.nq, st.nk, scale, kS0);
  CUDA_CHECK(cudaGetLastError());
  batched(handle, st.ptr, st.pairs, false, false, st.nq, st.hd, st.nk, 1.f, kS0, st.nk, kK, ld_qkv, 1.f, kDQ,
          ld_qkv);  // dQ += dS K
  batched(handle, st.ptr, st.pairs, true, false, st.nk, st.hd, st.nq, 1.f, kS0, st.nk, kQ, ld_qkv, 1.f, kDK,
          ld_qkv);  // dK += dS^T Q
}

namespace {

// The bf16 weights of V for the P V product (forward) and P^T dY (backward): the bf16
// probabilities (role kP, row stride ld_p) themselves where `direct`, else a copy in the
// pair's scratch kPB (row stride nk); with dropout, the dropped probabilities rounded
// into kPB (and, in the backward, dP scaled by the keep factor). The saved probabilities
// are an operand only when every pair's rows are as aligned as their stride suggests:
// cuBLAS takes a batched operand's alignment from its leading dimension, not from the
// pointers in the array, and [T,B,H,T] rows with T = 9 faulted (misaligned address,
// docs/gpu_runs/2026-11-27-h100-run4.log). T a multiple of 8 makes every row 16-byte
// aligned; the scratch's pointers share its stride's alignment.
Role bf16_weights(const Setup& st, dim3 rows, const DropoutKeys* drop, int ld_p, int a, int B, int H, bool backward,
                  bool direct) {
  if (drop) {
    attention_dropout_kernel<bf16><<<rows, kRowThreads, 0, st.stream>>>(st.ptr, st.pairs, ld_p, a, st.nk, B, H, *drop,
                                                                        detail::drop_threshold(drop->p),
                                                                        1.f / (1.f - drop->p), backward);
    CUDA_CHECK(cudaGetLastError());
    rows_to_bf16_kernel<float><<<rows, kRowThreads, 0, st.stream>>>(st.ptr, st.pairs, kS1, st.nk, kPB, st.nk);
    CUDA_CHECK(cudaGetLastError());
    return kPB;
  }
  if (direct) return kP;
  rows_to_bf16_kernel<bf16><<<rows, kRowThreads, 0, st.stream>>>(st.ptr, st.pairs, kP, ld_p, kPB, st.nk);
  CUDA_CHECK(cudaGetLastError());
  return kPB;
}

// A pass of one column without dropout (a latent pass) runs ops_attention_row.cuh's
// kernels: one launch instead of the products over [1, nk] matrices.
bool one_column_pass(int a, int b, int C, int H, const DropoutKeys* drop) {
  return b - a == 1 && !drop && H > 0 && C % H == 0 && detail::attention_row_fits(a, C / H);
}

cudaStream_t stream_of(CublasContext& cublas) {
  cudaStream_t stream = nullptr;
  CUBLAS_CHECK(cublasGetStream(cublas.handle(), &stream));
  return stream;
}

}  // namespace

void attention_forward(CublasContext& cublas, bf16* out, bf16* probs, const bf16* qkv, const uint8_t* key_mask, int a,
                       int b, int B, int T, int C, int H, const DropoutKeys* drop, void* workspace,
                       int64_t probs_row0) {
  COCONUT_CHECK(!drop || probs, "attention dropout needs the saved probabilities (training activations)");
  check_dropout(drop);
  if (one_column_pass(a, b, C, H, drop)) {
    detail::attention_row_forward(out, probs, qkv, key_mask, a, B, T, C, H, probs_row0, stream_of(cublas));
    return;
  }
  const Setup st = setup(cublas, workspace, qkv, nullptr, probs, probs_row0, static_cast<const bf16*>(out), a, b, B,
                         T, C, H);
  const int ld_qkv = 3 * C * B, ld_out = C * B, ld_p = probs ? B * H * T : st.nk;
  const float scale = 1.f / sqrtf(static_cast<float>(st.hd));
  cublasHandle_t handle = cublas.handle();
  batched_ex(handle, st.ptr, st.pairs, false, true, st.nq, st.nk, st.hd, scale, kQ, CUDA_R_16BF, ld_qkv, kK,
             CUDA_R_16BF, ld_qkv, 0.f, kS0, CUDA_R_32F, st.nk);  // scores, fp32
  const dim3 rows(st.nq, st.pairs);
  softmax_kernel<bf16><<<softmax_grid(st.nq, st.pairs), kRowThreads, 0, st.stream>>>(
      st.ptr, st.pairs, kS0, st.nk, ld_p, a, st.nq, st.nk, probs ? T : st.nk, key_mask, B, H);
  CUDA_CHECK(cudaGetLastError());
  // The weights of V: the bf16 probabilities, or their dropped copy rounded to bf16.
  const Role weights = bf16_weights(st, rows, drop, ld_p, a, B, H, false, probs == nullptr || T % 8 == 0);
  const int ld_w = weights == kP ? ld_p : st.nk;
  batched_ex(handle, st.ptr, st.pairs, false, false, st.nq, st.hd, st.nk, 1.f, weights, CUDA_R_16BF, ld_w, kV,
             CUDA_R_16BF, ld_qkv, 0.f, kY, CUDA_R_16BF, ld_out);  // P V
}

void attention_backward(CublasContext& cublas, float* dqkv, const bf16* dout, const bf16* probs, const bf16* qkv,
                        int a, int b, int B, int T, int C, int H, const DropoutKeys* drop, void* workspace,
                        int64_t probs_row0) {
  COCONUT_CHECK(probs, "attention backward needs the saved probabilities");
  check_dropout(drop);
  if (one_column_pass(a, b, C, H, drop)) {
    detail::attention_row_backward(dqkv, dout, probs, qkv, a, B, T, C, H, probs_row0, stream_of(cublas));
    return;
  }
  const Setup st = setup(cublas, workspace, qkv, dqkv, const_cast<bf16*>(probs), probs_row0, dout, a, b, B, T, C, H);
  const int ld_qkv = 3 * C * B, ld_out = C * B, ld_p = B * H * T;
  const float scale = 1.f / sqrtf(static_cast<float>(st.hd));
  cublasHandle_t handle = cublas.handle();
  const dim3 rows(st.nq, st.pairs);
  batched_ex(handle, st.ptr, st.pairs, false, true, st.nq, st.nk, st.hd, 1.f, kY, CUDA_R_16BF, ld_out, kV,
             CUDA_R_16BF, ld_qkv, 0.f, kS0, CUDA_R_32F, st.nk);  // dP = dY V^T
  // The weights V was multiplied by, as in the forward (dropout: the forward's masks again,
  // and the gradient reaching P times the keep factor).
  const Role weights = bf16_weights(st, rows, drop, ld_p, a, B, H, true, T % 8 == 0);
  const int ld_w = weights == kP ? ld_p : st.nk;
  batched_ex(handle, st.ptr, st.pairs, true, false, st.nk, st.hd, st.nq, 1.f, weights, CUDA_R_16BF, ld_w, kY,
             CUDA_R_16BF, ld_out, 1.f, kDV, CUDA_R_32F, ld_qkv);  // dV += P^T dY
  softmax_backward_kernel<bf16, bf16><<<softmax_grid(st.nq, st.pairs), kRowThreads, 0, st.stream>>>(
      st.ptr, st.pairs, ld_p, a, st.nq, st.nk, scale, kSB);
  CUDA_CHECK(cudaGetLastError());
  batched_ex(handle, st.ptr, st.pairs, false, false, st.nq, st.hd, st.nk, 1.f, kSB, CUDA_R_16BF, st.nk, kK,
             CUDA_R_16BF, ld_qkv, 1.f, kDQ, CUDA_R_32F, ld_qkv);  // dQ += dS K
  batched_ex(handle, st.ptr, st.pairs, true, false, st.nk, st.hd, st.nq, 1.f, kSB, CUDA_R_16BF, st.nk, kQ,
             CUDA_R_16BF, ld_qkv, 1.f, kDK, CUDA_R_32F, ld_qkv);  // dK += dS^T Q
}

}  // namespace coconut::gpu
