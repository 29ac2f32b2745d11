// The learning rate of each optimizer step (train.lr_schedule, train.warmup_steps,
// train.min_lr): constant, or a cosine from train.lr down to train.min_lr over the run's
// planned steps, times a linear warmup over the first train.warmup_steps steps after
// every optimizer reset (the run's start, and each curriculum stage with
// train.reset_optimizer: stage), since fresh AdamW moments make the first updates the
// largest. A pure function of counts that checkpoints keep, so a resumed run takes the
// same rates.
#pragma once

#include <cstdint>
#include <string>

namespace coconut::launcher {

struct LrSchedule {
  std::string kind = "constant";  // constant | cosine
  int64_t warmup_steps = 0;       // 0: no warmup
  double min_lr = 0.0;            // cosine: the rate the run ends at
};

// The rate of the step after `step` optimizer steps of the run (0 for its first), of
// `total_steps` planned, `since_reset` steps after the last optimizer reset (the
// optimizer's own step count).
float scheduled_lr(const LrSchedule& schedule, float lr, int64_t step, int64_t total_steps, int64_t since_reset);

}  // namespace coconut::launcher
