// ProsQA-shaped synthetic Coconut batches for the benchmarks: random tokens in the
// layout of DESIGN.md 2.1 / 2.2 (question, <bot>, thoughts, <eot>, the rest, <eos>),
// latent-aligned, with the pass plan and feedbacks that curriculum/batching.h would
// build. The benchmarks cannot use curriculum/ (parallel/ and bench/ never know what a
// token is), so the layout rules are restated here for random ids.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/batch.h"
#include "model/gpt2.h"

namespace coconut::bench {

struct SyntheticSample {
  int question = 60;  // question tokens before <bot>
  int thoughts = 6;   // continuous thoughts (the <latent> slots)
  int rest = 10;      // remaining steps + answer tokens before <eos>
};

// B samples of ProsQA-like shape: question lengths spread around `question` (+-25%),
// every sample with `thoughts` thoughts, `rest` answer tokens. Deterministic in seed.
std::vector<SyntheticSample> prosqa_like_samples(int B, int question, int thoughts, int rest, uint64_t seed);

// The batch: random token ids in [0, vocab - 4) (the top four ids play <bot>, <eot>,
// <latent>, <eos>), targets on every token after <eot>, and the pass plan.
model::SequenceBatch make_synthetic_batch(const std::vector<SyntheticSample>& samples, int vocab_size,
                                          uint64_t seed);

// The benchmarks' model for these batches: vocabulary 128 (the ids above), 256
// positions, the given depth, width and heads.
model::GPT2Config synthetic_model(int n_layer, int d_model, int n_head);

// The batch and model shape as JSON (for the PyTorch peers, which replay it exactly).
std::string synthetic_batch_json(const model::SequenceBatch& batch, const model::GPT2Config& config);

}  // namespace coconut::bench
