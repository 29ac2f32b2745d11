// CPU implementations of the decoder ops: BLAS for matrix products, OpenMP for the
// rest. Parallel loops split work so that every output element is written by one
// thread in a fixed order: results are bitwise reproducible for a given thread count.
#include "model/ops.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/blas.h"
#include "runtime/check.h"
#include "runtime/rng.h"
#include "runtime/threads.h"

namespace coconut::model {
namespace {

// Column blocks for reductions over rows (bias and layer-norm parameter gradients):
// each thread owns whole columns, so the sum order over rows never changes.
constexpr int kColumnBlock = 64;

// Loops with less work than this many elements run on one thread: for the small
// matrices of latent passes and tiny models, forking threads costs more than it saves
// (and on a loaded machine a descheduled thread stalls the whole team at the barrier).
constexpr int64_t kParallelMin = 1 << 15;

void sum_rows_into(float* acc, const float* x, int N, int C) {
  const int blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C > kParallelMin)
  for (int blk = 0; blk < blocks; ++blk) {
    const int c0 = blk * kColumnBlock, c1 = std::min(C, c0 + kColumnBlock);
    for (int r = 0; r < N; ++r) {
      const float* row = x + static_cast<int64_t>(r) * C;
      for (int c = c0; c < c1; ++c) acc[c] += row[c];
    }
  }
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                       int N, int C, float eps) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C > kParallelMin)
  for (int r = 0; r < N; ++r) {
    const float* x = inp + static_cast<int64_t>(r) * C;
    float* y = out + static_cast<int64_t>(r) * C;
    float m = 0.f;
#pragma omp simd reduction(+ : m)
    for (int c = 0; c < C; ++c) m += x[c];
    m /= C;
    float v = 0.f;
#pragma omp simd reduction(+ : v)
    for (int c = 0; c < C; ++c) v += (x[c] - m) * (x[c] - m);
    v /= C;
    const float s = 1.f / std::sqrt(v + eps);
    for (int c = 0; c < C; ++c) y[c] = (x[c] - m) * s * w[c] + b[c];
    mean[r] = m;
    rstd[r] = s;
  }
}

void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int N, int C) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C > kParallelMin)
  for (int r = 0; r < N; ++r) {
    const float* x = inp + static_cast<int64_t>(r) * C;
    const float* dy = dout + static_cast<int64_t>(r) * C;
    float* dx = dinp + static_cast<int64_t>(r) * C;
    const float m = mean[r], s = rstd[r];
    // dxhat = dy * w; dx = s * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    float sum_dxhat = 0.f, sum_dxhat_xhat = 0.f;
#pragma omp simd reduction(+ : sum_dxhat, sum_dxhat_xhat)
    for (int c = 0; c < C; ++c) {
      const float xhat = (x[c] - m) * s;
      const float dxhat = dy[c] * w[c];
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * xhat;
    }
    sum_dxhat /= C;
    sum_dxhat_xhat /= C;
    for (int c = 0; c < C; ++c) {
      const float xhat = (x[c] - m) * s;
      dx[c] += s * (dy[c] * w[c] - sum_dxhat - xhat * sum_dxhat_xhat);
    }
  }
  const int blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C > kParallelMin)
  for (int blk = 0; blk < blocks; ++blk) {
    const int c0 = blk * kColumnBlock, c1 = std::min(C, c0 + kColumnBlock);
    for (int r = 0; r < N; ++r) {
      const float* x = inp + static_cast<int64_t>(r) * C;
      const float* dy = dout + static_cast<int64_t>(r) * C;
      const float m = mean[r], s = rstd[r];
      for (int c = c0; c < c1; ++c) {
        dw[c] += dy[c] * (x[c] - m) * s;
        db[c] += dy[c];
      }
    }
  }
}

void linear_forward(float* out, const float* inp, const float* w, const float* bias, int N, int IC, int OC) {
  if (N == 0) return;
  float beta = 0.f;
  if (bias) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * OC > kParallelMin)
    for (int r = 0; r < N; ++r) std::memcpy(out + static_cast<int64_t>(r) * OC, bias, sizeof(float) * OC);
    beta = 1.f;
  }
  sgemm(false, false, N, OC, IC, 1.f, inp, IC, w, OC, beta, out, OC);
}

void linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
                     int N, int IC, int OC) {
  if (N == 0) return;
  sgemm(false, true, N, IC, OC, 1.f, dout, OC, w, OC, 0.f, dinp, IC);  // dinp = dout W^T
  sgemm(true, false, IC, OC, N, 1.f, inp, IC, dout, OC, 1.f, dw, OC);  // dW += inp^T dout
  if (dbias) sum_rows_into(dbias, dout, N, OC);
}

namespace {
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
}

// tanh through a polynomial exp (Cephes' expf coefficients, ~1e-7 relative error) so
// that the GELU loops vectorise; std::tanh is a scalar libm call and made GELU a tenth
// of the training step.
inline float exp_poly(float x) {
  x = std::min(88.f, std::max(-87.f, x));
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  return p * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}
inline float tanh_poly(float u) { return 1.f - 2.f / (exp_poly(2.f * u) + 1.f); }

void gelu_forward(float* out, const float* inp, int64_t n) {
  parallel_chunks(n, kParallelMin, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float x = inp[i];
      const float u = kGeluScale * (x + 0.044715f * x * x * x);
      out[i] = 0.5f * x * (1.f + tanh_poly(u));
    }
  });
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  parallel_chunks(n, kParallelMin, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float x = inp[i];
      const float u = kGeluScale * (x + 0.044715f * x * x * x);
      const float t = tanh_poly(u);
      const float du = kGeluScale * (1.f + 3.f * 0.044715f * x * x);
      const float grad = 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * du;
      dinp[i] = grad * dout[i];
    }
  });
}

void add_forward(float* out, const float* a, const float* b, int64_t n) {
  parallel_chunks(n, kParallelMin, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) out[i] = a[i] + b[i];
  });
}

// ---------------------------------------------------------------- dropout

namespace {

// Drop when the u32 draw is below p * 2^32 (p < 1, so the threshold fits in 32 bits).
uint32_t drop_threshold(float p) { return static_cast<uint32_t>(std::llround(static_cast<double>(p) * 0x1p32)); }

// Keep factors (0 or 1/(1-p)) of query row i (column a + i) of one (sequence s, head h)
// pair of attention probabilities p[0, n). Zero probabilities (future or masked keys)
// draw nothing: whatever their factor, they contribute nothing forward or backward.
// The visible keys' positions are usually consecutive, so their draws come in one run.
void attention_keep_row(float* keep, const float* p, int n, int a, int i, int s, int h, int B, const Dropout& d,
                        std::vector<uint32_t>& words) {
  const uint32_t threshold = drop_threshold(d.p);
  const float scale = 1.f / (1.f - d.p);
  std::fill(keep, keep + n, 0.f);
  n = std::min(n, a + i + 1);  // causal: later keys have probability 0
  int lo = INT32_MAX, hi = -1;
  for (int j = 0; j < n; ++j) {
    if (p[j] == 0.f) continue;
    lo = std::min(lo, d.key_pos[static_cast<int64_t>(j) * B + s]);
    hi = std::max(hi, d.key_pos[static_cast<int64_t>(j) * B + s]);
  }
  if (hi < 0) return;
  words.resize(hi - lo + 1);
  dropout_words(d.rows[static_cast<int64_t>(i) * B + s], d.first + static_cast<uint64_t>(h) * d.head_stride + lo,
                hi - lo + 1, words.data());
  for (int j = 0; j < n; ++j)
    if (p[j] != 0.f && words[d.key_pos[static_cast<int64_t>(j) * B + s] - lo] >= threshold) keep[j] = scale;
}

}  // namespace

void dropout_words(const CounterRng& stream, uint64_t first, int n, uint32_t* out) {
  uint64_t block = first / 4;
  int word = static_cast<int>(first % 4), e = 0;
  while (e < n) {
    const std::array<uint32_t, 4> w = stream.block(block++);
    for (; word < 4 && e < n; ++word) out[e++] = w[word];
    word = 0;
  }
}

void dropout_apply(float* out, const float* in, int rows, int width, const Dropout& d) {
  const uint32_t threshold = drop_threshold(d.p);
  const float scale = 1.f / (1.f - d.p);
#pragma omp parallel
  {
    // The row's draws first, then a branch-free loop that vectorises.
    std::vector<uint32_t> words(width);
#pragma omp for schedule(static)
    for (int r = 0; r < rows; ++r) {
      dropout_words(d.rows[r], d.first, width, words.data());
      const uint32_t* u = words.data();
      const float* x = in + static_cast<int64_t>(r) * width;
      float* y = out + static_cast<int64_t>(r) * width;
#pragma omp simd
      for (int e = 0; e < width; ++e) y[e] = u[e] >= threshold ? x[e] * scale : 0.f;
    }
  }
}

// ---------------------------------------------------------------- attention

// Attention is parallel over (sequence, head) pairs: each pair owns its slice of the
// q|k|v columns, so the backward can accumulate dK/dV of all columns without races.
// Within a pair the products are BLAS calls on strided views (row stride B*3C for
// q|k|v, B*C for the output); inside the parallel region OpenBLAS runs them
// single-threaded, so the result does not depend on the thread count.
namespace {

// Masked, causal softmax of one query row over keys [0, n): keys after the query's
// column t or hidden by the key mask get probability 0. A query with no visible key
// (a left-pad column) gets all zeros; it carries no label.
void softmax_row(float* p, int n, int t, const uint8_t* key_mask, int B, int s) {
  const int seen = std::min(n, t + 1);  // keys [0, seen) are not in the query's future
  for (int j = 0; j < seen; ++j)
    if (!key_mask[static_cast<int64_t>(j) * B + s]) p[j] = -INFINITY;
  float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
  for (int j = 0; j < seen; ++j) maxv = std::max(maxv, p[j]);
  if (maxv == -INFINITY) {
    std::fill(p, p + n, 0.f);
    return;
  }
  // exp_poly rather than std::exp, and a simd sum: std::exp is a scalar libm call and a
  // sequential sum a chain of dependent adds (together a fifth of a small model's step).
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < seen; ++j) {
    p[j] = p[j] == -INFINITY ? 0.f : exp_poly(p[j] - maxv);
    sum += p[j];
  }
  const float inv = 1.f / sum;
  for (int j = 0; j < seen; ++j) p[j] *= inv;
  std::fill(p + seen, p + n, 0.f);
}

// Queries are taken in blocks of this many rows so that each block multiplies only by the
// keys it can see (causal): a full pass then does about half the products of T x T.
constexpr int kQueryBlock = 64;

}  // namespace

void attention_forward(float* out, float* probs, const float* qkv, const uint8_t* key_mask, int a, int b, int B,
                       int T, int C, int H, const Dropout* drop, int64_t probs_row0) {
  COCONUT_CHECK(!drop || probs, "attention dropout needs the saved probabilities (training activations)");
  COCONUT_CHECK(probs_row0 <= static_cast<int64_t>(a) * B, "attention probabilities start at row {}, after the pass's "
                "first row {}", probs_row0, static_cast<int64_t>(a) * B);
  const int hd = C / H, nq = b - a, nk = b;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  const int ld_qkv = 3 * C * B, ld_out = C * B;
  // Saved probabilities: row (t, s, h) of [T, B, H, T], the buffer starting at row
  // probs_row0 (t*B + s counted from there); at inference a per-thread scratch.
  const int ld_p = probs ? B * H * T : nk;
#pragma omp parallel if (static_cast<int64_t>(B) * nq * nk * C > kParallelMin)
  {
    // At inference the probabilities; with dropout their dropped copy (probs keeps the
    // undropped ones for the softmax backward).
    std::vector<float> scratch(probs && !drop ? 0 : static_cast<size_t>(nq) * nk);
    std::vector<uint32_t> words;  // dropout draws of one row
#pragma omp for collapse(2) schedule(static)
    for (int s = 0; s < B; ++s) {
      for (int h = 0; h < H; ++h) {
        const float* q = qkv + (static_cast<int64_t>(a) * B + s) * 3 * C + h * hd;
        const float* k = qkv + static_cast<int64_t>(s) * 3 * C + C + h * hd;
        const float* v = k + C;
        float* P = probs ? probs + ((static_cast<int64_t>(a) * B + s - probs_row0) * H + h) * T : scratch.data();
        float* y = out + static_cast<int64_t>(s) * C + h * hd;
        for (int i0 = 0; i0 < nq; i0 += kQueryBlock) {
          const int mq = std::min(kQueryBlock, nq - i0), mk = std::min(nk, a + i0 + mq);  // keys the block sees
          float* Pb = P + static_cast<int64_t>(i0) * ld_p;
          sgemm(false, true, mq, mk, hd, scale, q + static_cast<int64_t>(i0) * ld_qkv, ld_qkv, k, ld_qkv, 0.f, Pb,
                ld_p);  // scores
          for (int i = 0; i < mq; ++i) {
            float* row = Pb + static_cast<int64_t>(i) * ld_p;
            softmax_row(row, mk, a + i0 + i, key_mask, B, s);
            if (probs) std::fill(row + mk, row + T, 0.f);
          }
          const float* PV = Pb;  // the weights of V: the probabilities, or their dropped copy
          int ld_pv = ld_p;
          if (drop) {
            for (int i = 0; i < mq; ++i) {
              const float* row = Pb + static_cast<int64_t>(i) * ld_p;
              float* kept = scratch.data() + static_cast<int64_t>(i0 + i) * nk;
              attention_keep_row(kept, row, mk, a, i0 + i, s, h, B, *drop, words);
              for (int j = 0; j < mk; ++j) kept[j] *= row[j];
            }
            PV = scratch.data() + static_cast<int64_t>(i0) * nk;
            ld_pv = nk;
          }
          sgemm(false, false, mq, hd, mk, 1.f, PV, ld_pv, v, ld_qkv, 0.f, y + static_cast<int64_t>(i0) * ld_out,
                ld_out);  // P V
        }
      }
    }
  }
}

void attention_backward(float* dqkv, const float* dout, const float* probs, const float* qkv, int a, int b, int B,
                        int T, int C, int H, const Dropout* drop, int64_t probs_row0) {
  COCONUT_CHECK(!drop || probs, "attention dropout needs the saved probabilities (training activations)");
  COCONUT_CHECK(probs_row0 <= static_cast<int64_t>(a) * B, "attention probabilities start at row {}, after the pass's "
                "first row {}", probs_row0, static_cast<int64_t>(a) * B);
  const int hd = C / H, nq = b - a, nk = b;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  const int ld_qkv = 3 * C * B, ld_out = C * B, ld_p = B * H * T;
#pragma omp parallel if (static_cast<int64_t>(B) * nq * nk * C > kParallelMin)
  {
    std::vector<float> dP(static_cast<size_t>(nq) * nk);
    std::vector<float> dropped(drop ? static_cast<size_t>(nq) * nk : 0);  // the forward's weights of V
    std::vector<uint32_t> words;                                          // dropout draws of one row
#pragma omp for collapse(2) schedule(static)
    for (int s = 0; s < B; ++s) {
      for (int h = 0; h < H; ++h) {
        const int64_t col = static_cast<int64_t>(s) * 3 * C + h * hd;
        const float* q = qkv + static_cast<int64_t>(a) * B * 3 * C + col;
        const float* k = qkv + col + C;
        const float* v = qkv + col + 2 * C;
        float* dq = dqkv + static_cast<int64_t>(a) * B * 3 * C + col;
        float* dk = dqkv + col + C;
        float* dv = dqkv + col + 2 * C;
        const float* P = probs + ((static_cast<int64_t>(a) * B + s - probs_row0) * H + h) * T;
        const float* dy = dout + static_cast<int64_t>(s) * C + h * hd;
        for (int i0 = 0; i0 < nq; i0 += kQueryBlock) {
          const int mq = std::min(kQueryBlock, nq - i0), mk = std::min(nk, a + i0 + mq);  // keys the block sees
          const float* Pb = P + static_cast<int64_t>(i0) * ld_p;
          const float* dyb = dy + static_cast<int64_t>(i0) * ld_out;
          float* dPb = dP.data() + static_cast<int64_t>(i0) * nk;
          sgemm(false, true, mq, mk, hd, 1.f, dyb, ld_out, v, ld_qkv, 0.f, dPb, nk);  // dP = dY V^T
          const float* PV = Pb;
          int ld_pv = ld_p;
          if (drop) {
            // Same masks as the forward: the gradient reaching P is the dropped one scaled
            // by the keep factor, and V was weighted by the dropped probabilities.
            for (int i = 0; i < mq; ++i) {
              const float* p = Pb + static_cast<int64_t>(i) * ld_p;
              float* kept = dropped.data() + static_cast<int64_t>(i0 + i) * nk;
              float* d = dPb + static_cast<int64_t>(i) * nk;
              attention_keep_row(kept, p, mk, a, i0 + i, s, h, B, *drop, words);
              for (int j = 0; j < mk; ++j) {
                d[j] *= kept[j];
                kept[j] *= p[j];
              }
            }
            PV = dropped.data() + static_cast<int64_t>(i0) * nk;
            ld_pv = nk;
          }
          sgemm(true, false, mk, hd, mq, 1.f, PV, ld_pv, dyb, ld_out, 1.f, dv, ld_qkv);  // dV += P^T dY
          // softmax backward: dS_j = p_j (dp_j - sum_i p_i dp_i), times the score scale.
          for (int i = 0; i < mq; ++i) {
            const float* p = Pb + static_cast<int64_t>(i) * ld_p;
            float* d = dPb + static_cast<int64_t>(i) * nk;
            float dot = 0.f;
#pragma omp simd reduction(+ : dot)
            for (int j = 0; j < mk; ++j) dot += p[j] * d[j];
            for (int j = 0; j < mk; ++j) d[j] = p[j] * (d[j] - dot) * scale;
          }
          const float* qb = q + static_cast<int64_t>(i0) * ld_qkv;
          sgemm(false, false, mq, hd, mk, 1.f, dPb, nk, k, ld_qkv, 1.f, dq + static_cast<int64_t>(i0) * ld_qkv,
                ld_qkv);                                                          // dQ += dS K
          sgemm(true, false, mk, hd, mq, 1.f, dPb, nk, qb, ld_qkv, 1.f, dk, ld_qkv);  // dK += dS^T Q
        }
      }
    }
  }
}

float cross_entropy_forward_backward(float* logits, const int* targets, int N, int V, float scale) {
  double loss = 0.0;
  std::vector<float> row_loss(N);
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * V > kParallelMin)
  for (int r = 0; r < N; ++r) {
    float* z = logits + static_cast<int64_t>(r) * V;
    float maxv = -INFINITY;
    for (int v = 0; v < V; ++v) maxv = std::max(maxv, z[v]);
    const float target_logit = z[targets[r]];
    float sum = 0.f;
    for (int v = 0; v < V; ++v) {
      z[v] = std::exp(z[v] - maxv);
      sum += z[v];
    }
    const float inv = 1.f / sum;
    row_loss[r] = std::log(sum) + maxv - target_logit;
    for (int v = 0; v < V; ++v) z[v] *= inv * scale;
    z[targets[r]] -= scale;
  }
  for (int r = 0; r < N; ++r) loss += row_loss[r];  // fixed order: reproducible
  return static_cast<float>(loss * scale);
}

}  // namespace coconut::model
