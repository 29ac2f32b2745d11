// Padding and the pass plan of a batch (see batching.h).
#include "curriculum/batching.h"

#include <algorithm>

#include "runtime/check.h"

namespace coconut::curriculum {

SampleExtent sample_extent(const BuiltSample& s, const Tokenizer& tok) {
  const auto& t = s.tokens;
  const auto it = std::find(t.begin(), t.end(), tok.latent_id());
  return {it == t.end() ? -1 : static_cast<int>(it - t.begin()), static_cast<int>(t.size())};
}

AlignedLayout aligned_layout(const std::vector<SampleExtent>& samples, int pad_to) {
  COCONUT_CHECK(pad_to >= 1, "aligned_layout: pad_to {}", pad_to);
  auto round_up = [pad_to](int x) { return (x + pad_to - 1) / pad_to * pad_to; };
  AlignedLayout l;
  for (const SampleExtent& e : samples) l.f = std::max(l.f, e.first_latent);
  if (l.f > 0) l.f = round_up(l.f);
  l.pad_left.assign(samples.size(), 0);
  for (size_t s = 0; s < samples.size(); ++s) {
    if (samples[s].first_latent >= 0) l.pad_left[s] = l.f - samples[s].first_latent;
    l.T = std::max(l.T, l.pad_left[s] + samples[s].length);
  }
  l.T = round_up(l.T);
  return l;
}

model::SequenceBatch make_batch(const std::vector<const BuiltSample*>& samples, const Tokenizer& tok,
                                bool feed_back, bool align_ends, int pad_to) {
  COCONUT_CHECK(!samples.empty(), "a batch needs at least one sample");
  COCONUT_CHECK(pad_to >= 1 && (pad_to == 1 || !align_ends), "make_batch: pad_to {} (with align_ends {})", pad_to,
                align_ends);
  const int B = static_cast<int>(samples.size());
  const int latent = tok.latent_id();

  // Column of each sample's first latent (-1: none), the aligned column f, the columns.
  std::vector<SampleExtent> extents;
  int n_max = 0;
  for (int s = 0; s < B; ++s) {
    extents.push_back(sample_extent(*samples[s], tok));
    const auto& t = samples[s]->tokens;
    n_max = std::max(n_max, static_cast<int>(std::count(t.begin(), t.end(), latent)));
  }
  AlignedLayout layout = aligned_layout(extents, pad_to);
  int f = layout.f, T = layout.T;
  std::vector<int>& pad_left = layout.pad_left;
  auto first = [&](int s) { return extents[static_cast<size_t>(s)].first_latent; };
  if (align_ends) {
    T = 0;
    for (int s = 0; s < B; ++s) T = std::max(T, static_cast<int>(samples[s]->tokens.size()));
    for (int s = 0; s < B; ++s) pad_left[s] = T - static_cast<int>(samples[s]->tokens.size());
    // Re-derive f from the end-aligned layout; with feedback every sample with latents
    // must agree (one pass plan), without it (pause tokens) they need not.
    f = -1;
    for (int s = 0; feed_back && s < B; ++s) {
      if (first(s) < 0) continue;
      const int col = first(s) + pad_left[s];
      COCONUT_CHECK(f < 0 || f == col,
                    "prompts of one generation batch must have the same number of latents after their question");
      f = col;
    }
  }

  model::SequenceBatch b;
  b.B = B;
  b.T = T;
  const size_t R = static_cast<size_t>(B) * T;
  b.tokens.assign(R, tok.pad_id());
  b.targets.assign(R, -100);
  b.pos_ids.assign(R, 0);
  b.key_mask.assign(R, 0);
  for (int s = 0; s < B; ++s) {
    const BuiltSample& x = *samples[s];
    const int n = static_cast<int>(x.tokens.size());
    for (int i = 0; i < n; ++i) {
      const size_t r = static_cast<size_t>(pad_left[s] + i) * B + s;
      b.tokens[r] = x.tokens[i];
      b.pos_ids[r] = i;
      b.key_mask[r] = 1;
      if (i + 1 < n && x.labels[i + 1] >= 0) b.targets[r] = x.labels[i + 1];
    }
  }

  if (!feed_back || n_max == 0) {
    b.passes = {model::Pass{0, T, {}}};
    return b;
  }
  // Latents of one sample are contiguous from f: pass p (p >= 1) computes column
  // f + p - 1, whose hidden state becomes the thought at column f + p.
  COCONUT_CHECK(f >= 1, "a sample starts with a <latent> token: there is no hidden state to feed into it");
  for (int s = 0; s < B; ++s) {
    const auto& t = samples[s]->tokens;
    const int n = static_cast<int>(std::count(t.begin(), t.end(), latent));
    for (int i = 0; i < n; ++i)
      COCONUT_CHECK(first(s) + pad_left[s] == f && first(s) + i < static_cast<int>(t.size()) &&
                        t[first(s) + i] == latent,
                    "the <latent> tokens of sample {} are not contiguous", s);
  }
  int begin = 0;
  for (int p = 0; p < n_max; ++p) {
    const int end = f + p;  // pass p ends where the p-th latent column begins
    model::Pass pass{begin, end, {}};
    for (int s = 0; s < B; ++s) {
      const auto& t = samples[s]->tokens;
      if (static_cast<int>(std::count(t.begin(), t.end(), latent)) > p) pass.feedback.push_back({s, end - 1});
    }
    b.passes.push_back(std::move(pass));
    begin = end;
  }
  b.passes.push_back(model::Pass{begin, T, {}});
  return b;
}

}  // namespace coconut::curriculum
