// PipelineDecoder (pipeline_decoder.h): decoding columns through the stages of a replica.
#include "parallel/pipeline_decoder.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "runtime/check.h"

namespace coconut::parallel {

namespace {
constexpr int kDecodeTag = 0x0DEC;  // the residual rows one stage sends the next
}

PipelineDecoder::PipelineDecoder(const model::GPT2& model, Communicator& pipeline, std::vector<StageLayers> partition)
    : model_(model), pipe_(pipeline), partition_(std::move(partition)), stage_(pipeline.rank()) {
  validate_partition(partition_, model.config().n_layer);
  COCONUT_CHECK(static_cast<int>(partition_.size()) == pipe_.size(),
                "pipeline decoder: {} stages in the partition for {} pipeline ranks", partition_.size(), pipe_.size());
  first_ = stage_ == 0;
  last_ = stage_ + 1 == pipe_.size();
}

void PipelineDecoder::begin(int B, int T) {
  COCONUT_CHECK(B > 0 && T > 0, "a decoder needs B > 0 and T > 0 (got {} x {})", B, T);
  const StageLayers& mine = partition_[stage_];
  acts_.resize(model_.config(), B, T, /*training=*/false, mine.begin, mine.end);
  hidden_.assign(static_cast<size_t>(B) * model_.config().d_model, 0.f);
  tokens_.assign(B, 0);
  end_ = 0;
}

void PipelineDecoder::forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
                              const uint8_t* thought) {
  const int B = acts_.B, C = model_.config().d_model;
  model::take_decoder_columns(acts_, end_, a, b, pos_ids, key_mask, thought != nullptr);
  const size_t n = static_cast<size_t>(b - a) * B;
  in_.resize(n * C);
  if (first_) {
    model_.embed_tokens(tokens, static_cast<int>(n), in_.data());
    if (thought)  // the last column's final hidden states, broadcast by the last stage
      for (int s = 0; s < B; ++s)
        if (thought[s])
          std::memcpy(in_.data() + static_cast<size_t>(s) * C, hidden_.data() + static_cast<size_t>(s) * C,
                      sizeof(float) * C);
  } else {
    pipe_.recv(in_.data(), in_.size(), stage_ - 1, kDecodeTag);
  }
  const StageLayers& mine = partition_[stage_];
  model_.forward_stage(acts_, a, b, mine.begin, mine.end, in_.data(), first_, last_);
  end_ = b;
  if (!last_) {
    pipe_.send(acts_.layers[mine.end - 1].res_out + static_cast<size_t>(a) * B * C, n * C, stage_ + 1, kDecodeTag);
  } else {
    const int V = model_.config().vocab_size;
    const float* h = acts_.lnf + static_cast<size_t>(b - 1) * B * C;
    std::copy_n(h, hidden_.size(), hidden_.begin());
    logits_.resize(static_cast<size_t>(B) * V);
    model_.lm_head_logits(h, B, logits_.data());
    for (int s = 0; s < B; ++s) {
      const float* z = logits_.data() + static_cast<size_t>(s) * V;
      tokens_[s] = static_cast<int>(std::max_element(z, z + V) - z);
    }
  }
  const int root = pipe_.size() - 1;
  pipe_.broadcast(hidden_.data(), hidden_.size(), root);
  pipe_.broadcast_bytes(tokens_.data(), tokens_.size() * sizeof(int), root);
}

void PipelineDecoder::greedy_tokens(int* out) {
  COCONUT_CHECK(end_ > 0, "greedy_tokens before any forward");
  std::copy(tokens_.begin(), tokens_.end(), out);
}

const float* PipelineDecoder::hidden() {
  COCONUT_CHECK(end_ > 0, "hidden states before any forward");
  return hidden_.data();
}

}  // namespace coconut::parallel
