// CPU implementations of the decoder ops: BLAS for matrix products, OpenMP for the
// rest. Parallel loops split work so that every output element is written by one
// thread in a fixed order: results are bitwise reproducible for a given thread count.
#include "model/ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/blas.h"

namespace coconut::model {
namespace {

// Column blocks for reductions over rows (bias and layer-norm parameter gradients):
// each thread owns whole columns, so the sum order over rows never changes.
constexpr int kColumnBlock = 64;

void sum_rows_into(float* acc, const float* x, int N, int C) {
  const int blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; ++r) {
    const float* x = inp + static_cast<int64_t>(r) * C;
    float* y = out + static_cast<int64_t>(r) * C;
    float m = 0.f;
    for (int c = 0; c < C; ++c) m += x[c];
    m /= C;
    float v = 0.f;
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
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; ++r) {
    const float* x = inp + static_cast<int64_t>(r) * C;
    const float* dy = dout + static_cast<int64_t>(r) * C;
    float* dx = dinp + static_cast<int64_t>(r) * C;
    const float m = mean[r], s = rstd[r];
    // dxhat = dy * w; dx = s * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    float sum_dxhat = 0.f, sum_dxhat_xhat = 0.f;
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
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; ++r) std::memcpy(out + static_cast<int64_t>(r) * OC, bias, sizeof(float) * OC);
    beta = 1.f;
  }
  sgemm(false, false, N, OC, IC, 1.f, inp, IC, w, OC, beta, out, OC);
}

void linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
                     int N, int IC, int OC) {
  if (N == 0) return;
  sgemm(false, true, N, IC, OC, 1.f, dout, OC, w, OC, 1.f, dinp, IC);  // dinp += dout W^T
  sgemm(true, false, IC, OC, N, 1.f, inp, IC, dout, OC, 1.f, dw, OC);  // dW += inp^T dout
  if (dbias) sum_rows_into(dbias, dout, N, OC);
}

namespace {
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
}

void gelu_forward(float* out, const float* inp, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float x = inp[i];
    const float u = kGeluScale * (x + 0.044715f * x * x * x);
    out[i] = 0.5f * x * (1.f + std::tanh(u));
  }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float x = inp[i];
    const float u = kGeluScale * (x + 0.044715f * x * x * x);
    const float t = std::tanh(u);
    const float du = kGeluScale * (1.f + 3.f * 0.044715f * x * x);
    const float grad = 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * du;
    dinp[i] += grad * dout[i];
  }
}

void add_forward(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// Attention is parallel over (sequence, head) pairs: each pair owns its slice of the
// q|k|v columns, so the backward can accumulate dK/dV of all columns without races.
void attention_forward(float* out, float* probs, const float* qkv, const uint8_t* key_mask, int a, int b, int B,
                       int T, int C, int H) {
  const int hd = C / H;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  const int64_t row3 = 3 * C;
#pragma omp parallel
  {
    std::vector<float> scratch(probs ? 0 : T);
#pragma omp for collapse(2) schedule(static)
    for (int s = 0; s < B; ++s) {
      for (int h = 0; h < H; ++h) {
        for (int t = a; t < b; ++t) {
          const float* q = qkv + (static_cast<int64_t>(t) * B + s) * row3 + h * hd;
          float* p = probs ? probs + ((static_cast<int64_t>(t) * B + s) * H + h) * T : scratch.data();
          float maxv = -INFINITY;
          for (int j = 0; j <= t; ++j) {
            if (!key_mask[static_cast<int64_t>(j) * B + s]) continue;
            const float* k = qkv + (static_cast<int64_t>(j) * B + s) * row3 + C + h * hd;
            float dot = 0.f;
            for (int d = 0; d < hd; ++d) dot += q[d] * k[d];
            p[j] = dot * scale;
            maxv = std::max(maxv, p[j]);
          }
          float sum = 0.f;
          for (int j = 0; j <= t; ++j) {
            if (!key_mask[static_cast<int64_t>(j) * B + s]) {
              p[j] = 0.f;
              continue;
            }
            p[j] = std::exp(p[j] - maxv);
            sum += p[j];
          }
          // A query with no visible key (a left-pad column) outputs zeros; it carries no label.
          const float inv = sum > 0.f ? 1.f / sum : 0.f;
          for (int j = 0; j <= t; ++j) p[j] *= inv;
          if (probs)
            for (int j = t + 1; j < T; ++j) p[j] = 0.f;
          float* y = out + (static_cast<int64_t>(t - a) * B + s) * C + h * hd;
          for (int d = 0; d < hd; ++d) y[d] = 0.f;
          for (int j = 0; j <= t; ++j) {
            if (p[j] == 0.f) continue;
            const float* v = qkv + (static_cast<int64_t>(j) * B + s) * row3 + 2 * C + h * hd;
            for (int d = 0; d < hd; ++d) y[d] += p[j] * v[d];
          }
        }
      }
    }
  }
}

void attention_backward(float* dqkv, const float* dout, const float* probs, const float* qkv, int a, int b, int B,
                        int T, int C, int H) {
  const int hd = C / H;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  const int64_t row3 = 3 * C;
#pragma omp parallel
  {
    std::vector<float> dp(T);
#pragma omp for collapse(2) schedule(static)
    for (int s = 0; s < B; ++s) {
      for (int h = 0; h < H; ++h) {
        // Later queries first: the order is fixed, so sums are reproducible.
        for (int t = b - 1; t >= a; --t) {
          const float* p = probs + ((static_cast<int64_t>(t) * B + s) * H + h) * T;
          const float* dy = dout + (static_cast<int64_t>(t - a) * B + s) * C + h * hd;
          const float* q = qkv + (static_cast<int64_t>(t) * B + s) * row3 + h * hd;
          float* dq = dqkv + (static_cast<int64_t>(t) * B + s) * row3 + h * hd;
          // dp_j = dy . v_j ; dV_j += p_j dy
          float dot_p_dp = 0.f;
          for (int j = 0; j <= t; ++j) {
            if (p[j] == 0.f) {
              dp[j] = 0.f;
              continue;
            }
            const float* v = qkv + (static_cast<int64_t>(j) * B + s) * row3 + 2 * C + h * hd;
            float* dv = dqkv + (static_cast<int64_t>(j) * B + s) * row3 + 2 * C + h * hd;
            float acc = 0.f;
            for (int d = 0; d < hd; ++d) {
              acc += dy[d] * v[d];
              dv[d] += p[j] * dy[d];
            }
            dp[j] = acc;
            dot_p_dp += p[j] * acc;
          }
          // softmax backward: ds_j = p_j (dp_j - sum_i p_i dp_i); scores = q.k * scale
          for (int j = 0; j <= t; ++j) {
            if (p[j] == 0.f) continue;
            const float ds = p[j] * (dp[j] - dot_p_dp) * scale;
            const float* k = qkv + (static_cast<int64_t>(j) * B + s) * row3 + C + h * hd;
            float* dk = dqkv + (static_cast<int64_t>(j) * B + s) * row3 + C + h * hd;
            for (int d = 0; d < hd; ++d) {
              dq[d] += ds * k[d];
              dk[d] += ds * q[d];
            }
          }
        }
      }
    }
  }
}

float cross_entropy_forward_backward(float* logits, const int* targets, int N, int V, float scale) {
  double loss = 0.0;
  std::vector<float> row_loss(N);
#pragma omp parallel for schedule(static)
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
