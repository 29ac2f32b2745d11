// AdamW update, global-norm gradient clipping.
#include "model/adamw.h"

#include <algorithm>
#include <cmath>

#include "runtime/check.h"
#include "runtime/threads.h"

namespace coconut::model {

AdamW::AdamW(const AdamWConfig& config, const ParamLayout& layout, size_t begin, size_t end)
    : AdamW(config, layout.tensors(), begin, end) {}

AdamW::AdamW(const AdamWConfig& config, const std::vector<TensorSpec>& tensors, size_t begin, size_t end)
    : config_(config), begin_(begin), end_(end) {
  size_t total = 0;
  for (const TensorSpec& t : tensors) total = std::max(total, t.offset + t.numel);
  COCONUT_CHECK(begin <= end && end <= total, "optimizer slice [{}, {}) outside the {} parameters", begin, end,
                total);
  m_.assign(end - begin, 0.f);
  v_.assign(end - begin, 0.f);
  for (const TensorSpec& t : tensors) {
    const size_t b = std::max(begin, t.offset), e = std::min(end, t.offset + t.numel);
    if (b >= e) continue;
    const bool decay = config.weight_decay != 0.f && (!config.decay_matrices_only || t.is_matrix);
    if (!segments_.empty() && segments_.back().decay == decay && segments_.back().end == b)
      segments_.back().end = e;
    else
      segments_.push_back({b, e, decay});
  }
}

void AdamW::step(float* params, const float* grads, float lr) {
  ++step_;
  const float b1 = config_.beta1, b2 = config_.beta2, eps = config_.eps;
  const double bias1 = 1.0 - std::pow(static_cast<double>(b1), static_cast<double>(step_));
  const double bias2 = 1.0 - std::pow(static_cast<double>(b2), static_cast<double>(step_));
  const float step_size = static_cast<float>(lr / bias1);
  const float bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  for (const Segment& seg : segments_) {
    const float decay = seg.decay ? 1.f - lr * config_.weight_decay : 1.f;
    const int64_t n = static_cast<int64_t>(seg.end - seg.begin);
    float* p = params + seg.begin;
    const float* g = grads + seg.begin;
    float* m = m_.data() + (seg.begin - begin_);
    float* v = v_.data() + (seg.begin - begin_);
    parallel_chunks(n, int64_t{1} << 15, [=](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) {
        p[i] *= decay;
        m[i] = b1 * m[i] + (1.f - b1) * g[i];
        v[i] = b2 * v[i] + (1.f - b2) * g[i] * g[i];
        const float denom = std::sqrt(v[i]) / bias2_sqrt + eps;
        p[i] -= step_size * m[i] / denom;
      }
    });
  }
}

void AdamW::reset() {
  std::fill(m_.begin(), m_.end(), 0.f);
  std::fill(v_.begin(), v_.end(), 0.f);
  step_ = 0;
}

double sum_of_squares(const float* x, size_t n) {
  constexpr size_t kLanes = 8;
  double lane[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (size_t l = 0; l < kLanes; ++l) lane[l] += static_cast<double>(x[i + l]) * x[i + l];
  for (; i < n; ++i) lane[i % kLanes] += static_cast<double>(x[i]) * x[i];
  double s = 0.0;
  for (double v : lane) s += v;
  return s;
}

bool all_finite(const float* x, size_t n) {
  // x - x is 0 for a finite x and NaN for a NaN or an infinity; a sum keeps a NaN. (The
  // build does not assume finite math, so the compiler may not fold x - x to 0.)
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (size_t i = 0; i < n; ++i) acc += x[i] - x[i];
  return acc == 0.f;
}

void clip_grads(float* grads, size_t n, double global_norm, float max_norm) {
  COCONUT_CHECK(max_norm > 0.f, "gradient clipping needs max_norm > 0 (got {})", max_norm);
  const double coef = std::min(1.0, max_norm / (global_norm + 1e-6));
  if (coef >= 1.0) return;
  const float c = static_cast<float>(coef);
  for (size_t i = 0; i < n; ++i) grads[i] *= c;
}

}  // namespace coconut::model
