// Device helpers shared by the op files (ops_*.cu): fp32/bf16 loads and stores, a
// deterministic block reduction, the device Philox4x32-10 and launch sizes.
// Only for .cu files: the public interface is ops.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/ops.h"

namespace coconut::gpu::detail {

// Storage <-> arithmetic: every op computes in fp32 whatever it stores.
__device__ __forceinline__ float load(float x) { return x; }
__device__ __forceinline__ float load(bf16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T store(float x);
template <>
__device__ __forceinline__ float store<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 store<bf16>(float x) { return __float2bfloat16_rn(x); }

// Sum and maximum over the 32 lanes of a warp (all of them active): a butterfly of
// shuffles, the same order every call, so results are reproducible; every lane gets the
// result. The ops that give a warp one row (layer norm, the attention softmax) use them
// without any barrier.
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
constexpr int kWarp = 32;

// Sum over the threads of a block (blockDim.x a multiple of 32, at most 1024): warp
// shuffles, then the warp sums in warp order. The order is fixed, so results are
// reproducible. `shared` needs 32 floats; every thread gets the total.
__device__ __forceinline__ float block_sum(float x, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += shared[w];
  return total;
}
__device__ __forceinline__ float block_max(float x, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int o = 16; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  __syncthreads();
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < warps; ++w) m = fmaxf(m, shared[w]);
  return m;
}

// Philox4x32-10 as runtime/rng.cpp (same constants, same round order).
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint32_t k0, uint32_t k1) {
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c.x;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c.z;
    c = make_uint4(static_cast<uint32_t>(p1 >> 32) ^ c.y ^ k0, static_cast<uint32_t>(p1),
                   static_cast<uint32_t>(p0 >> 32) ^ c.w ^ k1, static_cast<uint32_t>(p0));
  }
  return c;
}

// u32 number `index` of a row's stream: word index % 4 of block index / 4, where the
// counter is (block index, stream hash) and the key the seed (CounterRng::block).
__device__ __forceinline__ uint32_t stream_word(const RowStream& s, uint64_t index) {
  const uint64_t block = index / 4;
  const uint4 w = philox4x32_10(make_uint4(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                                           static_cast<uint32_t>(s.hash), static_cast<uint32_t>(s.hash >> 32)),
                                s.key0, s.key1);
  switch (index % 4) {
    case 0: return w.x;
    case 1: return w.y;
    case 2: return w.z;
    default: return w.w;
  }
}

// Drop when the u32 draw is below p * 2^32, as model/ops.cpp.
inline uint32_t drop_threshold(float p) {
  return static_cast<uint32_t>(std::llround(static_cast<double>(p) * 0x1p32));
}

constexpr int kThreads = 256;
// Blocks for a grid-stride loop over n elements: enough to fill the largest GPUs.
inline int grid_for(int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 8192)));
}

// Deterministic column sums over many rows (bias and layer-norm parameter gradients),
// in two stages. Stage 1: the rows split into row_splits(N) chunks (grid.y); a block of
// kColTile x kColTile threads owns 32 columns of one chunk, thread (cx, ry) summing rows
// ry, ry + 32, ... of column cx, then the 32 partial sums in ry order (tile_column_sum).
// With one chunk the block adds its sums into the gradient; with more it writes them to
// scratch row `chunk`, and stage 2 (add_column_partials, ops_linear.cu) adds the chunks
// in chunk order. Fixed order, no atomics; enough blocks to use the whole GPU (one block
// per 32 columns left 24 of 132 SMs busy at C = 768).
constexpr int kColTile = 32, kMaxRowSplits = 16;
inline int row_splits(int N) { return std::clamp((N + 255) / 256, 1, kMaxRowSplits); }
inline int rows_per_split(int N) { return (N + row_splits(N) - 1) / row_splits(N); }

// The sum over ry of x (thread (cx, ry) of a kColTile x kColTile block), valid in the
// threads with ry == 0; `partial` is the block's [kColTile][kColTile + 1] shared array.
__device__ __forceinline__ float tile_column_sum(float x, float (*partial)[kColTile + 1]) {
  partial[threadIdx.y][threadIdx.x] = x;
  __syncthreads();
  float total = 0.f;
  if (threadIdx.y == 0)
    for (int k = 0; k < kColTile; ++k) total += partial[k][threadIdx.x];
  __syncthreads();  // `partial` may be reused by the caller
  return total;
}

// Stage 2: acc[c] += sum over chunks k < splits of partial[k * C + c], in chunk order.
void add_column_partials(float* acc, const float* partial, int splits, int C, cudaStream_t stream);

}  // namespace coconut::gpu::detail
