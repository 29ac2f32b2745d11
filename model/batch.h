// A batch as the model sees it: token ids, next-token targets, positions and the key
// mask of B sequences over T columns (time-major, row t*B+s), and its pass plan.
// Built by curriculum/ (which knows what a token means); executed by model/multipass
// in one process and by parallel/ across ranks, which only move the tensors it names.
#pragma once

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

}  // namespace coconut::model
