// ops_attention_row.cu: attention for one query column per sequence, a block per
// (sequence, head) pair. Layouts as ops_attention.cu: qkv rows t*B+s of [q | k | v]
// (3C), head h at columns h*hd of each part; probs rows of T per (row, head).
#include "runtime/cuda/ops_attention_row.cuh"

#include <algorithm>

#include "runtime/check.h"
#include "runtime/cuda/ops_common.cuh"

namespace coconut::gpu::detail {
namespace {

constexpr int kPairThreads = 128;
// Dynamic shared memory without opting in to more: 48 KiB less the static `reduce`.
constexpr size_t kMaxSharedBytes = 48 * 1024 - 32 * sizeof(float);

// The (group, dim) items of the weighted sums over keys: `groups` groups of threads sum
// the keys j = g, g + groups, ..., each group all hd dims, then the groups are added in
// order. Enough groups to give every thread an item when hd < kPairThreads.
__host__ __device__ inline int sum_groups(int hd) { return hd >= kPairThreads ? 1 : kPairThreads / hd; }

// Shared floats, in this order: q (hd), dy (hd; the backward's, unused by the forward),
// one value per key (nk), the groups' partial sums (groups x hd).
size_t shared_bytes(int nk, int hd) { return (size_t(hd) * 2 + nk + size_t(sum_groups(hd)) * hd) * sizeof(float); }

__global__ void __launch_bounds__(kPairThreads)
    attention_row_forward_kernel(bf16* out, bf16* probs, const bf16* qkv, const uint8_t* key_mask, int a, int B,
                                 int T, int C, int H, int64_t probs_row0, float scale) {
  extern __shared__ float smem[];
  __shared__ float reduce[32];
  const int p = blockIdx.x, s = p / H, h = p % H, hd = C / H, nk = a + 1, groups = sum_groups(hd);
  float* q = smem;         // [hd]
  float* w = q + 2 * hd;   // [nk]: the scores, then the probabilities rounded to bf16
  float* part = w + nk;    // [groups * hd]
  const int64_t row3 = int64_t(3) * C;
  const bf16* q_row = qkv + (int64_t(a) * B + s) * row3 + h * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) q[d] = load(q_row[d]);
  __syncthreads();
  // Scores, a warp per key: the lanes share the head's dims.
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int j = warp; j < nk; j += warps) {
    const bf16* k = qkv + (int64_t(j) * B + s) * row3 + C + h * hd;
    float dot = 0.f;
    for (int d = lane; d < hd; d += kWarp) dot += q[d] * load(k[d]);
    dot = warp_sum(dot);
    if (lane == 0) w[j] = key_mask[int64_t(j) * B + s] ? dot * scale : -INFINITY;
  }
  __syncthreads();
  float m = -INFINITY;
  for (int j = threadIdx.x; j < nk; j += blockDim.x) m = fmaxf(m, w[j]);
  m = block_max(m, reduce);
  float sum = 0.f;
  if (m != -INFINITY)
    for (int j = threadIdx.x; j < nk; j += blockDim.x) sum += expf(w[j] - m);  // a hidden key: exp(-inf) = 0
  sum = block_sum(sum, reduce);  // its barriers: every read of w above comes before the writes below
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  bf16* p_row = probs ? probs + ((int64_t(a) * B + s - probs_row0) * H + h) * T : nullptr;
  for (int j = threadIdx.x; j < nk; j += blockDim.x) {
    const bf16 pj = store<bf16>(m == -INFINITY ? 0.f : expf(w[j] - m) * inv);
    w[j] = load(pj);  // the bf16 weights, as the batched path's P V product reads them
    if (p_row) p_row[j] = pj;
  }
  if (p_row)
    for (int j = nk + threadIdx.x; j < T; j += blockDim.x) p_row[j] = store<bf16>(0.f);
  __syncthreads();
  // y = sum_j w_j v_j.
  for (int item = threadIdx.x; item < groups * hd; item += blockDim.x) {
    const int g = item / hd, d = item % hd;
    float acc = 0.f;
    for (int j = g; j < nk; j += groups) acc += w[j] * load(qkv[(int64_t(j) * B + s) * row3 + 2 * C + h * hd + d]);
    part[item] = acc;
  }
  __syncthreads();
  bf16* y = out + int64_t(s) * C + h * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.f;
    for (int g = 0; g < groups; ++g) acc += part[g * hd + d];
    y[d] = store<bf16>(acc);
  }
}

__global__ void __launch_bounds__(kPairThreads)
    attention_row_backward_kernel(float* dqkv, const bf16* dout, const bf16* probs, const bf16* qkv, int a, int B,
                                  int T, int C, int H, int64_t probs_row0, float scale) {
  extern __shared__ float smem[];
  __shared__ float reduce[32];
  const int p = blockIdx.x, s = p / H, h = p % H, hd = C / H, nk = a + 1, groups = sum_groups(hd);
  float* q = smem;        // [hd]
  float* dy = q + hd;     // [hd]
  float* ds = dy + hd;    // [nk]: dP, then dS rounded to bf16
  float* part = ds + nk;  // [groups * hd]
  const int64_t row3 = int64_t(3) * C;
  const bf16* q_row = qkv + (int64_t(a) * B + s) * row3 + h * hd;
  const bf16* dy_row = dout + int64_t(s) * C + h * hd;
  const bf16* p_row = probs + ((int64_t(a) * B + s - probs_row0) * H + h) * T;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    q[d] = load(q_row[d]);
    dy[d] = load(dy_row[d]);
  }
  __syncthreads();
  // dP_j = dy . v_j, a warp per key.
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int j = warp; j < nk; j += warps) {
    const bf16* v = qkv + (int64_t(j) * B + s) * row3 + 2 * C + h * hd;
    float dot = 0.f;
    for (int d = lane; d < hd; d += kWarp) dot += dy[d] * load(v[d]);
    dot = warp_sum(dot);
    if (lane == 0) ds[j] = dot;
  }
  __syncthreads();
  float dot = 0.f;
  for (int j = threadIdx.x; j < nk; j += blockDim.x) dot += load(p_row[j]) * ds[j];
  dot = block_sum(dot, reduce);  // its barriers: every read of ds above comes before the writes below
  for (int j = threadIdx.x; j < nk; j += blockDim.x) ds[j] = load(store<bf16>(load(p_row[j]) * (ds[j] - dot) * scale));
  __syncthreads();
  // dQ += sum_j dS_j k_j.
  for (int item = threadIdx.x; item < groups * hd; item += blockDim.x) {
    const int g = item / hd, d = item % hd;
    float acc = 0.f;
    for (int j = g; j < nk; j += groups) acc += ds[j] * load(qkv[(int64_t(j) * B + s) * row3 + C + h * hd + d]);
    part[item] = acc;
  }
  __syncthreads();
  float* dq = dqkv + (int64_t(a) * B + s) * row3 + h * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.f;
    for (int g = 0; g < groups; ++g) acc += part[g * hd + d];
    dq[d] += acc;
  }
  // dK_j += dS_j q and dV_j += P_j dy: this pair's columns of each key row, which no
  // other block writes (the q columns above are another part of the row).
  for (int64_t item = threadIdx.x; item < int64_t(nk) * hd; item += blockDim.x) {
    const int j = int(item / hd), d = int(item % hd);
    float* dk = dqkv + (int64_t(j) * B + s) * row3 + C + h * hd;
    dk[d] += ds[j] * q[d];
    dk[C + d] += load(p_row[j]) * dy[d];  // dV: the next part of the row
  }
}

void check_row_pass(int a, int B, int T, int C, int H, int64_t probs_row0) {
  COCONUT_CHECK(B > 0 && H > 0 && C % H == 0, "attention: C={} is not a multiple of H={} (B={})", C, H, B);
  COCONUT_CHECK(0 <= a && a < T, "attention: column {} outside [0, {})", a, T);
  COCONUT_CHECK(probs_row0 >= 0 && probs_row0 <= int64_t(a) * B,
                "attention probabilities start at row {}, after the pass's first row {}", probs_row0, int64_t(a) * B);
  COCONUT_CHECK(attention_row_fits(a, C / H), "attention: a one-column pass at column {} does not fit", a);
}

}  // namespace

bool attention_row_fits(int a, int hd) { return hd > 0 && shared_bytes(a + 1, hd) <= kMaxSharedBytes; }

void attention_row_forward(bf16* out, bf16* probs, const bf16* qkv, const uint8_t* key_mask, int a, int B, int T,
                           int C, int H, int64_t probs_row0, cudaStream_t stream) {
  check_row_pass(a, B, T, C, H, probs_row0);
  const int hd = C / H;
  attention_row_forward_kernel<<<B * H, kPairThreads, shared_bytes(a + 1, hd), stream>>>(
      out, probs, qkv, key_mask, a, B, T, C, H, probs_row0, 1.f / sqrtf(float(hd)));
  CUDA_CHECK(cudaGetLastError());
}

void attention_row_backward(float* dqkv, const bf16* dout, const bf16* probs, const bf16* qkv, int a, int B, int T,
                            int C, int H, int64_t probs_row0, cudaStream_t stream) {
  check_row_pass(a, B, T, C, H, probs_row0);
  COCONUT_CHECK(probs, "attention backward needs the saved probabilities");
  const int hd = C / H;
  attention_row_backward_kernel<<<B * H, kPairThreads, shared_bytes(a + 1, hd), stream>>>(
      dqkv, dout, probs, qkv, a, B, T, C, H, probs_row0, 1.f / sqrtf(float(hd)));
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace coconut::gpu::detail
