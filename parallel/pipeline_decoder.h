// Greedy decoding (model/decoder.h) through the pipeline stages of one replica, so that
// a rank evaluates with only its stage's parameters in memory (parallel/partition.h
// held_param_slices). Every rank of the replica runs the same decoding loop in lockstep
// (curriculum/generate.h): a forward runs the columns through the stages in turn (each
// stage's output rows sent to the next, as the executor's Forward ops do), then the last
// stage takes the greedy token of each sample through the tied LM head and broadcasts
// those tokens and the final hidden states to the replica. Every rank therefore sees
// the same tokens and thoughts, and takes the same decisions in the loop; stage 0 feeds
// the broadcast hidden states back as continuous thoughts.
// With one stage it is CpuDecoder plus a broadcast to itself.
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
  // running partition[s]. The model must hold that stage's slices (held_param_slices);
  // model and communicator must outlive the decoder.
  PipelineDecoder(const model::GPT2& model, Communicator& pipeline, std::vector<StageLayers> partition);

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
  std::vector<StageLayers> partition_;
  int stage_;
  bool first_, last_;
  model::Activations acts_;  // this stage's layers only
  std::vector<float> in_, logits_;
  std::vector<float> hidden_;  // [B, C] final-norm states of the last column, from the last stage
  std::vector<int> tokens_;    // [B] their greedy tokens
  int end_ = 0;                // columns run so far
};

}  // namespace coconut::parallel
