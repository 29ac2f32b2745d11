// The learning-rate schedule (launcher/lr_schedule.h) against its formulas written out
// here: constant, cosine from lr to min_lr over the planned steps, and the linear warmup
// that restarts with every optimizer reset.
#include "launcher/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "runtime/check.h"

namespace coconut::launcher {
namespace {

TEST(LrSchedule, ConstantIsTheRateAtEveryStep) {
  const LrSchedule constant;
  for (int64_t step : {0, 1, 99, 100, 1000}) EXPECT_EQ(scheduled_lr(constant, 3e-4f, step, 100, step), 3e-4f);
}

TEST(LrSchedule, CosineFallsFromTheRateToTheFloor) {
  const LrSchedule cosine{"cosine", 0, 1e-5};
  const float lr = 1e-3f;
  EXPECT_FLOAT_EQ(scheduled_lr(cosine, lr, 0, 200, 0), lr);
  EXPECT_FLOAT_EQ(scheduled_lr(cosine, lr, 100, 200, 100), 0.5f * (lr + 1e-5f));  // half-way: the mean
  EXPECT_FLOAT_EQ(scheduled_lr(cosine, lr, 50, 200, 50), 1e-5f + (lr - 1e-5f) * 0.5f * (1 + std::cos(M_PI / 4)));
  EXPECT_FLOAT_EQ(scheduled_lr(cosine, lr, 200, 200, 200), 1e-5f);
  EXPECT_FLOAT_EQ(scheduled_lr(cosine, lr, 500, 200, 500), 1e-5f);  // past the plan: stays at the floor
  float previous = lr;
  for (int64_t step = 1; step <= 200; ++step) {
    const float rate = scheduled_lr(cosine, lr, step, 200, step);
    EXPECT_LE(rate, previous) << "step " << step;
    previous = rate;
  }
}

TEST(LrSchedule, WarmupRampsAfterEveryReset) {
  const LrSchedule warm{"constant", 4, 0.0};
  const float lr = 2e-3f;
  // The optimizer's own step count: 0, 1, 2, 3 ramp; then the full rate; a reset
  // (count back to 0) ramps again, wherever the run is.
  EXPECT_FLOAT_EQ(scheduled_lr(warm, lr, 0, 100, 0), lr / 4);
  EXPECT_FLOAT_EQ(scheduled_lr(warm, lr, 1, 100, 1), lr / 2);
  EXPECT_FLOAT_EQ(scheduled_lr(warm, lr, 3, 100, 3), lr);
  EXPECT_FLOAT_EQ(scheduled_lr(warm, lr, 10, 100, 10), lr);
  EXPECT_FLOAT_EQ(scheduled_lr(warm, lr, 50, 100, 0), lr / 4);
  const LrSchedule both{"cosine", 10, 0.0};
  EXPECT_FLOAT_EQ(scheduled_lr(both, lr, 100, 200, 1), 0.5f * lr * 0.2f);  // cosine's mean, 2/10 of the ramp
}

TEST(LrSchedule, RefusesBadCounts) {
  const LrSchedule constant;
  EXPECT_THROW(scheduled_lr(constant, 1e-3f, -1, 100, 0), Error);
  EXPECT_THROW(scheduled_lr(constant, 1e-3f, 0, 0, 0), Error);
  EXPECT_THROW(scheduled_lr(LrSchedule{"linear", 0, 0.0}, 1e-3f, 0, 10, 0), Error);
}

}  // namespace
}  // namespace coconut::launcher
