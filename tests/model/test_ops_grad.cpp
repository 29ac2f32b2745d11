// Every op's backward against central finite differences of its forward, on random
// inputs. The scalar probed is f = sum(out * R) for a fixed random R, so every output
// element's gradient path is exercised.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "model/ops.h"

namespace coconut::model {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Checks analytic[i] against (f(x + h e_i) - f(x - h e_i)) / 2h for every element of x.
void expect_grad_matches(std::vector<float>& x, const std::vector<float>& analytic,
                         const std::function<double()>& f, const char* what, float h = 1e-2f,
                         double tol = 2e-2) {
  ASSERT_EQ(x.size(), analytic.size());
  double max_abs = 0;
  for (float g : analytic) max_abs = std::max(max_abs, std::abs(static_cast<double>(g)));
  ASSERT_GT(max_abs, 0.0) << what << ": analytic gradient is all zero";
  for (size_t i = 0; i < x.size(); ++i) {
    const float saved = x[i];
    x[i] = saved + h;
    const double up = f();
    x[i] = saved - h;
    const double down = f();
    x[i] = saved;
    const double numeric = (up - down) / (2.0 * h);
    EXPECT_NEAR(analytic[i], numeric, tol * std::max(1e-2 * max_abs + std::abs(numeric), 1e-3))
        << what << " element " << i;
  }
}

TEST(OpsGrad, LayerNorm) {
  const int N = 5, C = 7;
  auto x = random_vec(N * C, 1), w = random_vec(C, 2), b = random_vec(C, 3), R = random_vec(N * C, 4);
  std::vector<float> out(N * C), mean(N), rstd(N);
  auto f = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
    return dot(out, R);
  };
  f();
  std::vector<float> dx(N * C, 0.f), dw(C, 0.f), db(C, 0.f);
  layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
  expect_grad_matches(x, dx, f, "layernorm dx");
  expect_grad_matches(w, dw, f, "layernorm dw");
  expect_grad_matches(b, db, f, "layernorm db");
}

TEST(OpsGrad, Linear) {
  const int N = 4, IC = 6, OC = 5;
  auto x = random_vec(N * IC, 5), w = random_vec(IC * OC, 6), b = random_vec(OC, 7), R = random_vec(N * OC, 8);
  std::vector<float> out(N * OC);
  auto f = [&] {
    linear_forward(out.data(), x.data(), w.data(), b.data(), N, IC, OC);
    return dot(out, R);
  };
  // dx is overwritten (start it as garbage); dw and db accumulate (start them at 0).
  std::vector<float> dx(N * IC, std::nanf("")), dw(IC * OC, 0.f), db(OC, 0.f);
  linear_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), N, IC, OC);
  expect_grad_matches(x, dx, f, "linear dx");
  expect_grad_matches(w, dw, f, "linear dw");
  expect_grad_matches(b, db, f, "linear db");
}

TEST(OpsGrad, Gelu) {
  const int n = 40;
  auto x = random_vec(n, 9, 2.f), R = random_vec(n, 10);
  std::vector<float> out(n);
  auto f = [&] {
    gelu_forward(out.data(), x.data(), n);
    return dot(out, R);
  };
  std::vector<float> dx(n, std::nanf(""));  // overwritten
  gelu_backward(dx.data(), x.data(), R.data(), n);
  expect_grad_matches(x, dx, f, "gelu dx", 1e-3f);
}

TEST(OpsGrad, GeluMatchesFormula) {
  // GPT-2's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), checked in double.
  std::vector<float> x = {-3.f, -1.f, -0.1f, 0.f, 0.5f, 2.f}, out(6);
  gelu_forward(out.data(), x.data(), 6);
  for (int i = 0; i < 6; ++i) {
    const double v = x[i];
    const double ref = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    EXPECT_NEAR(out[i], ref, 1e-6);
  }
}

// Attention over a pass [a, b) with a KV cache of columns < a and padded keys: the
// gradient w.r.t. every q|k|v element, including the cached columns' K and V.
TEST(OpsGrad, AttentionRangeWithCache) {
  const int B = 2, T = 6, C = 8, H = 2, a = 3, b = 5;
  auto qkv = random_vec(T * B * 3 * C, 11);
  std::vector<uint8_t> mask(T * B, 1);
  mask[0 * B + 1] = 0;  // sequence 1 is left-padded at column 0
  mask[5 * B + 0] = 0;  // sequence 0 is right-padded at column 5 (outside the pass)
  const int n = (b - a) * B;
  auto R = random_vec(n * C, 12);
  std::vector<float> out(n * C), probs(T * B * H * T);
  auto f = [&] {
    attention_forward(out.data(), probs.data(), qkv.data(), mask.data(), a, b, B, T, C, H);
    return dot(out, R);
  };
  f();
  std::vector<float> dqkv(qkv.size(), 0.f);
  attention_backward(dqkv.data(), R.data(), probs.data(), qkv.data(), a, b, B, T, C, H);
  expect_grad_matches(qkv, dqkv, f, "attention dqkv", 1e-2f);
  // Inference (no saved probabilities) computes the same output.
  std::vector<float> out_train = out, out_infer(n * C);
  attention_forward(out_infer.data(), nullptr, qkv.data(), mask.data(), a, b, B, T, C, H);
  for (int i = 0; i < n * C; ++i) EXPECT_FLOAT_EQ(out_infer[i], out_train[i]);
}

// Long passes (more query rows than one causal block of the implementation) against the
// attention formula evaluated directly in double: outputs, saved probabilities and every
// q|k|v gradient, for a whole sequence, a pass after a KV cache, and a one-column pass.
TEST(OpsReference, AttentionLongPassesMatchTheDirectFormula) {
  const int B = 2, T = 150, C = 16, H = 2, hd = C / H;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  auto qkv = random_vec(static_cast<size_t>(T) * B * 3 * C, 21);
  std::vector<uint8_t> mask(T * B, 1);
  for (int t = 0; t < 3; ++t) mask[t * B + 1] = 0;  // sequence 1 is left-padded at columns 0-2
  auto at = [&](int t, int s, int part, int h, int d) {  // q (part 0), k (1) or v (2) element
    return static_cast<size_t>(t * B + s) * 3 * C + part * C + h * hd + d;
  };
  for (auto [a, b] : {std::pair{0, T}, std::pair{70, T}, std::pair{149, T}, std::pair{10, 140}}) {
    SCOPED_TRACE(testing::Message() << "pass [" << a << ", " << b << ")");
    const int n = (b - a) * B;
    std::vector<float> out(static_cast<size_t>(n) * C), probs(static_cast<size_t>(T) * B * H * T);
    attention_forward(out.data(), probs.data(), qkv.data(), mask.data(), a, b, B, T, C, H);
    auto dout = random_vec(static_cast<size_t>(n) * C, 22);
    std::vector<float> dqkv(qkv.size(), 0.f);
    attention_backward(dqkv.data(), dout.data(), probs.data(), qkv.data(), a, b, B, T, C, H);
    std::vector<double> ref_d(qkv.size(), 0.0);
    double worst_out = 0, worst_p = 0;
    for (int t = a; t < b; ++t)
      for (int s = 0; s < B; ++s)
        for (int h = 0; h < H; ++h) {
          std::vector<double> p(t + 1, 0.0);
          double maxz = -INFINITY, sum = 0;
          for (int j = 0; j <= t; ++j) {
            if (!mask[j * B + s]) continue;
            double z = 0;
            for (int d = 0; d < hd; ++d) z += static_cast<double>(qkv[at(t, s, 0, h, d)]) * qkv[at(j, s, 1, h, d)];
            p[j] = z * scale;
            maxz = std::max(maxz, p[j]);
          }
          for (int j = 0; j <= t; ++j) sum += mask[j * B + s] ? (p[j] = std::exp(p[j] - maxz)) : (p[j] = 0);
          const float* saved = probs.data() + (static_cast<size_t>(t * B + s) * H + h) * T;
          for (int j = 0; j < T; ++j) {
            const double pj = j <= t && sum > 0 ? p[j] / sum : 0.0;
            if (j <= t) p[j] = pj;
            worst_p = std::max(worst_p, std::abs(saved[j] - pj));
          }
          const size_t row = static_cast<size_t>((t - a) * B + s) * C + h * hd;
          std::vector<double> dp(t + 1, 0.0);
          double pdp = 0;
          for (int j = 0; j <= t; ++j) {
            for (int d = 0; d < hd; ++d) {
              dp[j] += static_cast<double>(dout[row + d]) * qkv[at(j, s, 2, h, d)];
              ref_d[at(j, s, 2, h, d)] += p[j] * dout[row + d];  // dV
            }
            pdp += p[j] * dp[j];
          }
          for (int d = 0; d < hd; ++d) {
            double y = 0;
            for (int j = 0; j <= t; ++j) y += p[j] * qkv[at(j, s, 2, h, d)];
            worst_out = std::max(worst_out, std::abs(out[row + d] - y));
          }
          for (int j = 0; j <= t; ++j) {
            const double dz = p[j] * (dp[j] - pdp) * scale;
            for (int d = 0; d < hd; ++d) {
              ref_d[at(t, s, 0, h, d)] += dz * qkv[at(j, s, 1, h, d)];  // dQ
              ref_d[at(j, s, 1, h, d)] += dz * qkv[at(t, s, 0, h, d)];  // dK
            }
          }
        }
    EXPECT_LT(worst_out, 1e-5);
    EXPECT_LT(worst_p, 1e-6);
    double worst_d = 0, largest = 0;
    for (size_t i = 0; i < qkv.size(); ++i) {
      worst_d = std::max(worst_d, std::abs(dqkv[i] - ref_d[i]));
      largest = std::max(largest, std::abs(ref_d[i]));
    }
    EXPECT_GT(largest, 0.1);  // the gradients are not trivially zero
    EXPECT_LT(worst_d, 1e-4 * largest);
    // Inference (no saved probabilities) computes the same output.
    std::vector<float> out_infer(out.size());
    attention_forward(out_infer.data(), nullptr, qkv.data(), mask.data(), a, b, B, T, C, H);
    for (size_t i = 0; i < out.size(); ++i) ASSERT_FLOAT_EQ(out_infer[i], out[i]);
  }
}

TEST(OpsGrad, CrossEntropy) {
  const int N = 3, V = 7;
  auto z = random_vec(N * V, 13, 2.f);
  std::vector<int> targets = {2, 0, 6};
  const float scale = 1.f / N;
  auto loss_of = [&] {
    std::vector<float> tmp = z;
    return static_cast<double>(cross_entropy_forward_backward(tmp.data(), targets.data(), N, V, scale));
  };
  std::vector<float> dz = z;
  const float loss = cross_entropy_forward_backward(dz.data(), targets.data(), N, V, scale);
  // Reference loss in double.
  double ref = 0;
  for (int r = 0; r < N; ++r) {
    double m = -1e30, s = 0;
    for (int v = 0; v < V; ++v) m = std::max(m, static_cast<double>(z[r * V + v]));
    for (int v = 0; v < V; ++v) s += std::exp(z[r * V + v] - m);
    ref += (std::log(s) + m - z[r * V + targets[r]]) * scale;
  }
  EXPECT_NEAR(loss, ref, 1e-5);
  expect_grad_matches(z, dz, loss_of, "cross-entropy dlogits", 1e-2f);
}

}  // namespace
}  // namespace coconut::model
