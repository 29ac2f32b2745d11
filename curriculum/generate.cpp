// Column-by-column batched decoding with per-sample latent / text modes (see generate.h).
#include "curriculum/generate.h"

#include <algorithm>

#include "curriculum/batching.h"
#include "model/decoder.h"
#include "runtime/check.h"

namespace coconut::curriculum {

enum class BatchDecoding::Mode : uint8_t {
  latent,  // the hidden state of this column decides: another thought, or <eot>
  text,    // this column's hidden state gives the next token
  done,    // <eos> seen (or nothing left to do); its columns are computed but ignored
};

std::vector<Generation> generate_greedy(const model::GPT2& model, const std::vector<const BuiltSample*>& prompts,
                                        const Tokenizer& tok, const GenerateOptions& opt) {
  model::CpuDecoder decoder(model);
  return generate_greedy(decoder, prompts, tok, opt);
}

std::vector<Generation> generate_greedy(model::Decoder& decoder, const std::vector<const BuiltSample*>& prompts,
                                        const Tokenizer& tok, const GenerateOptions& opt) {
  BatchDecoding d(prompts, tok, opt, decoder.config());
  decoder.begin(d.batch_size(), d.max_columns());
  do {
    const BatchDecoding::Forward f = d.next_forward();
    decoder.forward(f.a, f.b, f.tokens, f.pos_ids, f.key_mask, f.thought);
  } while (d.take(decoder));
  return std::move(d.generations());
}

BatchDecoding::BatchDecoding(const std::vector<const BuiltSample*>& prompts, const Tokenizer& tok,
                             const GenerateOptions& opt, const model::GPT2Config& cfg)
    : tok_(tok), opt_(opt), B_(static_cast<int>(prompts.size())), C_(cfg.d_model) {
  const int B = B_;
  COCONUT_CHECK(B > 0, "generation needs at least one prompt");
  COCONUT_CHECK(opt.max_new_tokens >= 1, "max_new_tokens must be >= 1 (got {})", opt.max_new_tokens);

  // Split each prompt into the prefix run in one pass and what decoding does after it:
  // with feedback, the prefix ends at <bot> and K = the latents that follow (the cap).
  std::vector<BuiltSample> prefix(B);
  cap_.assign(B, 0);
  mode_.assign(B, Mode::text);
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
      cap_[s] = K;
      mode_[s] = Mode::latent;
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
  T_ = std::min(P + after_prefix + opt.max_new_tokens, cfg.max_positions);

  // Positions and key mask of every column (the prefixes', then one column per step),
  // and the tokens of the columns [a, b) the next forward runs: first the prefixes.
  pos_ids_.assign(static_cast<size_t>(T_) * B, 0);
  key_mask_.assign(static_cast<size_t>(T_) * B, 0);
  std::copy(batch.pos_ids.begin(), batch.pos_ids.end(), pos_ids_.begin());
  std::copy(batch.key_mask.begin(), batch.key_mask.end(), key_mask_.begin());
  tokens_ = batch.tokens;
  a_ = 0, b_ = P;
  out_.assign(B, Generation{});
  next_.assign(B, tok.pad_id());
  thought_.assign(B, 0);
}

void BatchDecoding::open_column(int t) {  // column t continues every sequence
  for (int s = 0; s < B_; ++s) {
    pos_ids_[static_cast<size_t>(t) * B_ + s] = pos_ids_[static_cast<size_t>(t - 1) * B_ + s] + 1;
    key_mask_[static_cast<size_t>(t) * B_ + s] = 1;
  }
}

BatchDecoding::Forward BatchDecoding::next_forward() {
  // When every sample has used its last allowed thought at column b - 1, the <eot> at
  // column b needs no hidden state: it joins this forward, as the last thought and
  // <eot> (or, with no thoughts, the whole prompt) were one pass of the prompt's plan
  // before. Same columns per call, same sums: the fixed count stays bit for bit.
  bool all_capped = true;
  for (int s = 0; s < B_; ++s) all_capped = all_capped && mode_[s] == Mode::latent && out_[s].thoughts == cap_[s];
  if (all_capped && b_ < T_) {
    open_column(b_);
    tokens_.insert(tokens_.end(), static_cast<size_t>(B_), tok_.end_latent_id());
    std::fill(mode_.begin(), mode_.end(), Mode::text);  // <eot>'s hidden state gives the first token
    ++b_;
  }
  const size_t first = static_cast<size_t>(a_) * B_;
  return {a_, b_, tokens_.data(), pos_ids_.data() + first, key_mask_.data() + first,
          thoughts_in_ ? thought_.data() : nullptr, any_text()};
}

bool BatchDecoding::any_text() const {
  return std::find(mode_.begin(), mode_.end(), Mode::text) != mode_.end();
}

bool BatchDecoding::take(model::ColumnOutput& column) {
  const int B = B_, C = C_;
  const int t = b_ - 1;
  if (t >= T_ - 1) return false;

  // Decide every sample's input of column t + 1 from its state at column t: the
  // hidden states only where the classifier reads them (or thoughts are kept), the
  // greedy tokens only where some sample writes text.
  const float* h = nullptr;
  const bool text = any_text();  // as next_forward told the driver
  if (text) column.greedy_tokens(next_.data());
  bool all_done = true;
  thoughts_in_ = false;
  for (int s = 0; s < B; ++s) {
    thought_[s] = 0;
    if (mode_[s] == Mode::latent) {
      Generation& g = out_[s];
      bool stop = g.thoughts == cap_[s];
      if (!stop && opt_.eot_classifier) {
        if (!h) h = column.hidden();
        stop = opt_.eot_classifier->stops(h + static_cast<size_t>(s) * C);
      }
      if (stop) {
        next_[s] = tok_.end_latent_id();
        mode_[s] = Mode::text;  // the <eot> column's hidden state gives the first token
      } else {
        next_[s] = tok_.latent_id();
        thought_[s] = 1;
        thoughts_in_ = true;
        ++g.thoughts;
        if (opt_.keep_thought_states) {
          if (!h) h = column.hidden();
          g.thought_states.emplace_back(h + static_cast<size_t>(s) * C, h + static_cast<size_t>(s + 1) * C);
        }
      }
    } else if (text) {
      // Finished samples keep taking their greedy token as input (any token would do:
      // a sample's columns never reach another sample).
      if (mode_[s] == Mode::text) {
        if (next_[s] == tok_.eos_id()) {
          mode_[s] = Mode::done;
        } else {
          out_[s].ids.push_back(next_[s]);
          // A sample that left latent mode early has columns to spare; its budget is the same.
          if (static_cast<int>(out_[s].ids.size()) == opt_.max_new_tokens) mode_[s] = Mode::done;
        }
      }
    }
    all_done = all_done && mode_[s] == Mode::done;
  }
  if (all_done) return false;
  a_ = t + 1;
  b_ = t + 2;
  open_column(a_);
  tokens_ = next_;
  return true;
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
