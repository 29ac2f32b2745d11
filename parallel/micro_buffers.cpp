// A micro-batch's buffers on a pipeline stage (see micro_buffers.h).
#include "parallel/micro_buffers.h"

namespace coconut::parallel {

namespace {

// [T*B, C] buffers of the micro-batch besides its Activations: d_out and d_in always,
// the embeddings on stage 0.
int row_buffers(const StagePlace& place) { return 2 + (place.first ? 1 : 0); }

}  // namespace

MicroBuffers::MicroBuffers(const model::GPT2& model, const model::SequenceBatch& b, const StagePlace& place,
                           model::ActivationPolicy policy) {
  const model::GPT2Config& cfg = model.config();
  const int B = b.B, T = b.T, C = cfg.d_model, P = static_cast<int>(b.passes.size());
  const size_t R = static_cast<size_t>(B) * T;
  acts.resize(cfg, B, T, /*training=*/true, place.layers.begin, place.layers.end, policy);
  acts.pos_ids = b.pos_ids;
  acts.key_mask = b.key_mask;
  if (place.first) {
    embeds.resize(R * C);
    model.embed_tokens(b.tokens.data(), static_cast<int>(R), embeds.data());
    is_thought.assign(R, 0);
    for (const model::Pass& pass : b.passes)
      for (const model::Feedback& f : pass.feedback) is_thought[static_cast<size_t>(f.from + 1) * B + f.sample] = 1;
  }
  d_out.assign(R * C, 0.f);
  d_in.assign(R * C, 0.f);
  thoughts.resize(P);
  thought_grads.resize(P);
  for (int p = 0; p + 1 < P; ++p) {
    thoughts[p].resize(b.passes[p].feedback.size() * C);
    thought_grads[p + 1].resize(b.passes[p].feedback.size() * C);
  }
}

double micro_bytes_per_row(const model::GPT2Config& config, int T, const StagePlace& place,
                           model::ActivationPolicy policy) {
  const double acts = static_cast<double>(model::Activations::floats(config, 1, T, true, place.layers.begin,
                                                                     place.layers.end, policy)) / T;
  return (acts + row_buffers(place) * static_cast<double>(config.d_model)) * sizeof(float);
}

}  // namespace coconut::parallel
