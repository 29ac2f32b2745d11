// Activation recomputation (model/gpt2.h ActivationPolicy): the recompute policy must
// give the keep policy's losses and gradients bit for bit, through several latent
// passes, with and without dropout; and the activation bytes it allocates, counted by
// runtime/memory_meter.h where the buffers are allocated, must grow more slowly with
// the number of latent passes.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "bench/synthetic_batch.h"
#include "model/batch.h"
#include "model/gpt2.h"
#include "model/multipass.h"
#include "runtime/check.h"
#include "runtime/memory_meter.h"

namespace coconut::model {
namespace {

GPT2Config small_config(float dropout) {
  GPT2Config c;
  c.vocab_size = 37;
  c.max_positions = 64;
  c.n_layer = 3;
  c.n_head = 2;
  c.d_model = 16;
  c.dropout = dropout;
  return c;
}

// A Coconut batch of B sequences (bench/synthetic_batch.h): question, <bot>, n thoughts
// (sample s has max(0, n - s) of them, so the passes feed back fewer and fewer samples),
// <eot>, answer; latent-aligned, with the pass plan of DESIGN.md 2.2.
SequenceBatch coconut_batch(int B, int n, uint64_t seed) {
  std::vector<bench::SyntheticSample> samples(B);
  for (int s = 0; s < B; ++s) samples[s] = {6 - s % 2, std::max(0, n - s), 3};  // unequal questions: left padding
  return bench::make_synthetic_batch(samples, small_config(0).vocab_size, seed);
}

struct Result {
  std::vector<double> losses;
  std::vector<float> grads;  // summed over the steps' micro-batches
  std::vector<float> hidden;  // the last forward's final-norm states
};

// Two "steps" of two micro-batches each through one runner (so buffers and the
// workspace are reused across batches of different shapes), gradients accumulated.
Result run(ActivationPolicy policy, float dropout, int n) {
  const GPT2Config cfg = small_config(dropout);
  GPT2 model(cfg);
  model.init_weights(5);
  MultipassRunner runner;
  runner.set_activation_policy(policy);
  Result r;
  model.zero_grads();
  for (int step = 0; step < 2; ++step)
    for (int m = 0; m < 2; ++m) {
      const SequenceBatch b = coconut_batch(3 + m, n + m, 100 * step + m);
      if (dropout > 0) runner.set_dropout(7, step, {});
      r.losses.push_back(runner.forward_backward(model, b, 1.f / b.num_targets()));
    }
  r.grads.assign(model.grads(), model.grads() + model.num_params());
  const Activations& acts = runner.activations();
  r.hidden.assign(acts.lnf, acts.lnf + static_cast<size_t>(acts.B) * acts.T * acts.C);
  return r;
}

class RecomputeBitwise : public ::testing::TestWithParam<float> {};

TEST_P(RecomputeBitwise, LossesAndEveryGradientEqualKeep) {
  const float dropout = GetParam();
  for (int n : {0, 1, 3, 6}) {
    const Result keep = run(ActivationPolicy::Keep, dropout, n);
    const Result again = run(ActivationPolicy::Recompute, dropout, n);
    const std::string what = "dropout " + std::to_string(dropout) + ", " + std::to_string(n) + " thoughts";
    EXPECT_EQ(keep.losses, again.losses) << what;
    ASSERT_EQ(keep.grads.size(), again.grads.size());
    size_t differ = 0;
    for (size_t i = 0; i < keep.grads.size(); ++i) differ += std::memcmp(&keep.grads[i], &again.grads[i], 4) != 0;
    EXPECT_EQ(differ, 0u) << what << ": gradient elements that differ";
    EXPECT_EQ(std::memcmp(keep.hidden.data(), again.hidden.data(), keep.hidden.size() * sizeof(float)), 0) << what;
    // The comparison means something: the gradients are not all zero.
    EXPECT_GT(*std::max_element(keep.grads.begin(), keep.grads.end()), 0.f) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Dropout, RecomputeBitwise, ::testing::Values(0.f, 0.1f));

TEST(Recompute, DropoutMasksDifferBetweenSteps) {
  // With dropout the two policies agree although the masks are live: the same batch at
  // another step gives another loss (so the equality above is not dropout switched off).
  const GPT2Config cfg = small_config(0.1f);
  GPT2 model(cfg);
  model.init_weights(5);
  MultipassRunner runner;
  runner.set_activation_policy(ActivationPolicy::Recompute);
  const SequenceBatch b = coconut_batch(3, 3, 1);
  runner.set_dropout(7, 0, {});
  const double l0 = runner.forward_backward(model, b, 1.f);
  runner.set_dropout(7, 1, {});
  const double l1 = runner.forward_backward(model, b, 1.f);
  EXPECT_NE(l0, l1);
}

TEST(Recompute, ForwardWithoutAWorkspaceIsAnError) {
  const GPT2Config cfg = small_config(0);
  GPT2 model(cfg);
  Activations acts;
  acts.resize(cfg, 2, 8, true, 0, -1, ActivationPolicy::Recompute);
  std::vector<float> in(static_cast<size_t>(2) * 4 * cfg.d_model, 0.f);
  try {
    model.forward_range(acts, 0, 4, in.data());
    ADD_FAILURE() << "a recompute forward ran without a workspace";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("need a workspace"), std::string::npos) << e.what();
  }
  ActivationWorkspace ws;
  acts.workspace = &ws;
  EXPECT_NO_THROW(model.forward_range(acts, 0, 4, in.data()));
  // One layer of the 8 rows of the pass, not one per layer.
  EXPECT_EQ(ws.bytes(), static_cast<size_t>(8 * Activations::workspace_floats_per_row(cfg, 8)) * sizeof(float));
  EXPECT_THROW(acts.bind_pass(cfg, 6, 9), Error);  // beyond T
}

TEST(Recompute, AllocatedBytesMatchTheMemoryModel) {
  // Activations::floats is what resize allocates, under both policies, for a stage and
  // the whole model, and the meter sees exactly those bytes.
  const GPT2Config cfg = small_config(0);
  for (ActivationPolicy policy : {ActivationPolicy::Keep, ActivationPolicy::Recompute})
    for (auto [l0, l1] : {std::pair{0, 3}, std::pair{1, 2}}) {
      const int64_t before = ActivationMeter::current();
      {
        Activations acts;
        acts.resize(cfg, 3, 10, true, l0, l1, policy);
        EXPECT_EQ(static_cast<int64_t>(acts.bytes()),
                  Activations::floats(cfg, 3, 10, true, l0, l1, policy) * static_cast<int64_t>(sizeof(float)));
        EXPECT_EQ(ActivationMeter::current() - before, static_cast<int64_t>(acts.bytes()));
        EXPECT_EQ(acts.lnf != nullptr, l1 == cfg.n_layer);
      }
      EXPECT_EQ(ActivationMeter::current(), before);  // released
    }
}

// Peak activation bytes of one forward_backward of a batch with n thoughts, measured
// by the meter over a fresh runner (its buffers, workspace and scratch included).
int64_t peak_bytes(ActivationPolicy policy, int n) {
  const GPT2Config cfg = small_config(0);
  GPT2 model(cfg);
  model.init_weights(5);
  const SequenceBatch b = coconut_batch(4, n, 3);
  const int64_t base = ActivationMeter::current();
  ActivationMeter::reset_peak();
  {
    MultipassRunner runner;
    runner.set_activation_policy(policy);
    runner.forward_backward(model, b, 1.f / b.num_targets());
  }
  return ActivationMeter::peak() - base;
}

TEST(Recompute, ActivationBytesGrowMoreSlowlyWithThePasses) {
  std::vector<int64_t> keep, recompute;
  for (int n = 1; n <= 8; ++n) {
    keep.push_back(peak_bytes(ActivationPolicy::Keep, n));
    recompute.push_back(peak_bytes(ActivationPolicy::Recompute, n));
    EXPECT_LT(recompute.back(), keep.back()) << n << " thoughts";
  }
  // Each thought adds a column: Keep stores all of its per-layer activations
  // (19 C + 4 + H T floats per layer and row), Recompute its cache and output (7 C).
  const double keep_growth = static_cast<double>(keep.back() - keep.front());
  const double recompute_growth = static_cast<double>(recompute.back() - recompute.front());
  EXPECT_GT(recompute_growth, 0);
  EXPECT_LT(recompute_growth, 0.5 * keep_growth) << "keep grew by " << keep_growth << " bytes, recompute by "
                                                 << recompute_growth;
}

}  // namespace
}  // namespace coconut::model
