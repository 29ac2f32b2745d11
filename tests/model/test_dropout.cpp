// Dropout of the CPU GPT-2 (HF GPT-2 training mode: embedding, attention probabilities,
// both residual branches). Checks that p = 0 and evaluation leave the model untouched,
// that the masked model's gradients match finite differences through several passes
// over a KV cache, that masks do not depend on how the batch is split (passes, padding,
// which sequences run together), and the drop rate and scaling of the masks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "model/gpt2.h"
#include "model/multipass.h"
#include "model/ops.h"
#include "runtime/check.h"
#include "runtime/rng.h"
#include "tests/model/range_harness.h"

namespace coconut::model {
namespace {

using test::Batch;
using test::Drop;
using test::randomize;
using test::run;
using test::tiny_config;

// Sequence s of the batch alone (B=1), without its left padding.
Batch single(const Batch& full, int s) {
  Batch one;
  one.B = 1;
  one.tokens.clear(), one.targets.clear(), one.mask.clear(), one.pos.clear();
  for (int t = 0; t < full.T; ++t) {
    const int r = t * full.B + s;
    if (!full.mask[r]) continue;
    one.tokens.push_back(full.tokens[r]);
    one.targets.push_back(full.targets[r]);
    one.mask.push_back(1);
    one.pos.push_back(full.pos[r]);
  }
  one.T = static_cast<int>(one.tokens.size());
  one.ids = {full.ids[s]};
  return one;
}

struct Result {
  double loss;
  std::vector<float> hidden, grads;
};
Result run_full(GPT2& model, const Batch& batch, const std::vector<int>& cuts, const Drop& drop,
                float loss_scale = 0) {
  Result res;
  model.zero_grads();
  res.loss = run(model, batch, cuts, true, &res.hidden, drop, loss_scale);
  res.grads.assign(model.grads(), model.grads() + model.num_params());
  return res;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

// ---------------------------------------------------------------- p = 0 and evaluation

TEST(Dropout, ZeroProbabilityIsBitwiseTheModelWithoutDropout) {
  GPT2 model(tiny_config(0.f));
  randomize(model, 1, 0.4f);
  Batch batch;
  const std::vector<int> cuts = {0, 2, 3, 4, 6};
  const Result on = run_full(model, batch, cuts, Drop{true});
  const Result off = run_full(model, batch, cuts, Drop{false});
  EXPECT_EQ(on.loss, off.loss);
  EXPECT_TRUE(bitwise_equal(on.hidden, off.hidden));
  EXPECT_TRUE(bitwise_equal(on.grads, off.grads));
}

TEST(Dropout, DisabledDropoutGivesTheNoDropoutModel) {
  GPT2 plain(tiny_config(0.f)), dropped(tiny_config(0.3f));
  randomize(plain, 2, 0.4f);
  std::copy(plain.params(), plain.params() + plain.num_params(), dropped.params());
  Batch batch;
  const std::vector<int> cuts = {0, 4, 6};
  const Result ref = run_full(plain, batch, cuts, Drop{false});
  const Result eval = run_full(dropped, batch, cuts, Drop{false});
  EXPECT_EQ(ref.loss, eval.loss);
  EXPECT_TRUE(bitwise_equal(ref.hidden, eval.hidden));
  EXPECT_TRUE(bitwise_equal(ref.grads, eval.grads));
  // Enabled, the same model does drop: the outputs move.
  const Result train = run_full(dropped, batch, cuts, Drop{true});
  EXPECT_GT(std::abs(train.loss - ref.loss), 1e-4);
}

// ---------------------------------------------------------------- gradients

TEST(Dropout, EveryParameterGradientMatchesFiniteDifferencesThroughTheCache) {
  GPT2 model(tiny_config(0.3f));
  randomize(model, 3, 0.4f);
  Batch batch;
  const Drop drop{true, 5, 11};
  const std::vector<int> cuts = {0, 2, 3, 4, 6};  // a prompt pass, two 1-column passes, a tail
  const Result res = run_full(model, batch, cuts, drop);
  const std::vector<float>& analytic = res.grads;

  double max_abs = 0;
  for (float g : analytic) max_abs = std::max(max_abs, std::abs(static_cast<double>(g)));
  ASSERT_GT(max_abs, 0.0);
  for (const TensorSpec& t : model.layout().tensors()) {
    for (size_t k = 0; k < t.numel; k += 1 + t.numel / 24) {  // about 24 elements per tensor
      float& p = model.params()[t.offset + k];
      const float saved = p, h = 1e-2f;
      p = saved + h;
      const double up = run(model, batch, cuts, false, nullptr, drop);
      p = saved - h;
      const double down = run(model, batch, cuts, false, nullptr, drop);
      p = saved;
      const double numeric = (up - down) / (2.0 * h);
      EXPECT_NEAR(analytic[t.offset + k], numeric, 2e-2 * std::max(std::abs(numeric), 2e-2 * max_abs))
          << t.name << "[" << k << "]";
    }
  }
}

// ---------------------------------------------------------------- independence of the split

void expect_close(const Result& a, const Result& b, const char* what) {
  EXPECT_NEAR(a.loss, b.loss, 1e-6) << what;
  ASSERT_EQ(a.hidden.size(), b.hidden.size()) << what;
  for (size_t i = 0; i < a.hidden.size(); ++i) EXPECT_NEAR(a.hidden[i], b.hidden[i], 1e-5) << what << " hidden " << i;
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_NEAR(a.grads[i], b.grads[i], 1e-5 * std::max(1.f, std::abs(a.grads[i]))) << what << " grad " << i;
}

TEST(Dropout, PassSplitGivesTheSameLossAndGradients) {
  GPT2 model(tiny_config(0.3f));
  randomize(model, 4, 0.3f);
  Batch batch;
  const Drop drop{true, 9, 3};
  const Result full = run_full(model, batch, {0, 6}, drop);
  expect_close(full, run_full(model, batch, {0, 4, 6}, drop), "[0,4),[4,6)");
  expect_close(full, run_full(model, batch, {0, 2, 3, 4, 5, 6}, drop), "five passes");
  // Same key, same masks; another step, other masks.
  const Result again = run_full(model, batch, {0, 6}, drop);
  EXPECT_EQ(full.loss, again.loss);
  EXPECT_TRUE(bitwise_equal(full.grads, again.grads));
  EXPECT_GT(std::abs(run_full(model, batch, {0, 6}, Drop{true, 9, 4}).loss - full.loss), 1e-4);
}

TEST(Dropout, EachSampleGetsTheSameMasksAloneOrInABatch) {
  // As on another data-parallel rank or in another micro-batch: each sequence alone,
  // without the padding the batch gave it. Masks are keyed by (sample id, position
  // id), so its hidden states and its share of the gradient are unchanged.
  GPT2 model(tiny_config(0.3f));
  randomize(model, 5, 0.3f);
  Batch batch;
  batch.ids = {1000, 17};
  const Drop drop{true, 9, 3};
  int targets = 0;
  for (int t : batch.targets) targets += t >= 0;
  const float scale = 1.f / targets;
  const Result both = run_full(model, batch, {0, 3, 6}, drop, scale);
  std::vector<float> grad_sum(model.num_params(), 0.f);
  double loss_sum = 0;
  const int C = model.config().d_model;
  for (int s = 0; s < batch.B; ++s) {
    const Batch one = single(batch, s);
    const Result alone = run_full(model, one, {0, one.T}, drop, scale);
    loss_sum += alone.loss;
    for (size_t i = 0; i < grad_sum.size(); ++i) grad_sum[i] += alone.grads[i];
    const int pad = batch.T - one.T;
    for (int t = 0; t < one.T; ++t)
      for (int c = 0; c < C; ++c)
        EXPECT_NEAR(alone.hidden[t * C + c], both.hidden[((t + pad) * batch.B + s) * C + c], 1e-5)
            << "sample " << s << " column " << t;
  }
  EXPECT_NEAR(loss_sum, both.loss, 1e-5);
  for (size_t i = 0; i < grad_sum.size(); ++i)
    EXPECT_NEAR(grad_sum[i], both.grads[i], 1e-5 * std::max(1.f, std::abs(both.grads[i]))) << "grad " << i;
  // Another sample id draws other masks.
  Batch renamed = batch;
  renamed.ids = {1000, 18};
  EXPECT_GT(std::abs(run_full(model, renamed, {0, 6}, drop, scale).loss - both.loss), 1e-5);
}

// ---------------------------------------------------------------- the masks

std::vector<CounterRng> row_streams(int rows, uint64_t seed) {
  std::vector<CounterRng> streams;
  for (int r = 0; r < rows; ++r) streams.emplace_back(seed, std::initializer_list<uint64_t>{0xABCu, uint64_t(r)});
  return streams;
}

TEST(Dropout, DrawsAreConsecutiveWordsOfTheStream) {
  // Element e of a site starting at `first` draws u32 number first + e of its stream.
  CounterRng stream(5, {1, 2, 3});
  for (uint64_t first : {0ull, 1ull, 2ull, 3ull, 4ull, 1ull << 40, (3ull << 40) + 1023}) {
    for (int n : {1, 3, 4, 5, 17}) {
      std::vector<uint32_t> words(n + 1, 0xDEADBEEFu);
      dropout_words(stream, first, n, words.data());
      EXPECT_EQ(words[n], 0xDEADBEEFu) << "wrote past the end";
      CounterRng reference(5, {1, 2, 3});
      reference.set_position(first);
      for (int e = 0; e < n; ++e) EXPECT_EQ(words[e], reference.next_u32()) << first << " + " << e;
    }
  }
}

TEST(Dropout, DropRateAndScaleOfTheMasks) {
  const int rows = 1024, width = 4096;
  const std::vector<CounterRng> streams = row_streams(rows, 3);
  std::vector<float> in(static_cast<size_t>(rows) * width), out(in.size()), again(in.size());
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> dist(0.5f, 2.f);  // never 0: a zero output means dropped
  for (float& x : in) x = dist(gen);
  for (float p : {0.1f, 0.3f}) {
    Dropout d;
    d.p = p;
    d.rows = streams.data();
    d.first = 12345;  // not a multiple of 4: elements straddle Philox blocks
    dropout_apply(out.data(), in.data(), rows, width, d);
    const float scale = 1.f / (1.f - p);
    size_t dropped = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      if (out[i] == 0.f) ++dropped;
      else ASSERT_EQ(out[i], in[i] * scale) << "element " << i;
    }
    const double rate = static_cast<double>(dropped) / in.size();
    EXPECT_NEAR(rate, p, 0.01 * p) << "p = " << p;
    // The same call on a gradient (the backward) uses the same mask.
    std::vector<float> ones(in.size(), 1.f);
    dropout_apply(again.data(), ones.data(), rows, width, d);
    for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(again[i] == 0.f, out[i] == 0.f) << "element " << i;
    // Another site of the same rows is an independent mask: both drop at rate p^2.
    Dropout other = d;
    other.first += 1ull << 40;
    dropout_apply(again.data(), ones.data(), rows, width, other);
    size_t both = 0;
    for (size_t i = 0; i < in.size(); ++i) both += again[i] == 0.f && out[i] == 0.f;
    EXPECT_NEAR(static_cast<double>(both) / in.size(), p * p, 0.03 * p * p) << "p = " << p;
  }
}

TEST(Dropout, AttentionDropsProbabilitiesAtRateP) {
  // q = k = 0 makes every visible key equally likely (1 / (t+1)); v = one-hot of its
  // column (head_dim = T) makes the output row the dropped probabilities themselves.
  // T spans several of the implementation's causal query blocks.
  const int B = 64, T = 150, C = 150, H = 1;
  const float p = 0.3f;
  std::vector<float> qkv(static_cast<size_t>(T) * B * 3 * C, 0.f), probs(static_cast<size_t>(T) * B * H * T);
  std::vector<float> out(static_cast<size_t>(T) * B * C);
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < B; ++s) qkv[(static_cast<size_t>(t) * B + s) * 3 * C + 2 * C + t] = 1.f;
  std::vector<uint8_t> key_mask(static_cast<size_t>(T) * B, 1);
  std::vector<int> pos(static_cast<size_t>(T) * B);
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < B; ++s) pos[t * B + s] = t;
  const std::vector<CounterRng> streams = row_streams(T * B, 8);
  Dropout d;
  d.p = p;
  d.rows = streams.data();
  d.key_pos = pos.data();
  d.head_stride = T;
  attention_forward(out.data(), probs.data(), qkv.data(), key_mask.data(), 0, T, B, T, C, H, &d);
  size_t dropped = 0, visible = 0;
  const float scale = 1.f / (1.f - p);
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < B; ++s)
      for (int j = 0; j < C; ++j) {
        const float y = out[(static_cast<size_t>(t) * B + s) * C + j];
        if (j > t) {
          ASSERT_EQ(y, 0.f) << "future key " << j << " of query " << t;
          continue;
        }
        ++visible;
        if (y == 0.f) ++dropped;
        else ASSERT_FLOAT_EQ(y, scale / (t + 1)) << "query " << t << " key " << j;
      }
  EXPECT_NEAR(static_cast<double>(dropped) / visible, p, 0.01 * p);
  // The saved probabilities are the undropped ones (the softmax backward needs them).
  for (int t = 0; t < T; ++t)
    for (int j = 0; j <= t; ++j) ASSERT_FLOAT_EQ(probs[static_cast<size_t>(t) * B * H * T + j], 1.f / (t + 1));
}

TEST(Dropout, EmbeddingOutputIsDroppedAtRateP) {
  GPT2Config cfg = tiny_config(0.25f);
  cfg.d_model = 64;
  cfg.max_positions = 64;
  GPT2 model(cfg);
  randomize(model, 6, 0.5f);
  const int B = 8, T = 64;
  Activations acts;
  acts.resize(cfg, B, T, true);
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < B; ++s) acts.pos_ids[t * B + s] = t;
  acts.dropout_enabled = true;
  std::vector<int> tokens(B * T);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>(i % cfg.vocab_size);
  std::vector<float> embeds(tokens.size() * cfg.d_model);
  model.embed_tokens(tokens.data(), B * T, embeds.data());
  model.forward_range(acts, 0, T, embeds.data());
  size_t dropped = 0;
  const size_t n = static_cast<size_t>(B) * T * cfg.d_model;
  for (size_t i = 0; i < n; ++i) dropped += acts.x0[i] == 0.f;
  EXPECT_NEAR(static_cast<double>(dropped) / n, 0.25, 0.02);  // 32768 elements: sd 0.0024
}

// ---------------------------------------------------------------- runner and errors

TEST(Dropout, RunnerDropsOnlyInTrainingAndNeedsAKeyEachStep) {
  GPT2 plain(tiny_config(0.f)), dropped(tiny_config(0.3f));
  randomize(plain, 7, 0.4f);
  std::copy(plain.params(), plain.params() + plain.num_params(), dropped.params());
  Batch b;
  SequenceBatch batch;
  batch.B = b.B;
  batch.T = b.T;
  batch.tokens = b.tokens;
  batch.targets = b.targets;
  batch.pos_ids = b.pos;
  batch.key_mask = b.mask;
  batch.passes = {Pass{0, 3, {}}, Pass{3, 6, {}}};
  MultipassRunner r_plain, r_drop;
  EXPECT_EQ(r_plain.forward_loss(plain, batch, 0.1f), r_drop.forward_loss(dropped, batch, 0.1f));  // eval
  EXPECT_THROW(r_drop.forward_backward(dropped, batch, 0.1f), coconut::Error);  // no key
  r_drop.set_dropout(1, 2, {5, 6});
  const double l1 = r_drop.forward_backward(dropped, batch, 0.1f);
  EXPECT_GT(std::abs(l1 - r_plain.forward_backward(plain, batch, 0.1f)), 1e-5);
  EXPECT_THROW(r_drop.forward_backward(dropped, batch, 0.1f), coconut::Error);  // the key was used
  r_drop.set_dropout(1, 2, {5, 6});
  EXPECT_EQ(r_drop.forward_backward(dropped, batch, 0.1f), l1);
  r_drop.set_dropout(1, 2, {5});
  EXPECT_THROW(r_drop.forward_backward(dropped, batch, 0.1f), coconut::Error);  // wrong count
}

TEST(Dropout, RejectsBadProbabilitiesAndInferenceActivations) {
  for (float p : {-0.1f, 1.f, 1.5f, std::numeric_limits<float>::quiet_NaN()})
    EXPECT_THROW(tiny_config(p).validate(), coconut::Error) << p;
  tiny_config(0.f).validate();
  tiny_config(0.99f).validate();
  GPT2 model(tiny_config(0.1f));
  Activations acts;
  acts.resize(model.config(), 1, 4, false);
  acts.dropout_enabled = true;
  std::vector<float> embeds(4 * 8, 0.f);
  EXPECT_THROW(model.forward_range(acts, 0, 4, embeds.data()), coconut::Error);
}

}  // namespace
}  // namespace coconut::model
