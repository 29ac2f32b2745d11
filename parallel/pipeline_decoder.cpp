// PipelineDecoder (pipeline_decoder.h): decoding columns through the stages of a replica.
#include "parallel/pipeline_decoder.h"

#include <algorithm>
#include <cstring>

#include "runtime/check.h"

namespace coconut::parallel {

namespace {
constexpr int kDecodeTag = 0x0DEC;  // the residual rows one stage sends the next
}

StageLayers decoding_stage(const model::GPT2& model, const Communicator& pipeline,
                           const std::vector<StageLayers>& partition) {
  validate_partition(partition, model.config().n_layer);
  COCONUT_CHECK(static_cast<int>(partition.size()) == pipeline.size(),
                "pipeline decoding: {} stages in the partition for {} pipeline ranks", partition.size(),
                pipeline.size());
  return partition[pipeline.rank()];
}

// ---------------------------------------------------------------- PipelineDecoder

PipelineDecoder::PipelineDecoder(const model::GPT2& model, Communicator& pipeline,
                                 const std::vector<StageLayers>& partition)
    : PipelineDecoder(model, pipeline, decoding_stage(model, pipeline, partition)) {}

PipelineDecoder::PipelineDecoder(const model::GPT2& model, Communicator& pipeline, StageLayers mine)
    : model_(model), pipe_(pipeline), stage_(model, mine.begin, mine.end) {}

void PipelineDecoder::begin(int B, int T) {
  stage_.begin(B, T);
  hidden_.assign(static_cast<size_t>(B) * model_.config().d_model, 0.f);
  tokens_.assign(B, 0);
  ran_ = false;
}

void PipelineDecoder::forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
                              const uint8_t* thought) {
  const int rank = pipe_.rank();
  const size_t rows = static_cast<size_t>(b - a) * stage_.batch_size(), C = model_.config().d_model;
  if (!stage_.first()) {
    in_.resize(rows * C);
    pipe_.recv(in_.data(), in_.size(), rank - 1, kDecodeTag);
  }
  const float* out = stage_.forward(a, b, tokens, pos_ids, key_mask, thought, hidden_.data(), in_.data());
  if (!stage_.last()) {
    pipe_.send(out, rows * C, rank + 1, kDecodeTag);
  } else {
    stage_.greedy_tokens(tokens_.data());
    std::copy_n(stage_.last_hidden(), hidden_.size(), hidden_.begin());
  }
  const int root = pipe_.size() - 1;
  pipe_.broadcast(hidden_.data(), hidden_.size(), root);
  pipe_.broadcast_bytes(tokens_.data(), tokens_.size() * sizeof(int), root);
  ran_ = true;
}

void PipelineDecoder::greedy_tokens(int* out) {
  COCONUT_CHECK(ran_, "greedy_tokens before any forward");
  std::copy(tokens_.begin(), tokens_.end(), out);
}

const float* PipelineDecoder::hidden() {
  COCONUT_CHECK(ran_, "hidden states before any forward");
  return hidden_.data();
}

}  // namespace coconut::parallel
