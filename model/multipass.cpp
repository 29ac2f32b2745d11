// Single-process execution of a pass plan (DESIGN.md 2.2).
#include "model/multipass.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "runtime/check.h"

namespace coconut::model {

void validate_batch(const SequenceBatch& b, const GPT2Config& config) {
  const size_t R = static_cast<size_t>(b.B) * b.T;
  COCONUT_CHECK(b.B > 0 && b.T > 0, "batch needs B > 0 and T > 0 (got B={} T={})", b.B, b.T);
  COCONUT_CHECK(b.tokens.size() == R && b.targets.size() == R && b.pos_ids.size() == R && b.key_mask.size() == R,
                "batch arrays must hold T*B = {} entries", R);
  COCONUT_CHECK(!b.passes.empty() && b.passes.front().begin == 0 && b.passes.back().end == b.T,
                "passes must cover the columns [0, {})", b.T);
  for (size_t p = 0; p < b.passes.size(); ++p) {
    const Pass& pass = b.passes[p];
    COCONUT_CHECK(pass.begin < pass.end, "pass {} is empty ([{}, {}))", p, pass.begin, pass.end);
    if (p > 0) COCONUT_CHECK(pass.begin == b.passes[p - 1].end, "pass {} does not start where pass {} ends", p, p - 1);
    for (const Feedback& f : pass.feedback) {
      COCONUT_CHECK(f.sample >= 0 && f.sample < b.B, "feedback of pass {} names sample {} of {}", p, f.sample, b.B);
      COCONUT_CHECK(f.from >= pass.begin && f.from < pass.end && p + 1 < b.passes.size() &&
                        f.from + 1 >= b.passes[p + 1].begin && f.from + 1 < b.passes[p + 1].end,
                    "feedback of pass {} from column {} must come from this pass and feed the next one", p, f.from);
    }
  }
  for (size_t r = 0; r < R; ++r) {
    COCONUT_CHECK(b.targets[r] == -100 || (b.targets[r] >= 0 && b.targets[r] < config.vocab_size),
                  "target {} at row {} is neither -100 nor a token id below {}", b.targets[r], r, config.vocab_size);
    COCONUT_CHECK(b.tokens[r] >= 0 && b.tokens[r] < config.vocab_size, "token {} at row {} outside [0, {})",
                  b.tokens[r], r, config.vocab_size);
    // Checked here and not only by the CPU model's forward: a GPU stage would read past wpe.
    COCONUT_CHECK(b.pos_ids[r] >= 0 && b.pos_ids[r] < config.max_positions, "position id {} at row {} outside [0, {})",
                  b.pos_ids[r], r, config.max_positions);
  }
}

void forward_passes(const GPT2& model, Activations& acts, const SequenceBatch& batch, float* embeds,
                    std::vector<uint8_t>* is_thought) {
  const int B = batch.B, C = model.config().d_model;
  COCONUT_CHECK(acts.B == B && acts.T >= batch.T, "activations ({} x {}) do not fit the batch ({} x {})", acts.B,
                acts.T, B, batch.T);
  if (is_thought) is_thought->assign(static_cast<size_t>(B) * batch.T, 0);
  // Pass by pass; after each, its outputs become the next pass's thoughts.
  for (const Pass& pass : batch.passes) {
    model.forward_range(acts, pass.begin, pass.end, embeds + static_cast<size_t>(pass.begin) * B * C);
    for (const Feedback& f : pass.feedback) {
      const size_t from = static_cast<size_t>(f.from) * B + f.sample, to = from + B;
      model.feed_thought(acts.lnf + from * C, embeds + to * C);
      if (is_thought) (*is_thought)[to] = 1;
    }
  }
}

double MultipassRunner::forward_backward(GPT2& model, const SequenceBatch& batch, float loss_scale) {
  return run(model, batch, loss_scale, true);
}

double MultipassRunner::forward_loss(GPT2& model, const SequenceBatch& batch, float loss_scale) {
  return run(model, batch, loss_scale, false);
}

void MultipassRunner::set_dropout(uint64_t seed, uint64_t step, std::vector<int64_t> sample_ids) {
  dropout_pending_ = true;
  dropout_seed_ = seed;
  dropout_step_ = step;
  dropout_ids_ = std::move(sample_ids);
}

double MultipassRunner::run(GPT2& model, const SequenceBatch& batch, float loss_scale, bool backward) {
  const GPT2Config& cfg = model.config();
  validate_batch(batch, cfg);
  const int B = batch.B, T = batch.T, C = cfg.d_model;
  const size_t R = static_cast<size_t>(B) * T;
  if (acts_.B != B || acts_.T != T || !acts_.training || acts_.policy != policy_)
    acts_.resize(cfg, B, T, true, 0, -1, policy_);
  acts_.workspace = &workspace_;
  acts_.pos_ids = batch.pos_ids;
  acts_.key_mask = batch.key_mask;
  acts_.dropout_enabled = backward && cfg.dropout > 0;
  if (acts_.dropout_enabled) {
    COCONUT_CHECK(dropout_pending_, "model.dropout is {}: call MultipassRunner::set_dropout(seed, step, sample ids) "
                  "before each forward_backward", cfg.dropout);
    COCONUT_CHECK(dropout_ids_.empty() || dropout_ids_.size() == static_cast<size_t>(B),
                  "set_dropout got {} sample ids for a batch of {} sequences", dropout_ids_.size(), B);
    dropout_pending_ = false;
    acts_.dropout_seed = dropout_seed_;
    acts_.dropout_step = dropout_step_;
    for (int s = 0; s < B; ++s) acts_.sample_ids[s] = dropout_ids_.empty() ? s : dropout_ids_[s];
  }
  embeds_.resize(R * C);
  model.embed_tokens(batch.tokens.data(), static_cast<int>(R), embeds_.data());
  forward_passes(model, acts_, batch, embeds_.data(), &is_thought_);

  // Loss over the targeted rows only: the LM head is not part of the recurrence.
  target_rows_.clear();
  target_ids_.clear();
  for (size_t r = 0; r < R; ++r)
    if (batch.targets[r] >= 0) target_rows_.push_back(static_cast<int>(r)), target_ids_.push_back(batch.targets[r]);
  const int n = static_cast<int>(target_rows_.size());
  gathered_.resize(static_cast<size_t>(n) * C);
  d_gathered_.resize(static_cast<size_t>(n) * C);
  logits_.resize(static_cast<size_t>(n) * cfg.vocab_size);
  for (int i = 0; i < n; ++i)
    std::memcpy(gathered_.data() + static_cast<size_t>(i) * C, acts_.lnf + static_cast<size_t>(target_rows_[i]) * C,
                sizeof(float) * C);
  // forward_loss (evaluation) leaves the gradients alone.
  const double loss = model.lm_head_loss(gathered_.data(), target_ids_.data(), n, loss_scale,
                                         backward ? d_gathered_.data() : nullptr, logits_.data());
  if (!backward) return loss;

  // Backward: passes in reverse. A thought's input gradient is added to the hidden
  // state it came from before that earlier pass runs its backward.
  d_hidden_.assign(R * C, 0.f);
  d_embeds_.assign(R * C, 0.f);
  for (int i = 0; i < n; ++i)
    std::memcpy(d_hidden_.data() + static_cast<size_t>(target_rows_[i]) * C,
                d_gathered_.data() + static_cast<size_t>(i) * C, sizeof(float) * C);
  const double extra_loss = hidden_loss_ ? hidden_loss_(acts_, d_hidden_) : 0.0;
  COCONUT_CHECK(d_hidden_.size() == R * C, "the hidden-state loss hook resized d_hidden ({} floats, expected {})",
                d_hidden_.size(), R * C);
  if (scratch_.dres.size() < R * C) scratch_.resize(cfg, static_cast<int>(R));
  acts_.zero_grads();
  for (size_t p = batch.passes.size(); p-- > 0;) {
    const Pass& pass = batch.passes[p];
    for (const Feedback& f : pass.feedback) {
      const size_t from = static_cast<size_t>(f.from) * B + f.sample, to = from + B;
      model.feed_thought_backward(d_embeds_.data() + to * C, d_hidden_.data() + from * C);
    }
    const size_t off = static_cast<size_t>(pass.begin) * B * C;
    model.backward_range(acts_, pass.begin, pass.end, d_hidden_.data() + off, d_embeds_.data() + off, scratch_);
  }
  // Token embeddings get their gradient; thought rows are not tokens.
  for (size_t r = 0; r < R; ++r)
    if (is_thought_[r]) std::memset(d_embeds_.data() + r * C, 0, sizeof(float) * C);
  model.embed_tokens_backward(batch.tokens.data(), static_cast<int>(R), d_embeds_.data());
  return hidden_loss_ ? loss + extra_loss : loss;
}

}  // namespace coconut::model
