// Synthetic Coconut batches (see synthetic_batch.h).
#include "bench/synthetic_batch.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "runtime/check.h"
#include "runtime/rng.h"

namespace coconut::bench {

std::vector<SyntheticSample> prosqa_like_samples(int B, int question, int thoughts, int rest, uint64_t seed) {
  COCONUT_CHECK(B > 0 && question > 0 && thoughts >= 0 && rest > 0, "bad synthetic batch shape");
  CounterRng rng(seed, {0x5359u});
  std::vector<SyntheticSample> out(B);
  const int spread = std::max(1, question / 4);
  for (SyntheticSample& s : out) {
    s.question = question - spread + static_cast<int>(rng.below(2 * spread + 1));
    s.thoughts = thoughts;
    s.rest = rest;
  }
  return out;
}

model::GPT2Config synthetic_model(int n_layer, int d_model, int n_head) {
  model::GPT2Config c;
  c.vocab_size = 128;
  c.max_positions = 256;
  c.n_layer = n_layer;
  c.d_model = d_model;
  c.n_head = n_head;
  return c;
}

model::SequenceBatch make_synthetic_batch(const std::vector<SyntheticSample>& samples, int vocab_size,
                                          uint64_t seed) {
  COCONUT_CHECK(vocab_size > 8, "the synthetic batch needs a vocabulary of more than 8 ids");
  const int bot = vocab_size - 4, eot = vocab_size - 3, latent = vocab_size - 2, eos = vocab_size - 1;
  const int B = static_cast<int>(samples.size());
  // Each sample's ids and whether each id is a target (everything after <eot>).
  std::vector<std::vector<int>> ids(B);
  std::vector<std::vector<uint8_t>> labelled(B);
  CounterRng rng(seed, {0x544fu});
  int f = 0, n = 0;  // the aligned column of the first thought; the most thoughts
  for (int s = 0; s < B; ++s) {
    const SyntheticSample& x = samples[s];
    for (int i = 0; i < x.question; ++i) ids[s].push_back(static_cast<int>(rng.below(bot)));
    ids[s].push_back(bot);
    ids[s].insert(ids[s].end(), x.thoughts, latent);
    ids[s].push_back(eot);
    labelled[s].assign(ids[s].size(), 0);
    for (int i = 0; i < x.rest; ++i) ids[s].push_back(static_cast<int>(rng.below(bot))), labelled[s].push_back(1);
    ids[s].push_back(eos);
    labelled[s].push_back(1);
    if (x.thoughts > 0) f = std::max(f, x.question + 1);
    n = std::max(n, x.thoughts);
  }
  // Left-pad samples with thoughts so that their first thought sits at column f.
  std::vector<int> shift(B, 0);
  int T = 0;
  for (int s = 0; s < B; ++s) {
    if (samples[s].thoughts > 0) shift[s] = f - (samples[s].question + 1);
    T = std::max(T, shift[s] + static_cast<int>(ids[s].size()));
  }
  model::SequenceBatch b;
  b.B = B;
  b.T = T;
  const size_t R = static_cast<size_t>(B) * T;
  b.tokens.assign(R, eos);
  b.targets.assign(R, -100);
  b.pos_ids.assign(R, 0);
  b.key_mask.assign(R, 0);
  for (int s = 0; s < B; ++s)
    for (size_t i = 0; i < ids[s].size(); ++i) {
      const size_t row = (shift[s] + i) * B + s;
      b.tokens[row] = ids[s][i];
      b.pos_ids[row] = static_cast<int>(i);
      b.key_mask[row] = 1;
      if (i + 1 < ids[s].size() && labelled[s][i + 1]) b.targets[row] = ids[s][i + 1];
    }
  // Passes: [0, f), one column per further thought, then the rest (DESIGN.md 2.2).
  if (n == 0) {
    b.passes = {model::Pass{0, T, {}}};
    return b;
  }
  for (int p = 0; p <= n; ++p) {
    model::Pass pass;
    pass.begin = p == 0 ? 0 : f + p - 1;
    pass.end = p == 0 ? f : (p == n ? T : f + p);
    if (p < n)
      for (int s = 0; s < B; ++s)
        if (samples[s].thoughts > p) pass.feedback.push_back({s, f + p - 1});
    b.passes.push_back(pass);
  }
  return b;
}

std::string synthetic_batch_json(const model::SequenceBatch& batch, const model::GPT2Config& c) {
  nlohmann::json j;
  j["model"] = {{"n_layer", c.n_layer}, {"n_head", c.n_head}, {"d_model", c.d_model},
                {"vocab_size", c.vocab_size}, {"max_positions", c.max_positions}};
  j["B"] = batch.B;
  j["T"] = batch.T;
  j["tokens"] = batch.tokens;
  j["targets"] = batch.targets;
  j["pos_ids"] = batch.pos_ids;
  j["key_mask"] = batch.key_mask;
  nlohmann::json passes = nlohmann::json::array();
  for (const model::Pass& p : batch.passes) {
    nlohmann::json fb = nlohmann::json::array();
    for (const model::Feedback& f : p.feedback) fb.push_back({{"sample", f.sample}, {"from", f.from}});
    passes.push_back({{"begin", p.begin}, {"end", p.end}, {"feedback", fb}});
  }
  j["passes"] = passes;
  return j.dump();
}

}  // namespace coconut::bench
