// Tests of runtime/rng: Philox4x32-10 against Random123's published known-answer
// vectors, statistical sanity of uniform/normal/below, and that a value depends only on
// (seed, stream ids, index), never on call order or on how draws are split up.
#include "runtime/rng.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/check.h"

namespace coconut {
namespace {

using Block = std::array<uint32_t, 4>;

// Random123 kat_vectors, philox4x32 10 rounds: counter, key -> output. The same three
// vectors appear in Random123-Boost's test_philox.cpp and TensorFlow's random tests.
TEST(Philox, KnownAnswerVectors) {
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}), (Block{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (Block{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (Block{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(CounterRng, WordsComeFromConsecutiveBlocks) {
  CounterRng rng(7, {1, 2});
  for (uint64_t b = 0; b < 3; ++b) {
    Block expect = rng.block(b);
    for (int w = 0; w < 4; ++w) EXPECT_EQ(rng.next_u32(), expect[w]);
  }
  EXPECT_EQ(rng.position(), 12u);
  // The key is the seed: block b of any stream is Philox(counter = (b, hash), key = seed).
  Block b0 = rng.block(0);
  CounterRng other_seed(8, {1, 2});
  EXPECT_NE(other_seed.block(0), b0);
}

TEST(CounterRng, StreamsAreDistinct) {
  std::vector<std::vector<uint64_t>> ids = {{}, {0}, {1}, {0, 0}, {1, 2}, {2, 1}, {1, 2, 0}};
  std::vector<uint32_t> first;
  for (const auto& s : ids) {
    // initializer_list cannot be built from a vector: spell the cases out.
    CounterRng r = s.empty() ? CounterRng(5, {})
                 : s.size() == 1 ? CounterRng(5, {s[0]})
                 : s.size() == 2 ? CounterRng(5, {s[0], s[1]})
                                 : CounterRng(5, {s[0], s[1], s[2]});
    first.push_back(r.next_u32());
  }
  for (size_t i = 0; i < first.size(); ++i)
    for (size_t j = i + 1; j < first.size(); ++j) EXPECT_NE(first[i], first[j]) << i << " vs " << j;
}

TEST(CounterRng, IndependentOfCallOrderAcrossStreams) {
  // Sequential: all of stream A, then all of stream B.
  std::vector<float> a1, b1, a2, b2;
  CounterRng a(42, {3, 100}), b(42, {3, 101});
  for (int i = 0; i < 50; ++i) a1.push_back(a.normal());
  for (int i = 0; i < 50; ++i) b1.push_back(b.uniform());
  // Interleaved, with fresh objects created in the other order.
  CounterRng b_(42, {3, 101}), a_(42, {3, 100});
  for (int i = 0; i < 50; ++i) {
    b2.push_back(b_.uniform());
    a2.push_back(a_.normal());
  }
  EXPECT_EQ(a1, a2);
  EXPECT_EQ(b1, b2);
}

TEST(CounterRng, ChunkedFillEqualsSequential) {
  // What a parallel fill does: each worker seeks to its chunk. normal() uses 2 u32.
  const int n = 1000;
  std::vector<float> seq(n), chunked(n);
  CounterRng rng(9, {77});
  for (int i = 0; i < n; ++i) seq[i] = rng.normal();
  for (int lo = (n - 1) / 128 * 128; lo >= 0; lo -= 128) {  // chunks of 128, last first
    CounterRng worker(9, {77});
    worker.set_position(2 * static_cast<uint64_t>(lo));
    for (int i = lo; i < std::min(lo + 128, n); ++i) chunked[i] = worker.normal();
  }
  EXPECT_EQ(seq, chunked);
}

TEST(CounterRng, UniformMeanAndVariance) {
  CounterRng rng(1234, {0});
  const int n = 100000;
  double sum = 0, sum2 = 0;
  float lo = 1, hi = 0;
  for (int i = 0; i < n; ++i) {
    float u = rng.uniform();
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    sum += u;
    sum2 += static_cast<double>(u) * u;
  }
  double mean = sum / n, var = sum2 / n - mean * mean;
  EXPECT_GE(lo, 0.0f);
  EXPECT_LT(hi, 1.0f);
  // 5 standard errors: sd(mean) = 0.2887/sqrt(n) = 0.00091; sd(var) ~ 0.00024.
  EXPECT_NEAR(mean, 0.5, 0.0046);
  EXPECT_NEAR(var, 1.0 / 12, 0.0012);
}

TEST(CounterRng, NormalMomentsAndShape) {
  CounterRng rng(99, {5, 6});
  const int n = 100000;
  double sum = 0, sum2 = 0, sum4 = 0;
  int within1 = 0;
  for (int i = 0; i < n; ++i) {
    double z = rng.normal();
    ASSERT_TRUE(std::isfinite(z));
    sum += z;
    sum2 += z * z;
    sum4 += z * z * z * z;
    within1 += std::fabs(z) < 1.0;
  }
  EXPECT_EQ(rng.position(), 2u * n);
  // 5 standard errors: sd(mean) = 0.0032, sd(E z^2) = sqrt(2/n) = 0.0045,
  // sd(E z^4) = sqrt(96/n) = 0.031, sd(P(|z|<1)) = 0.0015.
  EXPECT_NEAR(sum / n, 0.0, 0.016);
  EXPECT_NEAR(sum2 / n, 1.0, 0.023);
  EXPECT_NEAR(sum4 / n, 3.0, 0.16);
  EXPECT_NEAR(static_cast<double>(within1) / n, 0.682689, 0.0074);
}

TEST(CounterRng, BelowIsInRangeAndUniform) {
  CounterRng rng(3, {8});
  const int k = 7, n = 70000;
  std::vector<int> count(k, 0);
  for (int i = 0; i < n; ++i) {
    uint64_t v = rng.below(k);
    ASSERT_LT(v, static_cast<uint64_t>(k));
    count[v]++;
  }
  // Chi-square with 6 degrees of freedom: P(chi2 > 22.46) = 0.001.
  double chi2 = 0, expect = static_cast<double>(n) / k;
  for (int c : count) chi2 += (c - expect) * (c - expect) / expect;
  EXPECT_LT(chi2, 22.46);

  EXPECT_EQ(rng.below(1), 0u);
  uint64_t big = (1ull << 63) + 12345;
  bool upper_half = false;
  for (int i = 0; i < 64; ++i) {
    uint64_t v = rng.below(big);
    ASSERT_LT(v, big);
    upper_half |= v >= (1ull << 62);
  }
  EXPECT_TRUE(upper_half);
  EXPECT_THROW(rng.below(0), Error);
}

}  // namespace
}  // namespace coconut
