// A batch as the model sees it: token ids, next-token targets, positions and the key
// mask of B sequences over T columns (time-major, row t*B+s), and its pass plan.
// Built by curriculum/ (which knows what a token means); executed by model/multipass
// in one process and by parallel/ across ranks, which only move the tensors it names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace coconut::model {

// After a pass, the final-norm hidden state at column `from` of sequence `sample`
// becomes the input embedding at column from + 1 (a continuous thought).
struct Feedback {
  int sample = 0;
  int from = 0;
};

// One sequential pass over the columns [begin, end) of every sequence, then the
// feedbacks its outputs feed into the next pass.
struct Pass {
  int begin = 0, end = 0;
  std::vector<Feedback> feedback;
};

struct SequenceBatch {
  int B = 0, T = 0;
  std::vector<int> tokens;        // [T*B] input ids (ignored where a thought is fed in)
  std::vector<int> targets;       // [T*B] next-token id to predict, or -100 for none
  std::vector<int> pos_ids;       // [T*B]
  std::vector<uint8_t> key_mask;  // [T*B] 0 for padding
  std::vector<Pass> passes;       // cover [0, T) in order; one pass [0, T) for a plain LM

  int num_targets() const {
    int n = 0;
    for (int t : targets) n += t >= 0;
    return n;
  }
};

// A pass's feedbacks grouped into runs whose source rows (from * B + sample) are
// consecutive: run k covers pass.feedback[index, index + count), its sources are rows
// [first_row, first_row + count) and the thoughts they become rows first_row + B on
// (the next column, same samples). A latent-aligned batch, where every sample feeds back
// from the same column, is one run. The GPU moves a run with one copy or one add where
// it had one per sample (model/cuda_multipass.cpp, parallel/cuda_stage_compute.cpp).
struct FeedbackRun {
  size_t first_row = 0, count = 0, index = 0;
};
inline std::vector<FeedbackRun> feedback_runs(const Pass& pass, int B) {
  std::vector<FeedbackRun> runs;
  for (size_t i = 0; i < pass.feedback.size(); ++i) {
    const size_t row = static_cast<size_t>(pass.feedback[i].from) * B + pass.feedback[i].sample;
    if (!runs.empty() && runs.back().first_row + runs.back().count == row) ++runs.back().count;
    else runs.push_back({row, 1, i});
  }
  return runs;
}

// The runs of consecutive set entries of `flags`: [first, first + count) each.
struct RowRun {
  size_t first = 0, count = 0;
};
inline std::vector<RowRun> flagged_runs(const std::vector<uint8_t>& flags) {
  std::vector<RowRun> runs;
  for (size_t r = 0; r < flags.size(); ++r) {
    if (!flags[r]) continue;
    if (!runs.empty() && runs.back().first + runs.back().count == r) ++runs.back().count;
    else runs.push_back({r, 1});
  }
  return runs;
}

}  // namespace coconut::model
