// The whole decoder: gradients of every parameter against finite differences when the
// batch is run as several passes over a KV cache, and cache equivalence: running
// [0, T) at once or as [0, a) then [a, T) gives the same outputs and gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "model/gpt2.h"
#include "model/multipass.h"
#include "runtime/check.h"
#include "tests/model/range_harness.h"

namespace coconut::model {
namespace {

using test::Batch;
using test::randomize;
using test::run;
using test::tiny_config;

// The batch (or some of its sequences) as a SequenceBatch for MultipassRunner.
SequenceBatch to_sequence_batch(const Batch& b, const std::vector<int>& samples, std::vector<Pass> passes) {
  SequenceBatch out;
  out.B = static_cast<int>(samples.size());
  out.T = b.T;
  for (int t = 0; t < b.T; ++t)
    for (int s : samples) {
      out.tokens.push_back(b.tokens[t * b.B + s]);
      out.targets.push_back(b.targets[t * b.B + s]);
      out.pos_ids.push_back(b.pos[t * b.B + s]);
      out.key_mask.push_back(b.mask[t * b.B + s]);
    }
  out.passes = std::move(passes);
  return out;
}

TEST(GPT2Model, EveryParameterGradientMatchesFiniteDifferences) {
  GPT2 model(tiny_config());
  randomize(model, 1, 0.4f);
  Batch batch;
  const std::vector<int> cuts = {0, 2, 3, 4, 6};  // a prompt pass, two 1-column passes, a tail
  model.zero_grads();
  run(model, batch, cuts, true);
  const std::vector<float> analytic(model.grads(), model.grads() + model.num_params());

  double max_abs = 0;
  for (float g : analytic) max_abs = std::max(max_abs, std::abs(static_cast<double>(g)));
  for (const TensorSpec& t : model.layout().tensors()) {
    int checked = 0;
    for (size_t k = 0; k < t.numel; k += 1 + t.numel / 24) {  // about 24 elements per tensor
      float& p = model.params()[t.offset + k];
      const float saved = p, h = 1e-2f;
      p = saved + h;
      const double up = run(model, batch, cuts, false);
      p = saved - h;
      const double down = run(model, batch, cuts, false);
      p = saved;
      const double numeric = (up - down) / (2.0 * h);
      EXPECT_NEAR(analytic[t.offset + k], numeric, 2e-2 * std::max(std::abs(numeric), 2e-2 * max_abs))
          << t.name << "[" << k << "]";
      ++checked;
    }
    EXPECT_GT(checked, 0) << t.name;
  }
}

TEST(GPT2Model, CacheEquivalenceForOutputsAndGradients) {
  GPT2 model(tiny_config());
  randomize(model, 2, 0.3f);
  Batch batch;
  std::vector<float> h_full, h_split;
  model.zero_grads();
  const double loss_full = run(model, batch, {0, 6}, true, &h_full);
  const std::vector<float> g_full(model.grads(), model.grads() + model.num_params());
  model.zero_grads();
  const double loss_split = run(model, batch, {0, 4, 6}, true, &h_split);
  const std::vector<float> g_split(model.grads(), model.grads() + model.num_params());

  EXPECT_NEAR(loss_full, loss_split, 1e-6);
  ASSERT_EQ(h_full.size(), h_split.size());
  for (size_t i = 0; i < h_full.size(); ++i) EXPECT_NEAR(h_full[i], h_split[i], 1e-5) << "hidden " << i;
  for (size_t i = 0; i < g_full.size(); ++i)
    EXPECT_NEAR(g_full[i], g_split[i], 1e-5 * std::max(1.f, std::abs(g_full[i]))) << "grad " << i;
}

TEST(GPT2Model, InferenceActivationsGiveTheTrainingOutputs) {
  GPT2 model(tiny_config());
  randomize(model, 3, 0.3f);
  Batch batch;
  std::vector<float> h_train;
  run(model, batch, {0, 6}, false, &h_train);
  const GPT2Config& cfg = model.config();
  Activations acts;
  acts.resize(cfg, batch.B, batch.T, false);
  acts.pos_ids = batch.pos;
  acts.key_mask = batch.mask;
  std::vector<float> embeds(batch.B * batch.T * cfg.d_model);
  model.embed_tokens(batch.tokens.data(), batch.B * batch.T, embeds.data());
  for (int t = 0; t < batch.T; ++t)  // one column at a time, as greedy decoding does
    model.forward_range(acts, t, t + 1, embeds.data() + t * batch.B * cfg.d_model);
  for (size_t i = 0; i < h_train.size(); ++i) EXPECT_NEAR(acts.lnf[i], h_train[i], 1e-5);
}

TEST(GPT2Model, RejectsBadRanges) {
  GPT2 model(tiny_config());
  Activations acts;
  acts.resize(model.config(), 1, 4, false);
  std::vector<float> embeds(4 * 8);
  EXPECT_THROW(model.forward_range(acts, 2, 2, embeds.data()), coconut::Error);
  EXPECT_THROW(model.forward_range(acts, 0, 5, embeds.data()), coconut::Error);
  EXPECT_THROW(acts.resize(model.config(), 1, 17, false), coconut::Error);  // > max_positions
}


// Evaluating a loss between a backward and the optimizer step must not change gradients.
TEST(GPT2Model, ForwardLossLeavesGradientsAlone) {
  GPT2 model(tiny_config());
  randomize(model, 4, 0.3f);
  Batch b;
  const SequenceBatch batch = to_sequence_batch(b, {0, 1}, {Pass{0, b.T, {}}});
  MultipassRunner runner;
  model.zero_grads();
  const double loss = runner.forward_backward(model, batch, 1.f / batch.num_targets());
  const std::vector<float> grads(model.grads(), model.grads() + model.num_params());
  EXPECT_DOUBLE_EQ(runner.forward_loss(model, batch, 1.f / batch.num_targets()), loss);
  EXPECT_TRUE(std::equal(grads.begin(), grads.end(), model.grads()));
}


// Gradient accumulation: two micro-batches of one sequence each, with the loss scaled
// by the targets of the whole batch, give the gradients of the two-sequence batch.
TEST(GPT2Model, MicroBatchesAccumulateToTheWholeBatch) {
  GPT2 model(tiny_config());
  randomize(model, 5, 0.3f);
  Batch b;
  auto batch_of = [&](std::vector<int> samples) {
    return to_sequence_batch(b, samples, {Pass{0, 2, {}}, Pass{2, b.T, {}}});
  };
  const SequenceBatch whole = batch_of({0, 1}), first = batch_of({0}), second = batch_of({1});
  const float scale = 1.f / whole.num_targets();
  MultipassRunner runner;
  model.zero_grads();
  const double loss_whole = runner.forward_backward(model, whole, scale);
  const std::vector<float> g_whole(model.grads(), model.grads() + model.num_params());
  model.zero_grads();
  const double loss_parts = runner.forward_backward(model, first, scale) + runner.forward_backward(model, second, scale);
  EXPECT_NEAR(loss_parts, loss_whole, 1e-6);
  for (size_t i = 0; i < g_whole.size(); ++i)
    EXPECT_NEAR(model.grads()[i], g_whole[i], 1e-6 * std::max(1.f, std::abs(g_whole[i]))) << i;
}

}  // namespace
}  // namespace coconut::model
