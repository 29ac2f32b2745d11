// The learning-rate schedule (see lr_schedule.h).
#include "launcher/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "runtime/check.h"

namespace coconut::launcher {

float scheduled_lr(const LrSchedule& schedule, float lr, int64_t step, int64_t total_steps, int64_t since_reset) {
  COCONUT_CHECK(step >= 0 && since_reset >= 0 && total_steps >= 1,
                "scheduled_lr: step {}, total {}, steps since the reset {}", step, total_steps, since_reset);
  double rate = lr;
  if (schedule.kind == "cosine") {
    const double progress = static_cast<double>(std::min(step, total_steps)) / static_cast<double>(total_steps);
    rate = schedule.min_lr + (lr - schedule.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  } else {
    COCONUT_CHECK(schedule.kind == "constant", "unknown learning-rate schedule '{}'", schedule.kind);
  }
  if (schedule.warmup_steps > 0)
    rate *= std::min(1.0, static_cast<double>(since_reset + 1) / static_cast<double>(schedule.warmup_steps));
  return static_cast<float>(rate);
}

}  // namespace coconut::launcher
