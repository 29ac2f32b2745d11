// coconut::sgemm (runtime/blas.h) against a double-precision reference on random
// matrices: every transpose combination, alpha and beta, strides wider than the rows
// (the padding must stay untouched), and the few-row products of the latent passes
// (m <= 32) on one and two threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "runtime/blas.h"
#include "runtime/threads.h"

namespace coconut {
namespace {

struct Case {
  bool ta, tb;
  int m, n, k;
  float alpha, beta;
};

void expect_sgemm_matches(const Case& t, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "ta=" << t.ta << " tb=" << t.tb << " m=" << t.m << " n=" << t.n << " k=" << t.k
                                  << " alpha=" << t.alpha << " beta=" << t.beta);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  // Row strides 3 wider than the rows, so that a kernel reading the stride wrong fails.
  const int a_rows = t.ta ? t.k : t.m, a_cols = t.ta ? t.m : t.k;
  const int b_rows = t.tb ? t.n : t.k, b_cols = t.tb ? t.k : t.n;
  const int lda = a_cols + 3, ldb = b_cols + 3, ldc = t.n + 3;
  std::vector<float> a(size_t(a_rows) * lda), b(size_t(b_rows) * ldb), c(size_t(t.m) * ldc);
  for (float& x : a) x = u(rng);
  for (float& x : b) x = u(rng);
  for (float& x : c) x = u(rng);
  std::vector<double> want(size_t(t.m) * ldc);
  double scale = 0;
  for (int i = 0; i < t.m; ++i)
    for (int j = 0; j < t.n; ++j) {
      double sum = 0;
      for (int p = 0; p < t.k; ++p) {
        const double x = t.ta ? a[size_t(p) * lda + i] : a[size_t(i) * lda + p];
        const double y = t.tb ? b[size_t(j) * ldb + p] : b[size_t(p) * ldb + j];
        sum += x * y;
      }
      want[size_t(i) * ldc + j] = t.alpha * sum + t.beta * double(c[size_t(i) * ldc + j]);
      scale = std::max(scale, std::abs(want[size_t(i) * ldc + j]));
    }
  const std::vector<float> c0 = c;
  sgemm(t.ta, t.tb, t.m, t.n, t.k, t.alpha, a.data(), lda, b.data(), ldb, t.beta, c.data(), ldc);
  for (int i = 0; i < t.m; ++i) {
    for (int j = 0; j < t.n; ++j)
      ASSERT_NEAR(c[size_t(i) * ldc + j], want[size_t(i) * ldc + j], 1e-5 * std::max(1.0, scale))
          << "element (" << i << ", " << j << ")";
    for (int j = t.n; j < ldc; ++j)
      ASSERT_EQ(c[size_t(i) * ldc + j], c0[size_t(i) * ldc + j]) << "padding of row " << i << " was written";
  }
}

TEST(Sgemm, EveryTransposeAlphaAndBetaMatchesReference) {
  uint32_t seed = 1;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (const auto& [alpha, beta] : {std::pair{1.f, 0.f}, std::pair{1.f, 1.f}, std::pair{0.5f, -2.f}})
        for (const auto& [m, n, k] : {std::array<int, 3>{37, 29, 41}, std::array<int, 3>{200, 96, 64}})
          expect_sgemm_matches({ta, tb, m, n, k, alpha, beta}, seed++);
}

TEST(Sgemm, FewRowProductsMatchReference) {
  uint32_t seed = 100;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int m : {1, 16, 32})
      for (int n : {1, 63, 64, 65, 200, 768})
        for (int k : {1, 7, 256})
          for (float beta : {0.f, 1.f}) expect_sgemm_matches({false, false, m, n, k, 1.f, beta}, seed++);
  }
  set_num_threads(0);
}

}  // namespace
}  // namespace coconut
