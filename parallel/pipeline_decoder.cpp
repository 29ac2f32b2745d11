// StageDecoder and PipelineDecoder (pipeline_decoder.h): decoding columns through the
// stages of a replica.
#include "parallel/pipeline_decoder.h"

#include <algorithm>
#include <cstring>

#include "runtime/check.h"

namespace coconut::parallel {

namespace {
constexpr int kDecodeTag = 0x0DEC;  // the residual rows one stage sends the next
}

const std::vector<StageLayers>& checked_decoding_partition(const model::GPT2& model, const Communicator& pipeline,
                                                          const std::vector<StageLayers>& partition) {
  validate_partition(partition, model.config().n_layer);
  COCONUT_CHECK(static_cast<int>(partition.size()) == pipeline.size(),
                "pipeline decoding: {} stages in the partition for {} pipeline ranks", partition.size(),
                pipeline.size());
  return partition;
}

// ---------------------------------------------------------------- StageDecoder

StageDecoder::StageDecoder(const model::GPT2& model, const std::vector<StageLayers>& partition, int stage)
    : model_(model), layers_(partition.at(stage)), first_(stage == 0),
      last_(stage + 1 == static_cast<int>(partition.size())) {}

void StageDecoder::begin(int B, int T) {
  COCONUT_CHECK(B > 0 && T > 0, "a decoder needs B > 0 and T > 0 (got {} x {})", B, T);
  acts_.resize(model_.config(), B, T, /*training=*/false, layers_.begin, layers_.end);
  end_ = 0;
}

const float* StageDecoder::forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
                                   const uint8_t* thought, const float* thoughts, const float* in) {
  const int B = acts_.B, C = model_.config().d_model;
  model::take_decoder_columns(acts_, end_, a, b, pos_ids, key_mask, thought != nullptr);
  const size_t n = static_cast<size_t>(b - a) * B;
  if (first_) {
    in_.resize(n * C);
    model_.embed_tokens(tokens, static_cast<int>(n), in_.data());
    if (thought)  // the previous column's final hidden states
      for (int s = 0; s < B; ++s)
        if (thought[s])
          std::memcpy(in_.data() + static_cast<size_t>(s) * C, thoughts + static_cast<size_t>(s) * C,
                      sizeof(float) * C);
    in = in_.data();
  }
  model_.forward_stage(acts_, a, b, layers_.begin, layers_.end, in, first_, last_);
  end_ = b;
  const float* out = last_ ? acts_.lnf : acts_.layers[layers_.end - 1].res_out;
  return out + static_cast<size_t>(a) * B * C;
}

void StageDecoder::last_column(int* tokens, float* hidden) {
  COCONUT_CHECK(last_ && end_ > 0, "last_column: on the last stage, after a forward");
  const int B = acts_.B, C = model_.config().d_model, V = model_.config().vocab_size;
  const float* h = acts_.lnf + static_cast<size_t>(end_ - 1) * B * C;
  std::copy_n(h, static_cast<size_t>(B) * C, hidden);
  logits_.resize(static_cast<size_t>(B) * V);
  model_.lm_head_logits(h, B, logits_.data());
  for (int s = 0; s < B; ++s) {
    const float* z = logits_.data() + static_cast<size_t>(s) * V;
    tokens[s] = static_cast<int>(std::max_element(z, z + V) - z);
  }
}

// ---------------------------------------------------------------- PipelineDecoder

PipelineDecoder::PipelineDecoder(const model::GPT2& model, Communicator& pipeline,
                                 const std::vector<StageLayers>& partition)
    : model_(model), pipe_(pipeline),
      stage_(model, checked_decoding_partition(model, pipeline, partition), pipeline.rank()) {}

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
  if (!stage_.last())
    pipe_.send(out, rows * C, rank + 1, kDecodeTag);
  else
    stage_.last_column(tokens_.data(), hidden_.data());
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
