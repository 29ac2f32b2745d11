// Greedy decoding (model/decoder.h) through the pipeline stages of one replica, so that
// a rank evaluates with only its stage's parameters in memory (parallel/partition.h
// held_param_slices); each rank runs its stage as a model::StageDecoder.
//
// PipelineDecoder decodes one batch at a time: every rank of the replica runs the same
// decoding loop in lockstep (curriculum/generate.h). A forward runs the columns through
// the stages in turn (each stage's output rows sent to the next, as the executor's
// Forward ops do), then the last stage takes the greedy token of each sample through
// the tied LM head and broadcasts those tokens and the final hidden states to the
// replica. Every rank therefore sees the same tokens and thoughts and takes the same
// decisions in the loop; stage 0 feeds the broadcast hidden states back as continuous
// thoughts. With one stage it is CpuDecoder plus a broadcast to itself. The evaluation
// of `coconut train` keeps a batch in flight on every stage instead
// (launcher/staged_generation.h).
#pragma once

#include <cstdint>
#include <vector>

#include "model/decoder.h"
#include "model/gpt2.h"
#include "parallel/comm.h"
#include "parallel/partition.h"

namespace coconut::parallel {

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
  PipelineDecoder(const model::GPT2& model, Communicator& pipeline, StageLayers mine);
  const model::GPT2& model_;
  Communicator& pipe_;
  model::StageDecoder stage_;
  std::vector<float> in_;      // rows received from the previous stage
  std::vector<float> hidden_;  // [B, C] final-norm states of the last column, from the last stage
  std::vector<int> tokens_;    // [B] their greedy tokens
  bool ran_ = false;
};

// This rank's layers in `partition`, after checking that it is a valid partition of the
// model with one stage per rank of `pipeline` (what decoding through the stages needs).
StageLayers decoding_stage(const model::GPT2& model, const Communicator& pipeline,
                           const std::vector<StageLayers>& partition);

}  // namespace coconut::parallel
