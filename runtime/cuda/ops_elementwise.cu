// Row-wise and element-wise ops of ops.h: conversions, embeddings, layer norm, GELU,
// residual add and dropout, each a template over the storage type (float or bf16)
// with fp32 arithmetic. Kernels are deliberately plain (one block per row for row
// reductions, grid-stride loops otherwise) so that they are easy to check against the
// CPU ops; reductions run in a fixed order, so every result is reproducible.
#include <cub/device/device_radix_sort.cuh>

#include "runtime/check.h"
#include "runtime/cuda/ops_common.cuh"
#include "runtime/rng.h"

namespace coconut::gpu {
namespace {

using detail::grid_for;
using detail::kThreads;
using detail::load;
using detail::store;

// ---------------------------------------------------------------- conversions

template <typename To, typename From>
__global__ void convert_kernel(To* out, const From* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = store<To>(load(in[i]));
}

// ---------------------------------------------------------------- embeddings

template <typename T>
__global__ void gather_rows_kernel(T* out, const T* table, const int* ids, int n, int C) {
  const int64_t total = int64_t(n) * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / C, c = i % C;
    out[i] = table[int64_t(ids[r]) * C + c];
  }
}

template <typename T>
__global__ void scatter_rows_kernel(T* out, const T* in, const int* ids, int n, int C) {
  const int64_t total = int64_t(n) * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / C, c = i % C;
    out[int64_t(ids[r]) * C + c] = in[i];
  }
}

template <typename T>
__global__ void add_rows_kernel(T* x, const T* in, const T* table, const int* ids, int n, int C) {
  const int64_t total = int64_t(n) * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / C, c = i % C;
    x[i] = store<T>(load(in[i]) + load(table[int64_t(ids[r]) * C + c]));
  }
}

// dtable[ids[r]] += d[r] over the rows in order, without atomics. The ids arrive
// sorted by a stable sort (equal ids keep their row order), with their rows; the block
// of the first entry of each run of equal ids adds the run's rows, in order, into
// dtable: the additions of a sequential walk over the rows, in its order (reproducible
// bits), with one block per distinct id working in parallel.
template <typename T>
__global__ void add_sorted_runs_kernel(float* dtable, const T* d, const int* sorted_ids, const int* sorted_rows, int n,
                                       int C) {
  const int i = blockIdx.x, id = sorted_ids[i];
  if (i > 0 && sorted_ids[i - 1] == id) return;  // inside a run: its first block adds it
  float* out = dtable + int64_t(id) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float sum = out[c];
    for (int j = i; j < n && sorted_ids[j] == id; ++j) sum += load(d[int64_t(sorted_rows[j]) * C + c]);
    out[c] = sum;
  }
}

// The same sums without a sort, for a few rows: block i returns when an earlier row has
// its id (that row's block adds the run), else adds the rows of its id in row order, as
// add_sorted_runs_kernel does after the stable sort: the same additions, the same bits.
template <typename T>
__global__ void add_unsorted_runs_kernel(float* dtable, const T* d, const int* ids, int n, int C) {
  const int i = blockIdx.x, id = ids[i];
  for (int j = 0; j < i; ++j)
    if (ids[j] == id) return;  // the same for every thread of the block
  float* out = dtable + int64_t(id) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float sum = out[c];
    for (int j = i; j < n; ++j)
      if (ids[j] == id) sum += load(d[int64_t(j) * C + c]);
    out[c] = sum;
  }
}

__global__ void iota_kernel(int* out, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = i;
}

// The workspace of scatter_add_rows: sorted ids, row numbers, sorted rows, CUB's scratch.
struct SortScratch {
  int *sorted_ids, *rows, *sorted_rows;
  void* cub;
  size_t cub_bytes;
};
size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }
size_t cub_sort_bytes(int n) {
  size_t bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int*>(nullptr),
                                             static_cast<int*>(nullptr), static_cast<const int*>(nullptr),
                                             static_cast<int*>(nullptr), n));
  return bytes;
}
SortScratch sort_scratch(void* workspace, int n) {
  COCONUT_CHECK(workspace, "embedding backward: no workspace (size it with embedding_backward_workspace_bytes)");
  char* p = static_cast<char*>(workspace);
  const size_t ints = align256(size_t(n) * sizeof(int));
  return {reinterpret_cast<int*>(p), reinterpret_cast<int*>(p + ints), reinterpret_cast<int*>(p + 2 * ints),
          p + 3 * ints, cub_sort_bytes(n)};
}

// ids in [0, table_rows).
template <typename T>
void scatter_add_rows(float* dtable, const T* d, const int* ids, int n, int C, int table_rows, void* workspace,
                      cudaStream_t stream) {
  if (n == 0) return;
  COCONUT_CHECK(table_rows > 0, "embedding backward into a table of {} rows", table_rows);
  if (n <= kUnsortedEmbeddingRows) {
    add_unsorted_runs_kernel<<<n, 256, 0, stream>>>(dtable, d, ids, n, C);
    CUDA_CHECK(cudaGetLastError());
    return;
  }
  SortScratch s = sort_scratch(workspace, n);
  iota_kernel<<<grid_for(n), kThreads, 0, stream>>>(s.rows, n);
  CUDA_CHECK(cudaGetLastError());
  // LSD radix sort: stable, so the rows of one id stay in increasing order. Only the
  // bits an id can have (16 for GPT-2's vocabulary, 10 for its positions): fewer digit
  // passes than all 32.
  int bits = 1;
  while (bits < 31 && (int64_t(1) << bits) < table_rows) ++bits;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(s.cub, s.cub_bytes, ids, s.sorted_ids, s.rows, s.sorted_rows, n, 0,
                                             bits, stream));
  add_sorted_runs_kernel<<<n, 256, 0, stream>>>(dtable, d, s.sorted_ids, s.sorted_rows, n, C);
  CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------- layer norm

// One warp per row (kRowsPerBlock rows a block): mean, then the variance around it (two
// passes, as the CPU op), each lane summing the columns lane, lane + 32, ... and the warp
// adding the lanes' sums with shuffles: no shared memory and no barrier, which a block
// per row of 768 columns spent most of its time on. The row's later passes read it
// from L1.
constexpr int kRowsPerBlock = 8;

template <typename T>
__global__ void layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b,
                                         int N, int C, float eps) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / detail::kWarp;
  if (row >= N) return;  // the whole warp: nothing below synchronises the block
  const int lane = threadIdx.x % detail::kWarp;
  const T* x = inp + row * C;
  T* y = out + row * C;
  float s = 0.f;
  for (int c = lane; c < C; c += detail::kWarp) s += load(x[c]);
  const float m = detail::warp_sum(s) / C;
  float v = 0.f;
  for (int c = lane; c < C; c += detail::kWarp) {
    const float d = load(x[c]) - m;
    v += d * d;
  }
  const float r = 1.f / sqrtf(detail::warp_sum(v) / C + eps);
  for (int c = lane; c < C; c += detail::kWarp) y[c] = store<T>((load(x[c]) - m) * r * load(w[c]) + load(b[c]));
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// dx += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * w; one
// warp per row as the forward.
template <typename T>
__global__ void layernorm_backward_input_kernel(T* dinp, const T* dout, const T* inp, const T* w, const float* mean,
                                                const float* rstd, int N, int C) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / detail::kWarp;
  if (row >= N) return;
  const int lane = threadIdx.x % detail::kWarp;
  const T* x = inp + row * C;
  const T* dy = dout + row * C;
  T* dx = dinp + row * C;
  const float m = mean[row], s = rstd[row];
  float sum_dxhat = 0.f, sum_dxhat_xhat = 0.f;
  for (int c = lane; c < C; c += detail::kWarp) {
    const float dxhat = load(dy[c]) * load(w[c]);
    sum_dxhat += dxhat;
    sum_dxhat_xhat += dxhat * (load(x[c]) - m) * s;
  }
  sum_dxhat = detail::warp_sum(sum_dxhat) / C;
  sum_dxhat_xhat = detail::warp_sum(sum_dxhat_xhat) / C;
  for (int c = lane; c < C; c += detail::kWarp) {
    const float xhat = (load(x[c]) - m) * s;
    dx[c] = store<T>(load(dx[c]) + s * (load(dy[c]) * load(w[c]) - sum_dxhat - xhat * sum_dxhat_xhat));
  }
}

// Blocks of kRowsPerBlock warps over N rows.
inline int row_blocks(int N) { return (N + kRowsPerBlock - 1) / kRowsPerBlock; }

// The parameter gradients dw = sum over rows of dy * xhat, db = sum of dy: column sums
// in two stages (ops_common.cuh); stage 1 over chunk blockIdx.y of `chunk` rows, into
// dw/db (one chunk) or into partial rows blockIdx.y (dw) and splits + blockIdx.y (db).
template <typename T>
__global__ void __launch_bounds__(detail::kColTile * detail::kColTile)
    layernorm_backward_params_kernel(float* dw, float* db, float* partial, const T* dout, const T* inp,
                                     const float* mean, const float* rstd, int N, int C, int chunk) {
  __shared__ float tile[detail::kColTile][detail::kColTile + 1];
  const int c = blockIdx.x * detail::kColTile + threadIdx.x;
  const int r0 = blockIdx.y * chunk, r1 = min(N, r0 + chunk);
  float acc_w = 0.f, acc_b = 0.f;
  if (c < C) {
    for (int r = r0 + threadIdx.y; r < r1; r += detail::kColTile) {
      const float dy = load(dout[int64_t(r) * C + c]);
      acc_w += dy * (load(inp[int64_t(r) * C + c]) - mean[r]) * rstd[r];
      acc_b += dy;
    }
  }
  acc_w = detail::tile_column_sum(acc_w, tile);
  acc_b = detail::tile_column_sum(acc_b, tile);
  if (threadIdx.y == 0 && c < C) {
    if (gridDim.y == 1) {
      dw[c] += acc_w;
      db[c] += acc_b;
    } else {
      partial[int64_t(blockIdx.y) * C + c] = acc_w;
      partial[int64_t(gridDim.y + blockIdx.y) * C + c] = acc_b;
    }
  }
}

// ---------------------------------------------------------------- GELU, add

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)

template <typename T>
__global__ void gelu_forward_kernel(T* out, const T* inp, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = load(inp[i]);
    const float u = kGeluScale * (x + 0.044715f * x * x * x);
    out[i] = store<T>(0.5f * x * (1.f + tanhf(u)));
  }
}

template <typename T>
__global__ void gelu_backward_kernel(T* dinp, const T* inp, const T* dout, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = load(inp[i]);
    const float u = kGeluScale * (x + 0.044715f * x * x * x);
    const float t = tanhf(u);
    const float du = kGeluScale * (1.f + 3.f * 0.044715f * x * x);
    const float grad = 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * du;
    dinp[i] = store<T>(grad * load(dout[i]));
  }
}

template <typename T>
__global__ void add_kernel(T* out, const T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = store<T>(load(a[i]) + load(b[i]));
}

// ---------------------------------------------------------------- dropout

__global__ void dropout_words_kernel(uint32_t* out, RowStream rs, uint64_t first, int n) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e < n) out[e] = detail::stream_word(rs, first + e);
}

// One thread per element; each computes its own Philox block (10 rounds of integer
// multiplies, cheap next to the memory traffic, and no state between elements).
template <typename T>
__global__ void dropout_kernel(T* out, const T* in, int rows, int width, const RowStream* streams, uint64_t first,
                               uint32_t threshold, float scale) {
  const int64_t total = int64_t(rows) * width;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / width, e = i % width;
    const uint32_t u = detail::stream_word(streams[r], first + e);
    out[i] = store<T>(u >= threshold ? load(in[i]) * scale : 0.f);
  }
}

// ---------------------------------------------------------------- launch helpers

template <typename T>
void layernorm_forward_t(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b, int N, int C,
                         float eps, cudaStream_t stream) {
  COCONUT_CHECK(N >= 0 && C > 0, "layernorm_forward: bad shape N={} C={}", N, C);
  if (N == 0) return;
  layernorm_forward_kernel<<<row_blocks(N), kRowsPerBlock * detail::kWarp, 0, stream>>>(out, mean, rstd, inp, w, b,
                                                                                        N, C, eps);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void layernorm_backward_t(T* dinp, float* dw, float* db, const T* dout, const T* inp, const T* w, const float* mean,
                          const float* rstd, int N, int C, float* scratch, cudaStream_t stream) {
  COCONUT_CHECK(N >= 0 && C > 0, "layernorm_backward: bad shape N={} C={}", N, C);
  if (N == 0) return;
  layernorm_backward_input_kernel<<<row_blocks(N), kRowsPerBlock * detail::kWarp, 0, stream>>>(dinp, dout, inp, w,
                                                                                                mean, rstd, N, C);
  CUDA_CHECK(cudaGetLastError());
  const int splits = detail::row_splits(N);
  COCONUT_CHECK(splits == 1 || scratch, "layernorm_backward over {} rows needs scratch (column_sums_scratch_floats)",
                N);
  const dim3 grid((C + detail::kColTile - 1) / detail::kColTile, splits), threads(detail::kColTile, detail::kColTile);
  layernorm_backward_params_kernel<<<grid, threads, 0, stream>>>(dw, db, scratch, dout, inp, mean, rstd, N, C,
                                                                 detail::rows_per_split(N));
  CUDA_CHECK(cudaGetLastError());
  if (splits > 1) {
    detail::add_column_partials(dw, scratch, splits, C, stream);
    detail::add_column_partials(db, scratch + size_t(splits) * C, splits, C, stream);
  }
}

template <typename T>
void dropout_apply_t(T* out, const T* in, int rows, int width, const DropoutKeys& d, cudaStream_t stream) {
  COCONUT_CHECK(d.p >= 0.f && d.p < 1.f, "dropout probability {} outside [0, 1)", d.p);
  COCONUT_CHECK(d.rows || rows == 0, "dropout_apply: no row streams for {} rows", rows);
  const int64_t n = int64_t(rows) * width;
  if (n == 0) return;
  dropout_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, in, rows, width, d.rows, d.first,
                                                       detail::drop_threshold(d.p), 1.f / (1.f - d.p));
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

// ---------------------------------------------------------------- public entry points

void convert(bf16* out, const float* in, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  convert_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, in, n);
  CUDA_CHECK(cudaGetLastError());
}
void convert(float* out, const bf16* in, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  convert_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, in, n);
  CUDA_CHECK(cudaGetLastError());
}

#define COCONUT_GPU_EMBEDDINGS(T)                                                                               \
  void embed_tokens(T* out, const T* wte, const int* tokens, int n, int C, cudaStream_t stream) {              \
    if (n == 0) return;                                                                                        \
    gather_rows_kernel<<<grid_for(int64_t(n) * C), kThreads, 0, stream>>>(out, wte, tokens, n, C);              \
    CUDA_CHECK(cudaGetLastError());                                                                            \
  }                                                                                                            \
  void scatter_rows(T* out, const T* in, const int* ids, int n, int C, cudaStream_t stream) {                  \
    if (n == 0) return;                                                                                        \
    scatter_rows_kernel<<<grid_for(int64_t(n) * C), kThreads, 0, stream>>>(out, in, ids, n, C);                 \
    CUDA_CHECK(cudaGetLastError());                                                                            \
  }                                                                                                            \
  void embed_tokens_backward(float* dwte, const T* d, const int* tokens, int n, int C, int V, void* workspace, \
                             cudaStream_t stream) {                                                            \
    if (n == 0) return;                                                                                        \
    scatter_add_rows(dwte, d, tokens, n, C, V, workspace, stream);                                             \
  }                                                                                                            \
  void add_position_embedding(T* x, const T* in, const T* wpe, const int* pos, int n, int C,                    \
                              cudaStream_t stream) {                                                           \
    if (n == 0) return;                                                                                        \
    add_rows_kernel<<<grid_for(int64_t(n) * C), kThreads, 0, stream>>>(x, in, wpe, pos, n, C);                  \
    CUDA_CHECK(cudaGetLastError());                                                                            \
  }                                                                                                            \
  void position_embedding_backward(float* dwpe, const T* d, const int* pos, int n, int C, int max_positions,   \
                                   void* workspace, cudaStream_t stream) {                                     \
    if (n == 0) return;                                                                                        \
    scatter_add_rows(dwpe, d, pos, n, C, max_positions, workspace, stream);                                    \
  }
COCONUT_GPU_EMBEDDINGS(float)
COCONUT_GPU_EMBEDDINGS(bf16)
#undef COCONUT_GPU_EMBEDDINGS

size_t embedding_backward_workspace_bytes(int n) {
  COCONUT_CHECK(n >= 0, "embedding backward of {} rows", n);
  return 3 * align256(size_t(n) * sizeof(int)) + align256(cub_sort_bytes(n));
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                       int N, int C, float eps, cudaStream_t stream) {
  layernorm_forward_t(out, mean, rstd, inp, w, b, N, C, eps, stream);
}
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* w, const bf16* b, int N,
                       int C, float eps, cudaStream_t stream) {
  layernorm_forward_t(out, mean, rstd, inp, w, b, N, C, eps, stream);
}
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int N, int C, float* scratch, cudaStream_t stream) {
  layernorm_backward_t(dinp, dw, db, dout, inp, w, mean, rstd, N, C, scratch, stream);
}
void layernorm_backward(bf16* dinp, float* dw, float* db, const bf16* dout, const bf16* inp, const bf16* w,
                        const float* mean, const float* rstd, int N, int C, float* scratch, cudaStream_t stream) {
  layernorm_backward_t(dinp, dw, db, dout, inp, w, mean, rstd, N, C, scratch, stream);
}

#define COCONUT_GPU_POINTWISE(T)                                                                     \
  void gelu_forward(T* out, const T* inp, int64_t n, cudaStream_t stream) {                         \
    if (n == 0) return;                                                                             \
    gelu_forward_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, inp, n);                          \
    CUDA_CHECK(cudaGetLastError());                                                                 \
  }                                                                                                 \
  void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n, cudaStream_t stream) {        \
    if (n == 0) return;                                                                             \
    gelu_backward_kernel<<<grid_for(n), kThreads, 0, stream>>>(dinp, inp, dout, n);                  \
    CUDA_CHECK(cudaGetLastError());                                                                 \
  }                                                                                                 \
  void add_forward(T* out, const T* a, const T* b, int64_t n, cudaStream_t stream) {                \
    if (n == 0) return;                                                                             \
    add_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, a, b, n);                                  \
    CUDA_CHECK(cudaGetLastError());                                                                 \
  }                                                                                                 \
  void dropout_apply(T* out, const T* in, int rows, int width, const DropoutKeys& d, cudaStream_t stream) { \
    dropout_apply_t(out, in, rows, width, d, stream);                                               \
  }
COCONUT_GPU_POINTWISE(float)
COCONUT_GPU_POINTWISE(bf16)
#undef COCONUT_GPU_POINTWISE

RowStream row_stream(const CounterRng& rng) {
  const std::array<uint32_t, 2> key = rng.key();
  return RowStream{key[0], key[1], rng.stream_hash()};
}

void dropout_words(uint32_t* out, RowStream rs, uint64_t first, int n, cudaStream_t stream) {
  if (n <= 0) return;
  dropout_words_kernel<<<(n + kThreads - 1) / kThreads, kThreads, 0, stream>>>(out, rs, first, n);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace coconut::gpu
