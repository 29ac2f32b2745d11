// The range harness of the decoder tests (test_gpt2_model, test_dropout): a tiny
// config, random weights, a two-sequence batch with left padding, and a forward/backward
// over given pass boundaries written against GPT2's range primitive directly.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "model/gpt2.h"

namespace coconut::model::test {

inline GPT2Config tiny_config(float dropout = 0) {
  GPT2Config c;
  c.vocab_size = 11;
  c.max_positions = 16;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 8;
  c.dropout = dropout;
  return c;
}

inline void randomize(GPT2& model, uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, scale);
  for (size_t i = 0; i < model.num_params(); ++i) model.params()[i] = dist(gen);
}

// B=2 sequences, T=6 columns, time-major; sequence 1 is left-padded by one column.
struct Batch {
  int B = 2, T = 6;
  std::vector<int> tokens = {3, 0, 7, 4, 1, 9, 2, 5, 10, 6, 8, 3};
  std::vector<int> targets = {7, -100, 1, 4, 2, 5, -100, 6, 8, 3, 4, 1};
  std::vector<uint8_t> mask = {1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  std::vector<int> pos = {0, 0, 1, 0, 2, 1, 3, 2, 4, 3, 5, 4};
  std::vector<int64_t> ids = {0, 1};
};

// Dropout of a run: off by default; seed and step key the masks.
struct Drop {
  bool enabled = false;
  uint64_t seed = 42, step = 7;
};

// Runs the passes given by their boundaries column range by column range (forward_range,
// independently of MultipassRunner), the LM head on labelled rows scaled by loss_scale
// (0: 1 / the batch's targets), and (when backward) the backward of the passes in
// reverse. Returns the loss; hidden_out gets the final-norm states.
inline double run(GPT2& model, const Batch& batch, const std::vector<int>& cuts, bool backward,
                  std::vector<float>* hidden_out = nullptr, const Drop& drop = {}, float loss_scale = 0) {
  const GPT2Config& cfg = model.config();
  const int C = cfg.d_model, B = batch.B, T = batch.T, R = B * T;
  Activations acts;
  acts.resize(cfg, B, T, true);
  acts.pos_ids = batch.pos;
  acts.key_mask = batch.mask;
  acts.dropout_enabled = drop.enabled;
  acts.dropout_seed = drop.seed;
  acts.dropout_step = drop.step;
  acts.sample_ids = batch.ids;
  std::vector<float> embeds(R * C);
  model.embed_tokens(batch.tokens.data(), R, embeds.data());
  for (size_t i = 0; i + 1 < cuts.size(); ++i)
    model.forward_range(acts, cuts[i], cuts[i + 1], embeds.data() + static_cast<size_t>(cuts[i]) * B * C);
  if (hidden_out) hidden_out->assign(acts.lnf, acts.lnf + R * C);

  std::vector<int> rows, targets;
  for (int r = 0; r < R; ++r)
    if (batch.targets[r] >= 0) rows.push_back(r), targets.push_back(batch.targets[r]);
  const int n = static_cast<int>(rows.size());
  std::vector<float> gathered(n * C), d_gathered(n * C), logits(n * cfg.vocab_size);
  for (int i = 0; i < n; ++i)
    std::copy(acts.lnf + rows[i] * C, acts.lnf + (rows[i] + 1) * C, gathered.begin() + i * C);
  const float loss = model.lm_head_loss(gathered.data(), targets.data(), n, loss_scale > 0 ? loss_scale : 1.f / n,
                                        d_gathered.data(), logits.data());
  if (backward) {
    std::vector<float> d_hidden(R * C, 0.f), d_embeds(R * C, 0.f);
    for (int i = 0; i < n; ++i)
      std::copy(d_gathered.begin() + i * C, d_gathered.begin() + (i + 1) * C, d_hidden.begin() + rows[i] * C);
    acts.zero_grads();
    BackwardScratch scratch;
    scratch.resize(cfg, R);
    for (size_t i = cuts.size() - 1; i > 0; --i) {
      const size_t off = static_cast<size_t>(cuts[i - 1]) * B * C;
      model.backward_range(acts, cuts[i - 1], cuts[i], d_hidden.data() + off, d_embeds.data() + off, scratch);
    }
    model.embed_tokens_backward(batch.tokens.data(), R, d_embeds.data());
  }
  return loss;
}

}  // namespace coconut::model::test
