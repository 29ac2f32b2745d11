// Greedy decoding (model/decoder.h) through the pipeline stages of one replica, so that
// a rank evaluates with only its stage's parameters in memory (parallel/partition.h
// held_param_slices).
//
// StageDecoder is one stage's part of decoding one batch, without communication: the
// stage's layers over its own KV cache. Whoever drives it moves the rows between the
// ranks: PipelineDecoder (below) for one batch at a time, and the staged generation of
// launcher/staged_generation.h, which keeps a batch in flight on every stage.
//
// PipelineDecoder: every rank of the replica runs the same decoding loop in lockstep
// (curriculum/generate.h). A forward runs the columns through the stages in turn (each
// stage's output rows sent to the next, as the executor's Forward ops do), then the
// last stage takes the greedy token of each sample through the tied LM head and
// broadcasts those tokens and the final hidden states to the replica. Every rank
// therefore sees the same tokens and thoughts and takes the same decisions in the loop;
// stage 0 feeds the broadcast hidden states back as continuous thoughts. With one stage
// it is CpuDecoder plus a broadcast to itself.
#pragma once

#include <cstdint>
#include <vector>

#include "model/decoder.h"
#include "model/gpt2.h"
#include "parallel/comm.h"
#include "parallel/partition.h"

namespace coconut::parallel {

class StageDecoder {
 public:
  // The model must hold stage `stage`'s slices (held_param_slices) and outlive this.
  StageDecoder(const model::GPT2& model, const std::vector<StageLayers>& partition, int stage);
  bool first() const { return first_; }
  bool last() const { return last_; }
  int batch_size() const { return acts_.B; }

  // Starts B empty sequences of at most T columns (this stage's layers only).
  void begin(int B, int T);
  // Runs columns [a, b) (a: where the previous forward ended) on this stage. Stage 0
  // embeds `tokens`, and where thought[s] != 0 takes sample s's input at column a from
  // `thoughts` ([B, C]: the final hidden states of column a - 1); a later stage takes
  // `in`, the (b - a) * B rows the previous stage returned. Returns this stage's output
  // rows of the columns ((b - a) * B rows of C, valid until the next forward): the
  // residual stream for the next stage, or on the last stage the final-norm states.
  const float* forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
                       const uint8_t* thought, const float* thoughts, const float* in);
  // Last stage, after a forward: the greedy token of every sample at the last column
  // (the first maximum of its logits through the tied LM head) and its hidden states.
  void last_column(int* tokens, float* hidden);

 private:
  const model::GPT2& model_;
  StageLayers layers_;
  bool first_, last_;
  model::Activations acts_;
  std::vector<float> in_, logits_;
  int end_ = 0;  // columns run so far
};

class PipelineDecoder final : public model::Decoder {
 public:
  // pipeline: the replica's ranks ordered by stage (ProcessGrid::pipeline()), rank s
  // running partition[s]. Model and communicator must outlive the decoder.
  PipelineDecoder(const model::GPT2& model, Communicator& pipeline, const std::vector<StageLayers>& partition);

  const model::GPT2Config& config() const override { return model_.config(); }
  void begin(int B, int T) override;  // no communication
  // Collective over the pipeline: every rank passes the same arguments.
  void forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
               const uint8_t* thought) override;
  void greedy_tokens(int* out) override;  // the broadcast tokens: no communication
  const float* hidden() override;         // the broadcast hidden states: no communication

 private:
  const model::GPT2& model_;
  Communicator& pipe_;
  StageDecoder stage_;
  std::vector<float> in_;      // rows received from the previous stage
  std::vector<float> hidden_;  // [B, C] final-norm states of the last column, from the last stage
  std::vector<int> tokens_;    // [B] their greedy tokens
  bool ran_ = false;
};

// `partition`, after checking that it is a valid partition of the model with one stage
// per rank of `pipeline` (what decoding through the stages needs).
const std::vector<StageLayers>& checked_decoding_partition(const model::GPT2& model, const Communicator& pipeline,
                                                          const std::vector<StageLayers>& partition);

}  // namespace coconut::parallel
