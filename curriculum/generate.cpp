// Column-by-column batched decoding with per-sample latent / text modes (see generate.h).
#include "curriculum/generate.h"

#include <algorithm>

#include "curriculum/batching.h"
#include "model/decoder.h"
#include "runtime/check.h"

namespace coconut::curriculum {

namespace {

enum class Mode : uint8_t {
  latent,  // the hidden state of this column decides: another thought, or <eot>
  text,    // this column's hidden state gives the next token
  done,    // <eos> seen (or nothing left to do); its columns are computed but ignored
};

}  // namespace

std::vector<Generation> generate_greedy(const model::GPT2& model, const std::vector<const BuiltSample*>& prompts,
                                        const Tokenizer& tok, const GenerateOptions& opt) {
  model::CpuDecoder decoder(model);
  return generate_greedy(decoder, prompts, tok, opt);
}

std::vector<Generation> generate_greedy(model::Decoder& decoder, const std::vector<const BuiltSample*>& prompts,
                                        const Tokenizer& tok, const GenerateOptions& opt) {
  const model::GPT2Config& cfg = decoder.config();
  const int B = static_cast<int>(prompts.size()), C = cfg.d_model;
  COCONUT_CHECK(B > 0, "generation needs at least one prompt");
  COCONUT_CHECK(opt.max_new_tokens >= 1, "max_new_tokens must be >= 1 (got {})", opt.max_new_tokens);

  // Split each prompt into the prefix run in one pass and what decoding does after it:
  // with feedback, the prefix ends at <bot> and K = the latents that follow (the cap).
  std::vector<BuiltSample> prefix(B);
  std::vector<int> cap(B, 0);
  std::vector<Mode> mode(B, Mode::text);
  int after_prefix = 0;  // columns a prompt occupies after its prefix (K + 1 with <eot>)
  for (int s = 0; s < B; ++s) {
    const std::vector<int>& t = prompts[s]->tokens;
    COCONUT_CHECK(!t.empty(), "prompt {} of the generation batch is empty", s);
    const auto bot = std::find(t.begin(), t.end(), tok.start_latent_id());
    size_t keep = t.size();
    if (opt.feed_back && bot != t.end()) {
      keep = static_cast<size_t>(bot - t.begin()) + 1;
      const int K = static_cast<int>(t.size() - keep) - 1;
      bool ok = K >= 0 && t.back() == tok.end_latent_id();
      for (int i = 0; ok && i < K; ++i) ok = t[keep + i] == tok.latent_id();
      COCONUT_CHECK(ok, "prompt {} of the generation batch: after <bot> expected <latent>*K <eot> and nothing else", s);
      cap[s] = K;
      mode[s] = Mode::latent;
      after_prefix = std::max(after_prefix, K + 1);
    }
    prefix[s].tokens.assign(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(keep));
    prefix[s].labels.assign(keep, -100);
  }
  std::vector<const BuiltSample*> ptrs;
  for (const BuiltSample& p : prefix) ptrs.push_back(&p);
  // Left-padded so that every prefix ends at column P - 1; one pass (no feedback inside).
  const model::SequenceBatch batch = make_batch(ptrs, tok, /*feed_back=*/false, /*align_ends=*/true);
  const int P = batch.T;
  COCONUT_CHECK(P + after_prefix < cfg.max_positions, "prompt of {} tokens leaves no room to generate (max_positions {})",
                P + after_prefix, cfg.max_positions);
  const int T = std::min(P + after_prefix + opt.max_new_tokens, cfg.max_positions);

  decoder.begin(B, T);
  // Positions and key mask of every column (the prefixes', then one column per step),
  // and the tokens of the columns [a, b) the next forward runs: first the prefixes.
  std::vector<int> pos_ids(static_cast<size_t>(T) * B, 0);
  std::vector<uint8_t> key_mask(static_cast<size_t>(T) * B, 0);
  std::copy(batch.pos_ids.begin(), batch.pos_ids.end(), pos_ids.begin());
  std::copy(batch.key_mask.begin(), batch.key_mask.end(), key_mask.begin());
  std::vector<int> tokens = batch.tokens;
  int a = 0, b = P;

  std::vector<Generation> out(B);
  std::vector<int> next(B, tok.pad_id());
  std::vector<uint8_t> thought(B, 0);
  bool thoughts_in = false;  // some sample's input at column a is a thought
  auto open_column = [&](int t) {  // column t continues every sequence
    for (int s = 0; s < B; ++s) {
      pos_ids[static_cast<size_t>(t) * B + s] = pos_ids[static_cast<size_t>(t - 1) * B + s] + 1;
      key_mask[static_cast<size_t>(t) * B + s] = 1;
    }
  };
  for (;;) {
    // When every sample has used its last allowed thought at column b - 1, the <eot> at
    // column b needs no hidden state: it joins this forward, as the last thought and
    // <eot> (or, with no thoughts, the whole prompt) were one pass of the prompt's plan
    // before. Same columns per call, same sums: the fixed count stays bit for bit.
    bool all_capped = true;
    for (int s = 0; s < B; ++s) all_capped = all_capped && mode[s] == Mode::latent && out[s].thoughts == cap[s];
    if (all_capped && b < T) {
      open_column(b);
      tokens.insert(tokens.end(), static_cast<size_t>(B), tok.end_latent_id());
      std::fill(mode.begin(), mode.end(), Mode::text);  // <eot>'s hidden state gives the first token
      ++b;
    }
    const size_t first = static_cast<size_t>(a) * B;
    decoder.forward(a, b, tokens.data(), pos_ids.data() + first, key_mask.data() + first,
                    thoughts_in ? thought.data() : nullptr);
    const int t = b - 1;
    if (t >= T - 1) break;

    // Decide every sample's input of column t + 1 from its state at column t: the
    // hidden states only where the classifier reads them (or thoughts are kept), the
    // greedy tokens only where some sample writes text.
    const float* h = nullptr;
    const bool any_text = std::find(mode.begin(), mode.end(), Mode::text) != mode.end();
    if (any_text) decoder.greedy_tokens(next.data());
    bool all_done = true;
    thoughts_in = false;
    for (int s = 0; s < B; ++s) {
      thought[s] = 0;
      if (mode[s] == Mode::latent) {
        Generation& g = out[s];
        bool stop = g.thoughts == cap[s];
        if (!stop && opt.eot_classifier) {
          if (!h) h = decoder.hidden();
          stop = opt.eot_classifier->stops(h + static_cast<size_t>(s) * C);
        }
        if (stop) {
          next[s] = tok.end_latent_id();
          mode[s] = Mode::text;  // the <eot> column's hidden state gives the first token
        } else {
          next[s] = tok.latent_id();
          thought[s] = 1;
          thoughts_in = true;
          ++g.thoughts;
          if (opt.keep_thought_states) {
            if (!h) h = decoder.hidden();
            g.thought_states.emplace_back(h + static_cast<size_t>(s) * C, h + static_cast<size_t>(s + 1) * C);
          }
        }
      } else if (any_text) {
        // Finished samples keep taking their greedy token as input (any token would do:
        // a sample's columns never reach another sample).
        if (mode[s] == Mode::text) {
          if (next[s] == tok.eos_id()) {
            mode[s] = Mode::done;
          } else {
            out[s].ids.push_back(next[s]);
            // A sample that left latent mode early has columns to spare; its budget is the same.
            if (static_cast<int>(out[s].ids.size()) == opt.max_new_tokens) mode[s] = Mode::done;
          }
        }
      }
      all_done = all_done && mode[s] == Mode::done;
    }
    if (all_done) break;
    a = t + 1;
    b = t + 2;
    open_column(a);
    tokens = next;
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
