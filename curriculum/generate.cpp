// Batched greedy decoding over the KV cache (see generate.h).
#include "curriculum/generate.h"

#include <algorithm>

#include "curriculum/batching.h"
#include "model/multipass.h"
#include "runtime/check.h"

namespace coconut::curriculum {

std::vector<std::vector<int>> generate_greedy(const model::GPT2& model, const std::vector<const BuiltSample*>& prompts,
                                              const Tokenizer& tok, bool feed_back, int max_new_tokens) {
  const model::GPT2Config& cfg = model.config();
  const model::SequenceBatch batch = make_batch(prompts, tok, feed_back, /*align_ends=*/true);
  const int B = batch.B, T0 = batch.T, C = cfg.d_model, V = cfg.vocab_size;
  const int T = std::min(T0 + max_new_tokens, cfg.max_positions);
  COCONUT_CHECK(T0 < cfg.max_positions, "prompt of {} tokens leaves no room to generate (max_positions {})", T0,
                cfg.max_positions);

  model::Activations acts;
  acts.resize(cfg, B, T, /*training=*/false);
  std::copy(batch.pos_ids.begin(), batch.pos_ids.end(), acts.pos_ids.begin());
  std::copy(batch.key_mask.begin(), batch.key_mask.end(), acts.key_mask.begin());
  std::vector<float> embeds(static_cast<size_t>(B) * T0 * C);
  model.embed_tokens(batch.tokens.data(), B * T0, embeds.data());
  model::forward_passes(model, acts, batch, embeds.data(), nullptr);

  std::vector<std::vector<int>> out(B);
  std::vector<uint8_t> done(B, 0);
  std::vector<float> logits(static_cast<size_t>(B) * V), step_embeds(static_cast<size_t>(B) * C);
  std::vector<int> next(B);
  for (int t = T0 - 1; t < T - 1; ++t) {
    // Next token of every sequence from the hidden state at column t.
    model.lm_head_logits(acts.lnf + static_cast<size_t>(t) * B * C, B, logits.data());
    bool all_done = true;
    for (int s = 0; s < B; ++s) {
      const float* z = logits.data() + static_cast<size_t>(s) * V;
      next[s] = static_cast<int>(std::max_element(z, z + V) - z);
      if (!done[s]) {
        if (next[s] == tok.eos_id()) done[s] = 1;
        else out[s].push_back(next[s]);
      }
      all_done = all_done && done[s];
    }
    if (all_done) break;
    for (int s = 0; s < B; ++s) {
      acts.pos_ids[static_cast<size_t>(t + 1) * B + s] = acts.pos_ids[static_cast<size_t>(t) * B + s] + 1;
      acts.key_mask[static_cast<size_t>(t + 1) * B + s] = 1;
    }
    model.embed_tokens(next.data(), B, step_embeds.data());
    model.forward_range(acts, t + 1, t + 2, step_embeds.data());
  }
  return out;
}

std::string extract_answer(const std::string& text) {
  const size_t hash = text.rfind('#');
  std::string a = hash == std::string::npos ? text : text.substr(hash + 1);
  a.erase(std::remove(a.begin(), a.end(), ','), a.end());
  const size_t b = a.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const size_t e = a.find_last_not_of(" \t\r\n");
  return a.substr(b, e - b + 1);
}

}  // namespace coconut::curriculum
