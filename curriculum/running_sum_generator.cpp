// The running-sum items (format in running_sum_generator.h).
#include "curriculum/running_sum_generator.h"

#include <fmt/format.h>

#include "curriculum/prosqa_generator.h"  // GeneratorRng, generate_items
#include "runtime/check.h"

namespace coconut::curriculum {

namespace {
constexpr uint64_t kRunningSumStream = 0x52554E53554D2D31ull;  // "RUNSUM-1"
}

Sample generate_running_sum_sample(uint64_t seed, uint64_t index, const RunningSumGeneratorConfig& config) {
  const int k = config.digits;
  COCONUT_CHECK(k >= 2 && k <= kMaxRunningSumDigits, "running-sum generator: digits = {} (expected 2..{})", k,
                kMaxRunningSumDigits);
  GeneratorRng rng(seed, kRunningSumStream, index);
  std::vector<int> digits(k);
  for (int& d : digits) d = static_cast<int>(rng.below(10));

  Sample s;
  s.question = "sum";
  for (int d : digits) s.question += fmt::format(" {}", d);
  s.question += " mod 10";
  int total = digits[0];
  for (int i = 1; i < k; ++i) {
    const int next = (total + digits[i]) % 10;
    s.steps.push_back(fmt::format("{} + {} = {}", total, digits[i], next));
    total = next;
  }
  s.answer = std::to_string(total);
  return s;
}

std::vector<Sample> generate_running_sum(uint64_t seed, size_t count, const RunningSumGeneratorConfig& config) {
  return generate_items(count, [&](uint64_t i) { return generate_running_sum_sample(seed, i, config); });
}

}  // namespace coconut::curriculum
