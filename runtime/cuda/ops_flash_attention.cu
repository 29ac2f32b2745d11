// Fused (flash-style) bf16 attention over a column range with a KV cache (ops.h): the
// function of attention_forward/backward without their [nq, nk] score and probability
// buffers. Each block takes 64 query rows (or, for dK/dV, 64 keys) of one (sequence,
// head) pair and walks the other side in tiles of 64 through shared memory; the
// products run on tensor cores (WMMA bf16 16x16x16, fp32 accumulation), the softmax in
// fp32 with a running maximum and sum (online softmax). The forward saves one number
// per query row and head, the log-sum-exp; the backward recomputes the probabilities
// from it. The backward is two kernels, dK/dV by key tile and dQ by query tile, so that
// every gradient element is summed by one block in a fixed order: no atomics, the same
// bits every run.
//
// Layouts are the batched op's: q|k|v rows t*B+s of 3C (row stride B*3C between
// columns of one sequence), the pass's output rows i*B+s of C, dqkv fp32 accumulated
// (+=). Head size 64 only (GPT-2's); attention_forward covers the others and dropout.
// Each warp owns 16 rows of a tile; within a warp, lane pair (2r, 2r+1) owns row r,
// each lane half of its 64 columns.
#include <mma.h>

#include "runtime/check.h"
#include "runtime/cuda/ops_common.cuh"

namespace coconut::gpu {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kHead = 64;                    // head size
constexpr int kTile = 64;                    // query rows per block, keys per tile
constexpr int kWarps = 4, kThreads = 32 * kWarps;
constexpr int kLdB = kHead + 8;              // bf16 row stride in shared memory (padding against bank conflicts)
constexpr int kLdF = kTile + 4;              // fp32 row stride
constexpr int kTileB = kTile * kLdB;         // bf16 elements of one 64-row tile
constexpr int kWarpF = 16 * kLdF;            // fp32 elements of one warp's 16-row slab
constexpr int kWarpB = 16 * kLdB;            // bf16 elements of one warp's 16-row slab
static_assert(kHead == kTile, "a row's scores and its output share one fp32 row layout");

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// A 64-row tile in flight: rows [0, valid) of 64 bf16 each (row r at src + r * stride,
// 16-byte aligned) fetched from global memory into registers, every thread's loads
// issued before any is used; put() stores them into shared memory (rows past `valid`
// as zeros). Fetching the next tiles before computing on the current ones hides the
// global memory latency behind that work.
constexpr int kVectors = kHead / 8;                   // 16-byte vectors per row
constexpr int kPerThread = kTile * kVectors / kThreads;  // vectors per thread per tile
static_assert(kTile * kVectors % kThreads == 0, "tile vectors split evenly over the threads");

struct TileFetch {
  uint4 v[kPerThread];

  __device__ void fetch(const bf16* src, int64_t stride, int valid) {
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const int e = threadIdx.x + k * kThreads, r = e / kVectors, c = (e % kVectors) * 8;
      v[k] = r < valid ? *reinterpret_cast<const uint4*>(src + r * stride + c) : make_uint4(0, 0, 0, 0);
    }
  }
  __device__ void put(bf16* dst) const {
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const int e = threadIdx.x + k * kThreads, r = e / kVectors, c = (e % kVectors) * 8;
      *reinterpret_cast<uint4*>(dst + r * kLdB + c) = v[k];
    }
  }
};

// The key mask of a key tile, one byte per key (threads [0, 64) hold one each).
struct MaskFetch {
  uint8_t m = 0;
  __device__ void fetch(const uint8_t* key_mask, int k0, int valid, int B, int s) {
    m = threadIdx.x < valid ? key_mask[int64_t(k0 + threadIdx.x) * B + s] : 0;
  }
  __device__ void put(uint8_t* dst) const {
    if (threadIdx.x < kTile) dst[threadIdx.x] = m;
  }
};

// Column c of the row loops below, staggered by row and half so that the 32 lanes of a
// warp touch 32 different shared-memory banks (fp32 rows of kLdF = 68 words).
__device__ __forceinline__ int lane_column(int c, int r, int c0) { return c0 + ((c + 5 * r + c0 / 2) & 31); }

// out[16 x 64] (fp32, stride kLdF) = A[16 x 64] B^T, A's rows and B's rows both 64
// wide in shared memory (stride kLdB): scores Q K^T, or their transpose K Q^T. A's four
// fragments are loaded once for the four column blocks.
__device__ void product_abt(float* out, const bf16* a, const bf16* b) {
  FragA fa[kHead / 16];
  for (int k = 0; k < kHead / 16; ++k) wmma::load_matrix_sync(fa[k], a + k * 16, kLdB);
  for (int n = 0; n < kTile / 16; ++n) {
    FragC acc;
    wmma::fill_fragment(acc, 0.f);
    for (int k = 0; k < kHead / 16; ++k) {
      FragBCol fb;
      wmma::load_matrix_sync(fb, b + n * 16 * kLdB + k * 16, kLdB);
      wmma::mma_sync(acc, fa[k], fb, acc);
    }
    wmma::store_matrix_sync(out + n * 16, acc, kLdF, wmma::mem_row_major);
  }
}

// acc[n] += A[16 x 64] B[64 x 64], A bf16 (stride kLdB) and B a 64-row tile: P V,
// P^T dO, dS^T Q, dS K. A's four fragments are loaded once.
__device__ void product_ab_accumulate(FragC (&acc)[kHead / 16], const bf16* a, const bf16* b) {
  FragA fa[kTile / 16];
  for (int k = 0; k < kTile / 16; ++k) wmma::load_matrix_sync(fa[k], a + k * 16, kLdB);
  for (int n = 0; n < kHead / 16; ++n)
    for (int k = 0; k < kTile / 16; ++k) {
      FragBRow fb;
      wmma::load_matrix_sync(fb, b + k * 16 * kLdB + n * 16, kLdB);
      wmma::mma_sync(acc[n], fa[k], fb, acc[n]);
    }
}

// dst[row * stride + c] += acc (16 x 64, staged through `stage`, fp32 stride kLdF) for
// the warp's rows with row < valid: the gradients' one write to global memory.
__device__ void add_rows(float* dst, int64_t stride, int valid, FragC (&acc)[kHead / 16], float* stage) {
  for (int n = 0; n < kHead / 16; ++n) wmma::store_matrix_sync(stage + n * 16, acc[n], kLdF, wmma::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x % 32;
  for (int e = lane; e < 16 * kHead; e += 32) {
    const int r = e / kHead, c = e % kHead;
    if (r < valid) dst[r * stride + c] += stage[r * kLdF + c];
  }
  __syncwarp();
}

struct Pass {
  int a, nq, B, C, H;
  float scale;
  __host__ __device__ int64_t qkv_stride() const { return int64_t(B) * 3 * C; }
};

__device__ const bf16* head_rows(const bf16* qkv, const Pass& p, int t, int s, int h, int part) {
  return qkv + (int64_t(t) * p.B + s) * 3 * p.C + part * p.C + h * kHead;
}

// One block: query rows [i0, i0 + 64) of pair blockIdx.y. Shared memory: Q, K, V tiles,
// then per warp its scores (fp32), output accumulator (fp32) and probabilities (bf16),
// then the key tile's mask. The next key tile is fetched while this one is worked on.
__global__ void __launch_bounds__(kThreads) flash_forward_kernel(bf16* out, float* lse, const bf16* qkv,
                                                                 const uint8_t* key_mask, Pass p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int pair = blockIdx.y, s = pair / p.H, h = pair % p.H, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int i0 = blockIdx.x * kTile, rows = min(kTile, p.nq - i0);
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* k_s = q_s + kTileB;
  bf16* v_s = k_s + kTileB;
  float* s_w = reinterpret_cast<float*>(v_s + kTileB) + warp * kWarpF;
  float* o_w = reinterpret_cast<float*>(v_s + kTileB) + kWarps * kWarpF + warp * kWarpF;
  bf16* p_w = reinterpret_cast<bf16*>(reinterpret_cast<float*>(v_s + kTileB) + 2 * kWarps * kWarpF) + warp * kWarpB;
  uint8_t* mask_s = reinterpret_cast<uint8_t*>(reinterpret_cast<bf16*>(p_w - warp * kWarpB) + kWarps * kWarpB);

  const int n_keys = p.a + i0 + rows;  // keys any row of the block may see (causal)
  TileFetch q_in, k_in, v_in;
  MaskFetch m_in;
  q_in.fetch(head_rows(qkv, p, p.a + i0, s, h, 0), p.qkv_stride(), rows);
  k_in.fetch(head_rows(qkv, p, 0, s, h, 1), p.qkv_stride(), min(kTile, n_keys));
  v_in.fetch(head_rows(qkv, p, 0, s, h, 2), p.qkv_stride(), min(kTile, n_keys));
  m_in.fetch(key_mask, 0, min(kTile, n_keys), p.B, s);
  q_in.put(q_s);
  const int r = lane / 2, c0 = (lane % 2) * 32, row = warp * 16 + r;  // this lane's row and half
  const int t = p.a + i0 + row;                                          // its query column
  for (int c = 0; c < 32; ++c) o_w[r * kLdF + c0 + c] = 0.f;
  float m = -INFINITY, l = 0.f;  // the row's running maximum and sum (both lanes of the pair)
  for (int k0 = 0; k0 < n_keys; k0 += kTile) {
    __syncthreads();  // the previous tile's K, V and mask are no longer read
    k_in.put(k_s);
    v_in.put(v_s);
    m_in.put(mask_s);
    __syncthreads();
    if (k0 + kTile < n_keys) {  // the next tile's loads fly during this tile's work
      const int next = k0 + kTile, kr = min(kTile, n_keys - next);
      k_in.fetch(head_rows(qkv, p, next, s, h, 1), p.qkv_stride(), kr);
      v_in.fetch(head_rows(qkv, p, next, s, h, 2), p.qkv_stride(), kr);
      m_in.fetch(key_mask, next, kr, p.B, s);
    }
    product_abt(s_w, q_s + warp * 16 * kLdB, k_s);
    __syncwarp();
    // Online softmax of the row's visible keys: key j is visible when j <= t and unmasked.
    float* srow = s_w + r * kLdF;
    float mx = -INFINITY;
    for (int c = 0; c < 32; ++c) {
      const int k = lane_column(c, r, c0), j = k0 + k;
      const bool visible = row < rows && j <= t && mask_s[k];
      const float x = visible ? srow[k] * p.scale : -INFINITY;
      srow[k] = x;
      mx = fmaxf(mx, x);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m, mx);
    const float alpha = m_new == -INFINITY ? 1.f : expf(m - m_new);  // rescales what was summed so far
    float sum = 0.f;
    bf16* prow = p_w + r * kLdB;
    float* orow = o_w + r * kLdF;
    for (int c = 0; c < 32; ++c) {
      const int k = lane_column(c, r, c0);
      const float x = srow[k];
      const float e = x == -INFINITY ? 0.f : expf(x - m_new);
      sum += e;
      prow[k] = __float2bfloat16_rn(e);
      orow[k] *= alpha;  // the output accumulator's columns, same indices (head size = tile)
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * alpha + sum;
    m = m_new;
    __syncwarp();
    FragC acc[kHead / 16];
    for (int n = 0; n < kHead / 16; ++n) wmma::load_matrix_sync(acc[n], o_w + n * 16, kLdF, wmma::mem_row_major);
    product_ab_accumulate(acc, p_w, v_s);
    for (int n = 0; n < kHead / 16; ++n) wmma::store_matrix_sync(o_w + n * 16, acc[n], kLdF, wmma::mem_row_major);
    __syncwarp();
  }
  if (row < rows) {
    const float inv = l > 0.f ? 1.f / l : 0.f;  // a row with no visible key is all zeros, as the CPU op
    bf16* y = out + (int64_t(i0 + row) * p.B + s) * p.C + h * kHead;
    for (int c = 0; c < 32; c += 2) {
      __nv_bfloat162 pair2;
      pair2.x = __float2bfloat16_rn(o_w[r * kLdF + c0 + c] * inv);
      pair2.y = __float2bfloat16_rn(o_w[r * kLdF + c0 + c + 1] * inv);
      *reinterpret_cast<__nv_bfloat162*>(y + c0 + c) = pair2;
    }
    // +inf for a row with no visible key: the backward's exp(score - lse) is then 0.
    if (lane % 2 == 0) lse[(int64_t(t) * p.B + s) * p.H + h] = l > 0.f ? m + logf(l) : INFINITY;
  }
}

// D[(i*B + s)*H + h] = dO . O over the head's 64 columns (softmax backward's row term),
// one warp per pass row and head, a fixed shuffle tree.
__global__ void flash_row_dot_kernel(float* D, const bf16* dout, const bf16* out, int64_t rows_heads, int C, int H) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= rows_heads) return;
  const int64_t base = (w / H) * C + (w % H) * kHead;
  float x = 0.f;
  for (int d = lane; d < kHead; d += 32) x += __bfloat162float(dout[base + d]) * __bfloat162float(out[base + d]);
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  if (lane == 0) D[w] = x;
}

// A query tile's per-row terms in flight: lse (by absolute column) and D (by pass row),
// threads [0, 64) one row each; rows past the pass give lse = +inf (probability 0), D = 0.
struct RowTermsFetch {
  float lse = INFINITY, d = 0.f;
  __device__ void fetch(const float* lse_g, const float* D, const Pass& p, int s, int h, int i0) {
    const int i = i0 + threadIdx.x;
    const bool in = threadIdx.x < kTile && i < p.nq;
    lse = in ? lse_g[(int64_t(p.a + i) * p.B + s) * p.H + h] : INFINITY;
    d = in ? D[(int64_t(i) * p.B + s) * p.H + h] : 0.f;
  }
  __device__ void put(float* lse_s, float* d_s) const {
    if (threadIdx.x < kTile) {
      lse_s[threadIdx.x] = lse;
      d_s[threadIdx.x] = d;
    }
  }
};

// The shared memory of both backward kernels: K, V, Q and dO tiles; per warp two fp32
// 16-row slabs (scores or probabilities, and dP) and one bf16 slab (P or dS, a product's
// operand); the query tile's lse and D; the key tile's mask. kBackwardSmem bytes.
struct BackwardSmem {
  bf16 *k, *v, *q, *dout, *b16;
  float *f32a, *f32b, *lse, *d;
  uint8_t* mask;

  __device__ BackwardSmem(unsigned char* smem, int warp) {
    k = reinterpret_cast<bf16*>(smem);
    v = k + kTileB;
    q = v + kTileB;
    dout = q + kTileB;
    float* f32 = reinterpret_cast<float*>(dout + kTileB);
    f32a = f32 + warp * kWarpF;
    f32b = f32 + kWarps * kWarpF + warp * kWarpF;
    bf16* slabs16 = reinterpret_cast<bf16*>(f32 + 2 * kWarps * kWarpF);
    b16 = slabs16 + warp * kWarpB;
    lse = reinterpret_cast<float*>(slabs16 + kWarps * kWarpB);
    d = lse + kTile;
    mask = reinterpret_cast<uint8_t*>(d + kTile);
  }
};

// dK, dV of keys [j0, j0 + 64) of pair blockIdx.y, over every query row of the pass that
// sees them. Shared memory: K, V, Q, dO tiles, per warp P^T and dP^T (fp32) and P^T /
// dS^T (bf16), then lse, D and the key mask. The next query tile is fetched while this
// one is worked on.
__global__ void __launch_bounds__(kThreads) flash_backward_kv_kernel(float* dqkv, const bf16* dout, const float* lse,
                                                                     const float* D, const bf16* qkv,
                                                                     const uint8_t* key_mask, Pass p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int pair = blockIdx.y, s = pair / p.H, h = pair % p.H, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int nk = p.a + p.nq, j0 = blockIdx.x * kTile, kr = min(kTile, nk - j0);
  const BackwardSmem m(smem, warp);
  bf16 *k_s = m.k, *v_s = m.v, *q_s = m.q, *do_s = m.dout, *b_w = m.b16;
  float *pt_w = m.f32a, *dpt_w = m.f32b, *lse_s = m.lse, *d_s = m.d;
  uint8_t* mask_s = m.mask;

  const int first = max(0, j0 - p.a) / kTile * kTile;  // the first query tile that sees a key of this tile
  const int64_t dout_stride = int64_t(p.B) * p.C;
  TileFetch k_in, v_in, q_in, do_in;
  MaskFetch m_in;
  RowTermsFetch terms;
  k_in.fetch(head_rows(qkv, p, j0, s, h, 1), p.qkv_stride(), kr);
  v_in.fetch(head_rows(qkv, p, j0, s, h, 2), p.qkv_stride(), kr);
  m_in.fetch(key_mask, j0, kr, p.B, s);
  q_in.fetch(head_rows(qkv, p, p.a + first, s, h, 0), p.qkv_stride(), min(kTile, p.nq - first));
  do_in.fetch(dout + (int64_t(first) * p.B + s) * p.C + h * kHead, dout_stride, min(kTile, p.nq - first));
  terms.fetch(lse, D, p, s, h, first);
  k_in.put(k_s);
  v_in.put(v_s);
  m_in.put(mask_s);
  FragC dk[kHead / 16], dv[kHead / 16];
  for (int n = 0; n < kHead / 16; ++n) {
    wmma::fill_fragment(dk[n], 0.f);
    wmma::fill_fragment(dv[n], 0.f);
  }
  const int r = lane / 2, c0 = (lane % 2) * 32, key = warp * 16 + r;  // this lane's key row and half
  const int j = j0 + key;
  for (int i0 = first; i0 < p.nq; i0 += kTile) {
    const int qr = min(kTile, p.nq - i0);
    __syncthreads();  // the previous query tile is no longer read
    q_in.put(q_s);
    do_in.put(do_s);
    terms.put(lse_s, d_s);
    __syncthreads();
    if (i0 + kTile < p.nq) {  // the next query tile's loads fly during this tile's work
      const int next = i0 + kTile, nr = min(kTile, p.nq - next);
      q_in.fetch(head_rows(qkv, p, p.a + next, s, h, 0), p.qkv_stride(), nr);
      do_in.fetch(dout + (int64_t(next) * p.B + s) * p.C + h * kHead, dout_stride, nr);
      terms.fetch(lse, D, p, s, h, next);
    }
    product_abt(pt_w, k_s + warp * 16 * kLdB, q_s);   // S^T: this warp's keys against the tile's queries
    product_abt(dpt_w, v_s + warp * 16 * kLdB, do_s);  // dP^T = V dO^T
    __syncwarp();
    float* prow = pt_w + r * kLdF;
    bf16* brow = b_w + r * kLdB;
    for (int c = 0; c < 32; ++c) {
      const int q = lane_column(c, r, c0), t = p.a + i0 + q;
      const bool visible = q < qr && j <= t && mask_s[key];
      const float pr = visible ? expf(prow[q] * p.scale - lse_s[q]) : 0.f;
      prow[q] = pr;
      brow[q] = __float2bfloat16_rn(pr);
    }
    __syncwarp();
    product_ab_accumulate(dv, b_w, do_s);  // dV += P^T dO
    __syncwarp();                          // P^T in bf16 is read: dS^T replaces it
    const float* dprow = dpt_w + r * kLdF;
    for (int c = 0; c < 32; ++c) {
      const int q = lane_column(c, r, c0);
      brow[q] = __float2bfloat16_rn(prow[q] * (dprow[q] - d_s[q]) * p.scale);
    }
    __syncwarp();
    product_ab_accumulate(dk, b_w, q_s);  // dK += dS^T Q
  }
  const int valid = min(16, kr - warp * 16);
  float* dk_g = dqkv + (int64_t(j0 + warp * 16) * p.B + s) * 3 * p.C + p.C + h * kHead;
  add_rows(dk_g, int64_t(p.B) * 3 * p.C, valid, dk, pt_w);
  add_rows(dk_g + p.C, int64_t(p.B) * 3 * p.C, valid, dv, pt_w);
}

// dQ of query rows [i0, i0 + 64) of pair blockIdx.y over every key they see. Shared
// memory as the dK/dV kernel's (Q, dO, K, V tiles, per warp S and dP, dS in bf16); the
// next key tile is fetched while this one is worked on.
__global__ void __launch_bounds__(kThreads) flash_backward_q_kernel(float* dqkv, const bf16* dout, const float* lse,
                                                                    const float* D, const bf16* qkv,
                                                                    const uint8_t* key_mask, Pass p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int pair = blockIdx.y, s = pair / p.H, h = pair % p.H, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int i0 = blockIdx.x * kTile, qr = min(kTile, p.nq - i0);
  const BackwardSmem m(smem, warp);
  bf16 *k_s = m.k, *v_s = m.v, *q_s = m.q, *do_s = m.dout, *b_w = m.b16;
  float *s_w = m.f32a, *dp_w = m.f32b, *lse_s = m.lse, *d_s = m.d;
  uint8_t* mask_s = m.mask;

  const int n_keys = p.a + i0 + qr;
  TileFetch q_in, do_in, k_in, v_in;
  MaskFetch m_in;
  RowTermsFetch terms;
  q_in.fetch(head_rows(qkv, p, p.a + i0, s, h, 0), p.qkv_stride(), qr);
  do_in.fetch(dout + (int64_t(i0) * p.B + s) * p.C + h * kHead, int64_t(p.B) * p.C, qr);
  terms.fetch(lse, D, p, s, h, i0);
  k_in.fetch(head_rows(qkv, p, 0, s, h, 1), p.qkv_stride(), min(kTile, n_keys));
  v_in.fetch(head_rows(qkv, p, 0, s, h, 2), p.qkv_stride(), min(kTile, n_keys));
  m_in.fetch(key_mask, 0, min(kTile, n_keys), p.B, s);
  q_in.put(q_s);
  do_in.put(do_s);
  terms.put(lse_s, d_s);
  FragC dq[kHead / 16];
  for (int n = 0; n < kHead / 16; ++n) wmma::fill_fragment(dq[n], 0.f);
  const int r = lane / 2, c0 = (lane % 2) * 32, row = warp * 16 + r;
  const int t = p.a + i0 + row;
  for (int k0 = 0; k0 < n_keys; k0 += kTile) {
    __syncthreads();  // the previous key tile is no longer read
    k_in.put(k_s);
    v_in.put(v_s);
    m_in.put(mask_s);
    __syncthreads();
    if (k0 + kTile < n_keys) {
      const int next = k0 + kTile, kr = min(kTile, n_keys - next);
      k_in.fetch(head_rows(qkv, p, next, s, h, 1), p.qkv_stride(), kr);
      v_in.fetch(head_rows(qkv, p, next, s, h, 2), p.qkv_stride(), kr);
      m_in.fetch(key_mask, next, kr, p.B, s);
    }
    product_abt(s_w, q_s + warp * 16 * kLdB, k_s);    // S = Q K^T
    product_abt(dp_w, do_s + warp * 16 * kLdB, v_s);  // dP = dO V^T
    __syncwarp();
    const float* srow = s_w + r * kLdF;
    const float* dprow = dp_w + r * kLdF;
    bf16* brow = b_w + r * kLdB;
    for (int c = 0; c < 32; ++c) {
      const int k = lane_column(c, r, c0), j = k0 + k;
      const bool visible = row < qr && j <= t && mask_s[k];
      const float pr = visible ? expf(srow[k] * p.scale - lse_s[row]) : 0.f;
      brow[k] = __float2bfloat16_rn(pr * (dprow[k] - d_s[row]) * p.scale);
    }
    __syncwarp();
    product_ab_accumulate(dq, b_w, k_s);  // dQ += dS K
  }
  const int valid = min(16, qr - warp * 16);
  float* dq_g = dqkv + (int64_t(p.a + i0 + warp * 16) * p.B + s) * 3 * p.C + h * kHead;
  add_rows(dq_g, int64_t(p.B) * 3 * p.C, valid, dq, s_w);
}

constexpr size_t kForwardSmem =
    3 * kTileB * sizeof(bf16) + 2 * kWarps * kWarpF * sizeof(float) + kWarps * kWarpB * sizeof(bf16) + kTile;
constexpr size_t kBackwardSmem = 4 * kTileB * sizeof(bf16) + 2 * kWarps * kWarpF * sizeof(float) +
                                 kWarps * kWarpB * sizeof(bf16) + 2 * kTile * sizeof(float) + kTile;

// Kernels over 48 KB of shared memory must say so once per process, before their
// first launch (which comes before any graph capture: the runner's first step is eager).
void allow_shared_memory() {
  static const bool done = [] {
    CUDA_CHECK(cudaFuncSetAttribute(flash_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(kForwardSmem)));
    CUDA_CHECK(cudaFuncSetAttribute(flash_backward_kv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(kBackwardSmem)));
    CUDA_CHECK(cudaFuncSetAttribute(flash_backward_q_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(kBackwardSmem)));
    return true;
  }();
  (void)done;
}

Pass check_pass(const void* qkv, const void* out, int a, int b, int B, int T, int C, int H) {
  COCONUT_CHECK(flash_attention_supported(C, H), "flash attention needs head size {} (C={} H={})", kHead, C, H);
  COCONUT_CHECK(0 <= a && a < b && b <= T && B > 0, "flash attention: columns [{}, {}) outside [0, {}) (B={})", a, b,
                T, B);
  COCONUT_CHECK(B * H <= 65535, "flash attention: {} (sequence, head) pairs exceed the grid's 65535 rows", B * H);
  COCONUT_CHECK(reinterpret_cast<uintptr_t>(qkv) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0,
                "flash attention: q|k|v and the output must be 16-byte aligned");
  return Pass{a, b - a, B, C, H, 1.f / sqrtf(float(kHead))};
}

}  // namespace

bool flash_attention_supported(int C, int H) { return H > 0 && C % H == 0 && C / H == kHead; }

size_t flash_attention_workspace_bytes(int B, int H, int nq) { return size_t(nq) * B * H * sizeof(float); }

void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, const uint8_t* key_mask, int a, int b, int B,
                             int T, int C, int H, cudaStream_t stream) {
  const Pass p = check_pass(qkv, out, a, b, B, T, C, H);
  allow_shared_memory();
  const dim3 grid((p.nq + kTile - 1) / kTile, B * H);
  flash_forward_kernel<<<grid, kThreads, kForwardSmem, stream>>>(out, lse, qkv, key_mask, p);
  CUDA_CHECK(cudaGetLastError());
}

void flash_attention_backward(float* dqkv, const bf16* dout, const bf16* out, const float* lse, const bf16* qkv,
                              const uint8_t* key_mask, int a, int b, int B, int T, int C, int H, void* workspace,
                              cudaStream_t stream) {
  const Pass p = check_pass(qkv, out, a, b, B, T, C, H);
  COCONUT_CHECK(workspace, "flash attention backward: no workspace (flash_attention_workspace_bytes)");
  COCONUT_CHECK(reinterpret_cast<uintptr_t>(dout) % 16 == 0, "flash attention: dout must be 16-byte aligned");
  allow_shared_memory();
  float* D = static_cast<float*>(workspace);
  const int64_t rows_heads = int64_t(p.nq) * B * H;
  flash_row_dot_kernel<<<(rows_heads * 32 + 255) / 256, 256, 0, stream>>>(D, dout, out, rows_heads, C, H);
  CUDA_CHECK(cudaGetLastError());
  const dim3 kv_grid((b + kTile - 1) / kTile, B * H), q_grid((p.nq + kTile - 1) / kTile, B * H);
  flash_backward_kv_kernel<<<kv_grid, kThreads, kBackwardSmem, stream>>>(dqkv, dout, lse, D, qkv, key_mask, p);
  CUDA_CHECK(cudaGetLastError());
  flash_backward_q_kernel<<<q_grid, kThreads, kBackwardSmem, stream>>>(dqkv, dout, lse, D, qkv, key_mask, p);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace coconut::gpu
