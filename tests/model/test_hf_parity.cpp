// Parity with an independent reference: Hugging Face transformers' GPT2LMHeadModel in
// PyTorch (tools/make_gpt2_fixture.py wrote tests/fixtures/gpt2_tiny/). The same
// weights and batch must give the same logits, loss, every parameter gradient, and the
// losses of 10 AdamW steps (with and without global-norm clipping).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "model/adamw.h"
#include "model/hf_weights.h"
#include "model/multipass.h"
#include "runtime/safetensors.h"

namespace coconut::model {
namespace {

const std::string kDir = std::string(COCONUT_SOURCE_DIR) + "/tests/fixtures/gpt2_tiny/";

struct Fixture {
  GPT2Config config = read_hf_config(kDir + "config.json");
  SafetensorsFile ref = SafetensorsFile::open(kDir + "reference.safetensors");
  SequenceBatch batch;

  Fixture() {
    // Batch-major [B, T] input ids and labels -> our time-major batch with shifted targets.
    const auto& info = ref.info("input_ids");
    const int B = static_cast<int>(info.shape[0]), T = static_cast<int>(info.shape[1]);
    const std::vector<int64_t> ids = ref.read_i64("input_ids"), labels = ref.read_i64("labels");
    batch.B = B;
    batch.T = T;
    batch.tokens.resize(B * T);
    batch.targets.assign(B * T, -100);
    batch.pos_ids.resize(B * T);
    batch.key_mask.assign(B * T, 1);
    for (int s = 0; s < B; ++s)
      for (int t = 0; t < T; ++t) {
        batch.tokens[t * B + s] = static_cast<int>(ids[s * T + t]);
        batch.pos_ids[t * B + s] = t;
        if (t + 1 < T) batch.targets[t * B + s] = static_cast<int>(labels[s * T + t + 1]);
      }
    batch.passes = {Pass{0, T, {}}};
  }

  void load(GPT2& model) { import_hf_gpt2(kDir + "model.safetensors", config, model.params()); }
};

// max |a - b| / max |b| over a tensor: 1e-5 means agreement to 1e-5 of the tensor's scale.
double scaled_error(const float* a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

TEST(HFParity, LogitsLossAndEveryGradient) {
  Fixture fx;
  GPT2 model(fx.config);
  fx.load(model);
  MultipassRunner runner;
  model.zero_grads();
  const double loss = runner.forward_backward(model, fx.batch, 1.f / fx.batch.num_targets());
  EXPECT_NEAR(loss, fx.ref.read_f32("loss")[0], 1e-5 * std::abs(fx.ref.read_f32("loss")[0]));

  // Logits of every column, compared batch-major.
  const int B = fx.batch.B, T = fx.batch.T, V = fx.config.vocab_size;
  std::vector<float> logits(static_cast<size_t>(B) * T * V), ours(logits.size());
  model.lm_head_logits(runner.activations().lnf, B * T, logits.data());
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < B; ++s)
      std::copy_n(logits.data() + (static_cast<size_t>(t) * B + s) * V, V,
                  ours.data() + (static_cast<size_t>(s) * T + t) * V);
  EXPECT_LT(scaled_error(ours.data(), fx.ref.read_f32("logits")), 1e-5);

  for (const TensorSpec& t : model.layout().tensors()) {
    const std::vector<float> ref = fx.ref.read_f32("grad." + t.name);
    ASSERT_EQ(ref.size(), t.numel) << t.name;
    EXPECT_LT(scaled_error(model.grads() + t.offset, ref), 1e-5) << "gradient of " << t.name;
  }
}

void expect_adamw_losses(bool clip) {
  Fixture fx;
  GPT2 model(fx.config);
  fx.load(model);
  AdamWConfig cfg;
  cfg.lr = 1e-3f;
  AdamW opt(cfg, model.layout(), 0, model.num_params());
  MultipassRunner runner;
  const std::vector<float> expected = fx.ref.read_f32(clip ? "adamw_clip_losses" : "adamw_losses");
  ASSERT_EQ(expected.size(), 10u);
  for (int step = 0; step < 10; ++step) {
    model.zero_grads();
    const double loss = runner.forward_backward(model, fx.batch, 1.f / fx.batch.num_targets());
    EXPECT_NEAR(loss, expected[step], 1e-5 * std::abs(expected[step])) << "step " << step;
    if (clip) {
      const double norm = std::sqrt(sum_of_squares(model.grads(), model.num_params()));
      EXPECT_NEAR(norm, fx.ref.read_f32("adamw_clip_grad_norms")[step], 1e-5 * norm) << "step " << step;
      clip_grads(model.grads(), model.num_params(), norm, 1.0f);
    }
    opt.step(model.params(), model.grads(), cfg.lr);
  }
}

TEST(HFParity, TenAdamWSteps) { expect_adamw_losses(false); }
TEST(HFParity, TenAdamWStepsWithGradientClipping) { expect_adamw_losses(true); }

TEST(AdamW, ResetZeroesMomentsAndStepButKeepsWeights) {
  Fixture fx;
  GPT2 model(fx.config);
  fx.load(model);
  AdamW opt(AdamWConfig{}, model.layout(), 0, model.num_params());
  MultipassRunner runner;
  model.zero_grads();
  runner.forward_backward(model, fx.batch, 1.f / fx.batch.num_targets());
  opt.step(model.params(), model.grads(), 1e-3f);
  const std::vector<float> weights(model.params(), model.params() + model.num_params());
  ASSERT_EQ(opt.step_count(), 1);
  ASSERT_GT(*std::max_element(opt.v().begin(), opt.v().end()), 0.f);
  opt.reset();
  EXPECT_EQ(opt.step_count(), 0);
  EXPECT_TRUE(std::all_of(opt.m().begin(), opt.m().end(), [](float x) { return x == 0.f; }));
  EXPECT_TRUE(std::all_of(opt.v().begin(), opt.v().end(), [](float x) { return x == 0.f; }));
  EXPECT_TRUE(std::equal(weights.begin(), weights.end(), model.params()));
}

TEST(AdamW, MatricesOnlyDecayLeavesBiasesAndNormsUndecayed) {
  Fixture fx;
  GPT2 model(fx.config);
  fx.load(model);
  AdamWConfig cfg;
  cfg.decay_matrices_only = true;
  cfg.weight_decay = 0.5f;
  AdamW opt(cfg, model.layout(), 0, model.num_params());
  model.zero_grads();  // zero gradients: only the decay moves weights
  const std::vector<float> before(model.params(), model.params() + model.num_params());
  opt.step(model.params(), model.grads(), 0.1f);
  for (const TensorSpec& t : model.layout().tensors()) {
    const float b = before[t.offset], a = model.params()[t.offset];
    if (t.is_matrix) EXPECT_FLOAT_EQ(a, b * (1.f - 0.1f * 0.5f)) << t.name;
    else EXPECT_EQ(a, b) << t.name;
  }
}

TEST(AdamW, AllFiniteFindsEveryNaNAndInfinity) {
  // Lengths around the vector width, the bad element at every position, and the
  // extreme finite values (whose x - x is still 0).
  for (size_t n : {1, 7, 8, 9, 33, 1000}) {
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i)
      x[i] = i % 2 ? std::numeric_limits<float>::max() : -std::numeric_limits<float>::denorm_min();
    EXPECT_TRUE(all_finite(x.data(), n)) << n;
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()})
      for (size_t at = 0; at < n; ++at) {
        const float keep = x[at];
        x[at] = bad;
        EXPECT_FALSE(all_finite(x.data(), n)) << "n " << n << " at " << at << " value " << bad;
        x[at] = keep;
      }
  }
  EXPECT_TRUE(all_finite(nullptr, 0));
}

}  // namespace
}  // namespace coconut::model
