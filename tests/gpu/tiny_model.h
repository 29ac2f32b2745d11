// The tiny GPT-2, the hand-built Coconut batch and the per-tensor comparison of the
// CUDA model tests (test_cuda_gpt2.cpp, test_device_step_mpi.cpp).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "model/batch.h"
#include "model/gpt2.h"

namespace coconut::testing_gpu {

inline model::GPT2Config tiny_config() {
  model::GPT2Config c;
  c.vocab_size = 41;
  c.max_positions = 16;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 16;
  return c;
}

// B = 3 sequences of T = 10 columns, first latent at column f = 4: sample 0 has two
// thoughts (columns 4, 5), sample 1 one (column 4), sample 2 none and one left pad.
// Passes: [0, 4) feeding columns 4 of samples 0 and 1, [4, 5) feeding column 5 of
// sample 0, [5, 10). Targets on the columns after the thoughts. `variant` shifts the
// tokens and targets (0: the original batch), for several micro-batches of one plan.
inline model::SequenceBatch latent_batch(int variant = 0) {
  model::SequenceBatch b;
  b.B = 3;
  b.T = 10;
  const size_t R = size_t(b.B) * b.T;
  b.tokens.assign(R, 0);
  b.targets.assign(R, -100);
  b.pos_ids.assign(R, 0);
  b.key_mask.assign(R, 1);
  for (int t = 0; t < b.T; ++t)
    for (int s = 0; s < b.B; ++s) {
      const size_t r = size_t(t) * b.B + s;
      b.tokens[r] = (7 * t + 3 * s + 1 + 11 * variant) % 41;
      const int pad = s == 2 ? 1 : 0;
      b.key_mask[r] = t >= pad;
      b.pos_ids[r] = t >= pad ? t - pad : 0;
      if (t >= 6 && t + 1 < b.T) b.targets[r] = (5 * t + s + 2 + 13 * variant) % 41;
    }
  b.passes = {model::Pass{0, 4, {model::Feedback{0, 3}, model::Feedback{1, 3}}},
              model::Pass{4, 5, {model::Feedback{0, 4}}}, model::Pass{5, 10, {}}};
  return b;
}

// Per tensor of the layout: max |got - want| <= tolerance * max |want| (0: no element
// differs); any NaN fails.
inline void expect_tensors_close(const model::ParamLayout& layout, const std::vector<float>& got,
                                 const std::vector<float>& want, const std::string& what, double tolerance) {
  for (const model::TensorSpec& t : layout.tensors()) {
    double max_want = 0, max_err = 0;
    bool nan = false;
    for (size_t i = t.offset; i < t.offset + t.numel; ++i) {
      const double err = std::abs(double(got[i]) - double(want[i]));
      nan = nan || std::isnan(err);
      max_want = std::max(max_want, std::abs(double(want[i])));
      max_err = std::max(max_err, err);
    }
    EXPECT_FALSE(nan) << what << " of " << t.name << " has a NaN";
    EXPECT_LE(max_err, tolerance * max_want) << what << " of " << t.name << " (max |want| " << max_want << ")";
  }
}

}  // namespace coconut::testing_gpu
