// The loss and the optimizer ops of ops.h: softmax cross-entropy on logits (and the
// greedy token of a row of logits, for decoding), AdamW on a
// shard (fp32 master weights, optional bf16 copy), the sum of squares behind the
// gradient norm, and clipping. Reductions run in a fixed order (reproducible).
#include <cmath>

#include "runtime/check.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/ops_common.cuh"

namespace coconut::gpu {
namespace {

using detail::grid_for;
using detail::kThreads;

// The running maximum m and sum of exp(x - m) of one thread, one logit more: the sum
// is rescaled when the maximum grows. A -inf logit while the maximum is still -inf adds
// nothing (exp(-inf - -inf) would be NaN; the CPU op adds exp(-inf) = 0); a NaN logit
// still makes the sum NaN, as on the CPU.
__device__ __forceinline__ void online_add(float x, float& m, float& sum) {
  if (x > m) {
    sum = sum * expf(m - x) + 1.f;
    m = x;
  } else if (!(x == -INFINITY && m == -INFINITY)) {
    sum += expf(x - m);
  }
}

// Four consecutive gradient values, stored at once (16 bytes in fp32, 8 in bf16).
__device__ __forceinline__ void store4(float* d, float a, float b, float c, float e) {
  *reinterpret_cast<float4*>(d) = make_float4(a, b, c, e);
}
__device__ __forceinline__ void store4(bf16* d, float a, float b, float c, float e) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, e);
  uint2 packed;
  memcpy(&packed.x, &lo, sizeof(lo));
  memcpy(&packed.y, &hi, sizeof(hi));
  *reinterpret_cast<uint2*>(d) = packed;
}

// One block per row, two passes over the logits: the running maximum and sum of
// exponentials in one (online_add; the block then merges the threads' pairs), the
// gradient written in the other. With `vec` (rows 16-byte aligned: ld a multiple of 4)
// both passes read float4s, thread t the groups t, t + blockDim, ..., and write four
// values at once; the last V % 4 columns, and every column without `vec`, one by one.
// Every thread reads the target logit before the first barrier, so no thread has
// overwritten it yet when dlogits is the logits themselves (each thread writes only the
// columns it read).
template <typename Out>
__global__ void cross_entropy_kernel(const float* logits, int ld, Out* dlogits, float* row_loss, const int* targets,
                                     int V, float scale_value, const float* scale_on_device, bool vec) {
  __shared__ float shared[32];
  const float scale = scale_on_device ? *scale_on_device : scale_value;
  const int64_t row = blockIdx.x;
  const float* z = logits + row * ld;
  Out* d = dlogits + row * ld;
  const int target = targets[row];
  if (target < 0) {  // ignored row (label -100): no loss, no gradient
    for (int v = threadIdx.x; v < ld; v += blockDim.x) d[v] = detail::store<Out>(0.f);
    if (threadIdx.x == 0) row_loss[row] = 0.f;
    return;
  }
  const float target_logit = z[target];
  const int groups = vec ? V / 4 : 0, tail = 4 * groups;
  const float4* z4 = reinterpret_cast<const float4*>(z);
  float m = -INFINITY, sum = 0.f;  // this thread's maximum and sum of exp(z - m)
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    const float4 x = z4[g];
    online_add(x.x, m, sum);
    online_add(x.y, m, sum);
    online_add(x.z, m, sum);
    online_add(x.w, m, sum);
  }
  for (int v = tail + threadIdx.x; v < V; v += blockDim.x) online_add(z[v], m, sum);
  const float row_max = detail::block_max(m, shared);
  sum = detail::block_sum(m == -INFINITY ? 0.f : sum * expf(m - row_max), shared);
  const float inv = 1.f / sum;
  auto grad = [&](float x, int v) { return expf(x - row_max) * inv * scale - (v == target ? scale : 0.f); };
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    const float4 x = z4[g];
    const int v = 4 * g;
    store4(d + v, grad(x.x, v), grad(x.y, v + 1), grad(x.z, v + 2), grad(x.w, v + 3));
  }
  for (int v = tail + threadIdx.x; v < V; v += blockDim.x) d[v] = detail::store<Out>(grad(z[v], v));
  for (int v = V + threadIdx.x; v < ld; v += blockDim.x) d[v] = detail::store<Out>(0.f);
  if (threadIdx.x == 0) row_loss[row] = (logf(sum) + row_max - target_logit) * scale;
}

// One block per row: each thread's first maximum over its strided columns, then a tree
// over the threads that keeps the larger value and, on equal values, the lower column:
// the first maximum of the row, as std::max_element on the CPU. NaNs as there too: one
// at column 0 is the answer (no value compares greater), one elsewhere never is.
__global__ void argmax_kernel(const float* logits, int ld, int V, int* out) {
  __shared__ float best_value[kThreads];
  __shared__ int best_column[kThreads];
  const float* z = logits + int64_t(blockIdx.x) * ld;
  if (isnan(z[0])) {  // every thread of the block returns here, before any barrier
    if (threadIdx.x == 0) out[blockIdx.x] = 0;
    return;
  }
  float value = -INFINITY;
  int column = V;
  for (int v = threadIdx.x; v < V; v += blockDim.x)
    if (!isnan(z[v]) && (z[v] > value || column == V)) value = z[v], column = v;
  best_value[threadIdx.x] = value;
  best_column[threadIdx.x] = column;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      const float other = best_value[threadIdx.x + half];
      const int other_column = best_column[threadIdx.x + half];
      const bool mine_empty = best_column[threadIdx.x] == V;
      if (other_column != V && (mine_empty || other > best_value[threadIdx.x] ||
                                (other == best_value[threadIdx.x] && other_column < best_column[threadIdx.x]))) {
        best_value[threadIdx.x] = other;
        best_column[threadIdx.x] = other_column;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = best_column[0];
}

// model::AdamW::step for one segment, element for element.
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2, float eps,
                             float decay, float step_size, float bias2_sqrt, bf16* p_bf16) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float w = p[i] * decay;
    const float gi = g[i];
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    const float denom = sqrtf(vi) / bias2_sqrt + eps;
    w -= step_size * mi / denom;
    m[i] = mi;
    v[i] = vi;
    p[i] = w;
    if (p_bf16) p_bf16[i] = __float2bfloat16_rn(w);
  }
}

// Stage 1 of the sum of squares: block b sums elements b*256 + t, strided by the grid,
// in double, then a fixed tree over the block's threads.
__global__ void sum_squares_partial_kernel(double* partial, const float* x, size_t n) {
  __shared__ double s[kThreads];
  double acc = 0.0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    acc += double(x[i]) * x[i];
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) s[threadIdx.x] += s[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

// Stage 2: the partial sums in block order (one thread: there are only a few hundred).
__global__ void sum_partials_kernel(double* out, const double* partial, int count) {
  double total = 0.0;
  for (int b = 0; b < count; ++b) total += partial[b];
  *out = total;
}

__global__ void scale_kernel(float* x, size_t n, float c) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] *= c;
}

template <typename Out>
void cross_entropy(const float* logits, int ld, Out* dlogits, float* row_loss, const int* targets, int N, int V,
                   float scale, const float* scale_on_device, cudaStream_t stream) {
  COCONUT_CHECK(N >= 0 && V > 0 && ld >= V, "cross_entropy: bad shape N={} V={} ld={}", N, V, ld);
  if (N == 0) return;
  // float4 reads need 16-byte aligned rows, and the gradient's four-value stores 16 (fp32)
  // or 8 (bf16) bytes: a row stride that is a multiple of 4 and aligned buffers.
  const bool vec = ld % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(dlogits) % (4 * sizeof(Out)) == 0;
  cross_entropy_kernel<<<N, kThreads, 0, stream>>>(logits, ld, dlogits, row_loss, targets, V, scale,
                                                   scale_on_device, vec);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void cross_entropy_forward_backward(const float* logits, int ld, float* dlogits, float* row_loss, const int* targets,
                                    int N, int V, float scale, cudaStream_t stream) {
  cross_entropy(logits, ld, dlogits, row_loss, targets, N, V, scale, nullptr, stream);
}
void cross_entropy_forward_backward(const float* logits, int ld, bf16* dlogits, float* row_loss, const int* targets,
                                    int N, int V, float scale, cudaStream_t stream) {
  cross_entropy(logits, ld, dlogits, row_loss, targets, N, V, scale, nullptr, stream);
}
void cross_entropy_forward_backward(const float* logits, int ld, float* dlogits, float* row_loss, const int* targets,
                                    int N, int V, const float* scale, cudaStream_t stream) {
  cross_entropy(logits, ld, dlogits, row_loss, targets, N, V, 0.f, scale, stream);
}
void cross_entropy_forward_backward(const float* logits, int ld, bf16* dlogits, float* row_loss, const int* targets,
                                    int N, int V, const float* scale, cudaStream_t stream) {
  cross_entropy(logits, ld, dlogits, row_loss, targets, N, V, 0.f, scale, stream);
}

void argmax_rows(const float* logits, int ld, int N, int V, int* out, cudaStream_t stream) {
  COCONUT_CHECK(N >= 0 && V > 0 && ld >= V, "argmax_rows: bad shape N={} V={} ld={}", N, V, ld);
  if (N == 0) return;
  argmax_kernel<<<N, kThreads, 0, stream>>>(logits, ld, V, out);
  CUDA_CHECK(cudaGetLastError());
}

void adamw_step(float* params, const float* grads, float* m, float* v, size_t shard_begin,
                const std::vector<DecaySegment>& segments, const AdamWHyper& hyper, int64_t step, bf16* params_bf16,
                cudaStream_t stream) {
  COCONUT_CHECK(step >= 1, "adamw_step: step count {} (it counts the update being made, from 1)", step);
  // The scalars in the same precision and order as model::AdamW::step.
  const double bias1 = 1.0 - std::pow(static_cast<double>(hyper.beta1), static_cast<double>(step));
  const double bias2 = 1.0 - std::pow(static_cast<double>(hyper.beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(hyper.lr / bias1);
  const float bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  for (const DecaySegment& seg : segments) {
    COCONUT_CHECK(seg.begin >= shard_begin && seg.begin <= seg.end, "adamw_step: segment [{}, {}) before the shard "
                  "start {}", seg.begin, seg.end, shard_begin);
    const int64_t n = static_cast<int64_t>(seg.end - seg.begin);
    if (n == 0) continue;
    const float decay = seg.decay ? 1.f - hyper.lr * hyper.weight_decay : 1.f;
    const size_t local = seg.begin - shard_begin;
    adamw_kernel<<<grid_for(n), kThreads, 0, stream>>>(params + seg.begin, grads + seg.begin, m + local, v + local, n,
                                                       hyper.beta1, hyper.beta2, hyper.eps, decay, step_size,
                                                       bias2_sqrt, params_bf16 ? params_bf16 + seg.begin : nullptr);
    CUDA_CHECK(cudaGetLastError());
  }
}

void sum_of_squares(double* out, const float* x, size_t n, double* partial, cudaStream_t stream) {
  sum_squares_partial_kernel<<<kSumSquaresBlocks, kThreads, 0, stream>>>(partial, x, n);
  CUDA_CHECK(cudaGetLastError());
  sum_partials_kernel<<<1, 1, 0, stream>>>(out, partial, kSumSquaresBlocks);
  CUDA_CHECK(cudaGetLastError());
}

double sum_of_squares_host(const float* x, size_t n, cudaStream_t stream) {
  DeviceBuffer<double> scratch(kSumSquaresBlocks + 1);
  sum_of_squares(scratch.data() + kSumSquaresBlocks, x, n, scratch.data(), stream);
  double result = 0;
  CUDA_CHECK(cudaMemcpyAsync(&result, scratch.data() + kSumSquaresBlocks, sizeof(double), cudaMemcpyDeviceToHost,
                             stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return result;
}

void clip_grads(float* grads, size_t n, double global_norm, float max_norm, cudaStream_t stream) {
  COCONUT_CHECK(max_norm > 0.f, "gradient clipping needs max_norm > 0 (got {})", max_norm);
  const double coef = std::min(1.0, max_norm / (global_norm + 1e-6));
  if (coef >= 1.0 || n == 0) return;
  scale_kernel<<<grid_for(static_cast<int64_t>(n)), kThreads, 0, stream>>>(grads, n, static_cast<float>(coef));
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace coconut::gpu
