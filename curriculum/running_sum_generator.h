// A running-sum generator: a small arithmetic task whose chain of thought is a chain in
// the strict sense, each step needing the one before, with nothing to look up in the
// question. For studying what latent thoughts carry (docs/results.md) and for the demo.
//
//   question  "sum 2 9 1 4 1 mod 10"               (K random digits)
//   steps     ["2 + 9 = 1", "1 + 1 = 2", "2 + 4 = 6", "6 + 1 = 7"]   (K - 1 partial sums)
//   answer    "7"                                   (the sum modulo 10)
//
// Chance is 10%. Every item is a pure function of (seed, index), like the other
// generators'.
#pragma once

#include <cstdint>
#include <vector>

#include "curriculum/dataset.h"

namespace coconut::curriculum {

struct RunningSumGeneratorConfig {
  int digits = 5;  // K, 2..kMaxRunningSumDigits: K - 1 steps
};
inline constexpr int kMaxRunningSumDigits = 64;

Sample generate_running_sum_sample(uint64_t seed, uint64_t index, const RunningSumGeneratorConfig& config = {});
std::vector<Sample> generate_running_sum(uint64_t seed, size_t count, const RunningSumGeneratorConfig& config = {});

}  // namespace coconut::curriculum
