// StageDecoder and CpuDecoder (see decoder.h): the CPU model's layers over a KV cache,
// one decoding step at a time.
#include "model/decoder.h"

#include <algorithm>
#include <cstring>

#include "runtime/check.h"

namespace coconut::model {

namespace {

// Checks that columns [a, b) continue the `end` columns run so far within acts.T (and
// that a thought has a column before it), then copies their position ids and key mask.
void take_columns(Activations& acts, int end, int a, int b, const int* pos_ids, const uint8_t* key_mask,
                  bool thought) {
  COCONUT_CHECK(a == end && a < b && b <= acts.T, "decoder columns [{}, {}) do not continue [0, {}) within {}", a, b,
                end, acts.T);
  COCONUT_CHECK(!thought || a > 0, "a continuous thought needs a column before it");
  const size_t n = static_cast<size_t>(b - a) * acts.B;
  std::copy_n(pos_ids, n, acts.pos_ids.begin() + static_cast<std::ptrdiff_t>(a) * acts.B);
  std::copy_n(key_mask, n, acts.key_mask.begin() + static_cast<std::ptrdiff_t>(a) * acts.B);
}

}  // namespace

StageDecoder::StageDecoder(const GPT2& model, int first_layer, int end_layer)
    : model_(model), first_layer_(first_layer), end_layer_(end_layer) {
  COCONUT_CHECK(0 <= first_layer && first_layer < end_layer && end_layer <= model.config().n_layer,
                "a decoder stage of layers [{}, {}) in a model of {}", first_layer, end_layer, model.config().n_layer);
}

void StageDecoder::begin(int B, int T) {
  COCONUT_CHECK(B > 0 && T > 0, "a decoder needs B > 0 and T > 0 (got {} x {})", B, T);
  acts_.resize(model_.config(), B, T, /*training=*/false, first_layer_, end_layer_);
  end_ = 0;
}

const float* StageDecoder::forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
                                   const uint8_t* thought, const float* thoughts, const float* in) {
  const int B = acts_.B, C = model_.config().d_model;
  take_columns(acts_, end_, a, b, pos_ids, key_mask, thought != nullptr);
  const size_t n = static_cast<size_t>(b - a) * B;
  if (first()) {
    in_.resize(n * C);
    model_.embed_tokens(tokens, static_cast<int>(n), in_.data());
    if (thought)
      for (int s = 0; s < B; ++s)
        if (thought[s])
          model_.feed_thought(thoughts + static_cast<size_t>(s) * C, in_.data() + static_cast<size_t>(s) * C);
    in = in_.data();
  }
  model_.forward_stage(acts_, a, b, first_layer_, end_layer_, in, first(), last());
  end_ = b;
  const float* out = last() ? acts_.lnf : acts_.layers[end_layer_ - 1].res_out;
  return out + static_cast<size_t>(a) * B * C;
}

const float* StageDecoder::last_hidden() const {
  COCONUT_CHECK(last() && end_ > 0, "hidden states: on the last stage, after a forward");
  return acts_.lnf + static_cast<size_t>(end_ - 1) * acts_.B * model_.config().d_model;
}

void StageDecoder::greedy_tokens(int* out) {
  const int B = acts_.B, V = model_.config().vocab_size;
  const float* h = last_hidden();
  logits_.resize(static_cast<size_t>(B) * V);
  model_.lm_head_logits(h, B, logits_.data());
  for (int s = 0; s < B; ++s) {
    const float* z = logits_.data() + static_cast<size_t>(s) * V;
    out[s] = static_cast<int>(std::max_element(z, z + V) - z);
  }
}

ThoughtSource parse_thought_source(const std::string& name) {
  if (name == "own") return ThoughtSource::own;
  if (name == "zero") return ThoughtSource::zero;
  if (name == "other") return ThoughtSource::other;
  COCONUT_FAIL("unknown thought source '{}' (expected own, zero or other)", name);
}

const char* thought_source_name(ThoughtSource source) {
  switch (source) {
    case ThoughtSource::own: return "own";
    case ThoughtSource::zero: return "zero";
    case ThoughtSource::other: return "other";
  }
  return "?";
}

void ThoughtRouting::begin(int B) {
  donors_.assign(static_cast<size_t>(B), {});
  from_.assign(static_cast<size_t>(B), -1);
}

const std::vector<int>& ThoughtRouting::route(const uint8_t* thought) {
  const int B = static_cast<int>(from_.size());
  takers_.clear();
  for (int s = 0; s < B; ++s) {
    from_[s] = -1;
    if (thought[s]) takers_.push_back(s);
  }
  const size_t m = takers_.size();
  for (size_t i = 0; i < m; ++i) {
    const int s = takers_[i];
    switch (source_) {
      case ThoughtSource::own: from_[s] = s; break;
      case ThoughtSource::zero: break;
      case ThoughtSource::other:  // the next taker's; a taker alone keeps its own
        from_[s] = takers_[(i + 1) % m];
        donors_[static_cast<size_t>(s)].push_back(from_[s]);
        break;
    }
  }
  if (source_ == ThoughtSource::other) (m == 1 ? kept_alone_ : swapped_) += static_cast<int64_t>(m);
  return from_;
}

void CpuDecoder::forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
                         const uint8_t* thought) {
  // A thought is the previous column's final hidden state (stage_ checks there is one).
  const float* previous = thought && a > 0 ? stage_.last_hidden() : nullptr;
  if (previous && routing_.source() != ThoughtSource::own) {
    const std::vector<int>& from = routing_.route(thought);
    const size_t C = static_cast<size_t>(model_.config().d_model);
    replaced_.assign(from.size() * C, 0.0f);
    for (size_t s = 0; s < from.size(); ++s)
      if (from[s] >= 0) std::copy_n(previous + from[s] * C, C, replaced_.data() + s * C);
    previous = replaced_.data();
  }
  stage_.forward(a, b, tokens, pos_ids, key_mask, thought, previous, nullptr);
}

}  // namespace coconut::model
