// The Coconut multi-pass forward/backward (DESIGN.md 2.2) against independent references:
//  - tests/fixtures/coconut_multipass/reference.safetensors, written by
//    tools/make_coconut_fixture.py with PyTorch + Hugging Face (a mirror of the official
//    Coconut forward): 3 samples with 3, 1 and 0 thoughts through the tiny GPT-2 of
//    tests/fixtures/gpt2_tiny; loss, final-norm hidden states, fed-back thoughts and every
//    parameter gradient;
//  - finite differences through three latent passes on a tiny random model.
// The batch arrives batch-major [B, L] as a Python collator produces it; the helper
// below turns it into our time-major SequenceBatch and derives the pass plan from the
// <latent> positions the way the reference forward does.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "model/batch.h"
#include "model/gpt2.h"
#include "model/hf_weights.h"
#include "model/multipass.h"
#include "runtime/check.h"
#include "runtime/safetensors.h"

namespace coconut::model {
namespace {

const std::string kModelDir = std::string(COCONUT_SOURCE_DIR) + "/tests/fixtures/gpt2_tiny";
const std::string kReference = std::string(COCONUT_SOURCE_DIR) + "/tests/fixtures/coconut_multipass/reference.safetensors";

// A collated batch in the reference's batch-major layout: element [s, t] at s * L + t.
struct BatchMajor {
  int B = 0, L = 0;
  std::vector<int64_t> ids, labels, mask, pos;
};

// Time-major SequenceBatch plus the pass plan. The plan follows the reference forward:
// with n = the largest latent count and f = the earliest latent column, pass 0 is
// [0, f), pass i (1 <= i < n) the column f+i-1, the last pass [f+n-1, L); after pass i
// the i-th latent of every sample that has more than i gets the hidden state of the
// column before it. HF's loss is shifted: the label at t+1 is the target of row t.
SequenceBatch to_sequence_batch(const BatchMajor& bm, int64_t latent_id) {
  const int B = bm.B, L = bm.L;
  SequenceBatch b;
  b.B = B;
  b.T = L;
  b.tokens.resize(static_cast<size_t>(B) * L);
  b.targets.resize(b.tokens.size());
  b.pos_ids.resize(b.tokens.size());
  b.key_mask.resize(b.tokens.size());
  std::vector<std::vector<int>> latents(B);
  for (int s = 0; s < B; ++s) {
    for (int t = 0; t < L; ++t) {
      const size_t src = static_cast<size_t>(s) * L + t, dst = static_cast<size_t>(t) * B + s;
      b.tokens[dst] = static_cast<int>(bm.ids[src]);
      b.targets[dst] = t + 1 < L ? static_cast<int>(bm.labels[src + 1]) : -100;
      b.pos_ids[dst] = static_cast<int>(bm.pos[src]);
      b.key_mask[dst] = bm.mask[src] != 0;
      if (bm.ids[src] == latent_id) latents[s].push_back(t);
    }
  }
  size_t n = 0;
  int f = L;
  for (const auto& l : latents) {
    n = std::max(n, l.size());
    if (!l.empty()) f = std::min(f, l.front());
  }
  if (n == 0) {
    b.passes.push_back({0, L, {}});
    return b;
  }
  b.passes.push_back({0, f, {}});
  for (int i = 1; i < static_cast<int>(n); ++i) b.passes.push_back({f + i - 1, f + i, {}});
  b.passes.push_back({f + static_cast<int>(n) - 1, L, {}});
  for (size_t p = 0; p < n; ++p)
    for (int s = 0; s < B; ++s)
      if (latents[s].size() > p) {
        // Left padding aligns each sample's latents to f, f+1, ...: the p-th one is the
        // column right after pass p.
        COCONUT_CHECK(latents[s][p] == b.passes[p].end, "sample {}: latent {} at column {}, expected column {}", s,
                      p, latents[s][p], b.passes[p].end);
        b.passes[p].feedback.push_back({s, latents[s][p] - 1});
      }
  return b;
}

struct Reference {
  BatchMajor bm;
  int64_t latent_id = 0;
  std::vector<int64_t> passes;  // [P, 2]
  float loss = 0, loss_without_feedback = 0;
  std::vector<float> hidden;    // [B, L, C]
  std::vector<float> thoughts;  // [num feedbacks, C]
};

Reference load_reference(const SafetensorsFile& f) {
  Reference r;
  const std::vector<int64_t>& shape = f.info("input_ids").shape;
  COCONUT_CHECK(shape.size() == 2, "{}: input_ids must be [B, L], got {}", f.path(), shape_str(shape));
  r.bm.B = static_cast<int>(shape[0]);
  r.bm.L = static_cast<int>(shape[1]);
  r.bm.ids = f.read_i64("input_ids");
  r.bm.labels = f.read_i64("labels");
  r.bm.mask = f.read_i64("attention_mask");
  r.bm.pos = f.read_i64("position_ids");
  for (const char* name : {"labels", "attention_mask", "position_ids"})
    COCONUT_CHECK(f.info(name).shape == shape, "{}: {} has shape {}, input_ids {}", f.path(), name,
                  shape_str(f.info(name).shape), shape_str(shape));
  r.latent_id = f.read_i64("latent_id").at(0);
  r.passes = f.read_i64("passes");
  r.loss = f.read_f32("loss").at(0);
  r.loss_without_feedback = f.read_f32("loss_without_feedback").at(0);
  r.hidden = f.read_f32("hidden");
  r.thoughts = f.read_f32("thoughts");
  return r;
}

// Tolerance: |a - b| <= kRel * max(|b|, kFloor * max|b| over the tensor). The golden
// values are float64 results, so this bounds our float32 error. With a floor of 1e-2,
// HF's own float32 run misses it by 3.5x (tiny gradient elements that are sums with
// cancellation); at 1e-1 it passes with 0.43, we with about 0.38 (the README of the
// fixture records HF's figure). A real error in the recurrence is far larger: detaching
// the thoughts moves every gradient tensor by at least 4% of its largest element.
constexpr double kRel = 1e-5, kFloor = 1e-1;

// The worst ratio |a - b| / bound (<= 1 passes) and where it happened.
struct Worst {
  double ratio = 0;
  size_t index = 0;
  float got = 0, want = 0;
};
Worst compare(const float* got, const std::vector<float>& want) {
  double max_abs = 0;
  for (float w : want) max_abs = std::max(max_abs, std::abs(static_cast<double>(w)));
  Worst worst;
  for (size_t i = 0; i < want.size(); ++i) {
    const double bound = kRel * std::max(std::abs(static_cast<double>(want[i])), kFloor * max_abs);
    const double ratio = std::abs(static_cast<double>(got[i]) - want[i]) / std::max(bound, 1e-30);
    if (ratio > worst.ratio) worst = {ratio, i, got[i], want[i]};
  }
  return worst;
}

class MultipassReference : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = read_hf_config(kModelDir + "/config.json");
    model_ = std::make_unique<GPT2>(config_);
    import_hf_gpt2(kModelDir + "/model.safetensors", config_, model_->params());
    file_ = std::make_unique<SafetensorsFile>(SafetensorsFile::open(kReference));
    ref_ = load_reference(*file_);
    batch_ = to_sequence_batch(ref_.bm, ref_.latent_id);
  }

  GPT2Config config_;
  std::unique_ptr<GPT2> model_;
  std::unique_ptr<SafetensorsFile> file_;
  Reference ref_;
  SequenceBatch batch_;
};

TEST_F(MultipassReference, PassPlanMatchesTheReference) {
  ASSERT_EQ(batch_.passes.size() * 2, ref_.passes.size());
  for (size_t p = 0; p < batch_.passes.size(); ++p) {
    EXPECT_EQ(batch_.passes[p].begin, ref_.passes[2 * p]) << "pass " << p;
    EXPECT_EQ(batch_.passes[p].end, ref_.passes[2 * p + 1]) << "pass " << p;
  }
  // 3, 1 and 0 latents: four passes, thoughts fed after the first three.
  ASSERT_EQ(batch_.passes.size(), 4u);
  EXPECT_EQ(batch_.passes[0].feedback.size(), 2u);
  EXPECT_EQ(batch_.passes[1].feedback.size(), 1u);
  EXPECT_EQ(batch_.passes[2].feedback.size(), 1u);
  EXPECT_TRUE(batch_.passes[3].feedback.empty());
  EXPECT_NO_THROW(validate_batch(batch_, config_));
  // A position outside the model's table is refused before any pass reads wpe (a GPU
  // pipeline stage would read past it).
  for (const int bad : {config_.max_positions, -1}) {
    SequenceBatch wrong = batch_;
    wrong.pos_ids[wrong.pos_ids.size() / 2] = bad;
    EXPECT_THROW(validate_batch(wrong, config_), Error) << "position " << bad;
  }
}

TEST_F(MultipassReference, LossHiddenStatesThoughtsAndEveryGradientMatch) {
  const int B = batch_.B, L = batch_.T, C = config_.d_model;
  model_->zero_grads();
  MultipassRunner runner;
  const double loss = runner.forward_backward(*model_, batch_, 1.f / static_cast<float>(batch_.num_targets()));
  EXPECT_NEAR(loss, ref_.loss, 1e-5 * std::abs(ref_.loss));
  std::printf("loss: ours %.7f, reference %.7f\n", loss, ref_.loss);

  // Hidden states of every column with a real token (a left pad attends to nothing,
  // where HF's eager attention averages uniformly: those rows carry no meaning).
  const float* lnf = runner.activations().lnf;
  std::vector<float> got, want;
  for (int s = 0; s < B; ++s)
    for (int t = 0; t < L; ++t)
      if (ref_.bm.mask[static_cast<size_t>(s) * L + t])
        for (int c = 0; c < C; ++c) {
          got.push_back(lnf[(static_cast<size_t>(t) * B + s) * C + c]);
          want.push_back(ref_.hidden[(static_cast<size_t>(s) * L + t) * C + c]);
        }
  const Worst wh = compare(got.data(), want);
  EXPECT_LE(wh.ratio, 1.0) << "hidden state element " << wh.index << ": " << wh.got << " vs " << wh.want;
  std::printf("hidden states: worst |a-b| / tolerance = %.3f\n", wh.ratio);

  // The fed-back thoughts, in feedback order (pass by pass, samples ascending).
  got.clear();
  for (const Pass& pass : batch_.passes)
    for (const Feedback& fb : pass.feedback) {
      const float* row = lnf + (static_cast<size_t>(fb.from) * B + fb.sample) * C;
      got.insert(got.end(), row, row + C);
    }
  ASSERT_EQ(got.size(), ref_.thoughts.size());
  const Worst wt = compare(got.data(), ref_.thoughts);
  EXPECT_LE(wt.ratio, 1.0) << "thought element " << wt.index << ": " << wt.got << " vs " << wt.want;

  // Every gradient element of every tensor.
  std::string worst_name;
  Worst worst;
  for (const TensorSpec& t : model_->layout().tensors()) {
    const std::string key = "grad." + t.name;
    ASSERT_TRUE(file_->contains(key)) << kReference << " lacks " << key;
    ASSERT_EQ(file_->info(key).shape, t.shape) << key;
    const std::vector<float> ref = file_->read_f32(key);
    const Worst w = compare(model_->grads() + t.offset, ref);
    EXPECT_LE(w.ratio, 1.0) << t.name << "[" << w.index << "]: ours " << w.got << ", reference " << w.want;
    if (w.ratio >= worst.ratio) worst = w, worst_name = t.name;
  }
  std::printf("gradients: worst |a-b| / tolerance = %.3f at %s[%zu] (ours %.8g, reference %.8g)\n", worst.ratio,
              worst_name.c_str(), worst.index, worst.got, worst.want);
}

// The same passes without feedback (latents stay token embeddings) give the reference's
// loss of one ordinary forward: so the thoughts are what changes the loss above.
TEST_F(MultipassReference, WithoutFeedbackTheLossIsThatOfAnOrdinaryForward) {
  for (Pass& p : batch_.passes) p.feedback.clear();
  MultipassRunner runner;
  const double loss = runner.forward_loss(*model_, batch_, 1.f / static_cast<float>(batch_.num_targets()));
  EXPECT_NEAR(loss, ref_.loss_without_feedback, 1e-5 * std::abs(ref_.loss_without_feedback));
  EXPECT_GT(std::abs(ref_.loss_without_feedback - ref_.loss), 1e-4f);
}

// --- Finite differences through three latent passes on a tiny random model. ---

constexpr int kEos = 10, kBot = 11, kEot = 12, kLatent = 13;

GPT2Config fd_config() {
  GPT2Config c;
  c.vocab_size = 14;
  c.max_positions = 16;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 8;
  return c;
}

// question <bot> <latent>*k <eot> rest <eos>, collated as the reference does.
BatchMajor collate(const std::vector<std::vector<int>>& questions, const std::vector<int>& latents,
                   const std::vector<std::vector<int>>& rests) {
  const int B = static_cast<int>(questions.size());
  std::vector<std::vector<int64_t>> ids(B), labels(B);
  int f = 0;
  for (int s = 0; s < B; ++s) {
    ids[s].assign(questions[s].begin(), questions[s].end());
    ids[s].push_back(kBot);
    ids[s].insert(ids[s].end(), latents[s], kLatent);
    ids[s].push_back(kEot);
    labels[s].assign(ids[s].size(), -100);
    for (int tok : rests[s]) ids[s].push_back(tok), labels[s].push_back(tok);
    ids[s].push_back(kEos), labels[s].push_back(kEos);
    if (latents[s] > 0) f = std::max(f, static_cast<int>(questions[s].size()) + 1);
  }
  BatchMajor bm;
  bm.B = B;
  std::vector<int> shift(B, 0);
  for (int s = 0; s < B; ++s) {
    if (latents[s] > 0) shift[s] = f - static_cast<int>(questions[s].size()) - 1;
    bm.L = std::max(bm.L, shift[s] + static_cast<int>(ids[s].size()));
  }
  for (int s = 0; s < B; ++s)
    for (int t = 0; t < bm.L; ++t) {
      const int i = t - shift[s];
      const bool real = i >= 0 && i < static_cast<int>(ids[s].size());
      bm.ids.push_back(real ? ids[s][i] : kEos);
      bm.labels.push_back(real ? labels[s][i] : -100);
      bm.mask.push_back(real);
      bm.pos.push_back(real ? i : 0);
    }
  return bm;
}

// The parameter: model.thought_scale (1: the paper's thoughts; 0.3: scaled down, which
// the backward must carry through each fed-back state's gradient).
class MultipassFiniteDifferences : public ::testing::TestWithParam<float> {};

TEST_P(MultipassFiniteDifferences, GradientsThroughThreeLatentPasses) {
  GPT2Config cfg = fd_config();
  cfg.thought_scale = GetParam();
  GPT2 model(cfg);
  std::mt19937 gen(7);
  std::normal_distribution<float> dist(0.f, 0.4f);
  for (size_t i = 0; i < model.num_params(); ++i) model.params()[i] = dist(gen);
  // Layer norm scales near 1 so the fed-back states are well conditioned.
  for (const TensorSpec& t : model.layout().tensors())
    if (t.name.find("ln_") != std::string::npos && t.name.find(".weight") != std::string::npos)
      for (size_t k = 0; k < t.numel; ++k) model.params()[t.offset + k] += 1.f;

  const BatchMajor bm = collate({{3, 1, 4}, {2, 7, 1, 8, 2}, {6, 6}}, {3, 1, 0}, {{5, 9, 2}, {8, 1}, {3, 5, 7, 9}});
  const SequenceBatch batch = to_sequence_batch(bm, kLatent);
  ASSERT_EQ(batch.passes.size(), 4u);  // [0, 6), [6, 7), [7, 8), [8, 14)
  SequenceBatch no_feedback = batch;
  for (Pass& p : no_feedback.passes) p.feedback.clear();
  const float scale = 1.f / static_cast<float>(batch.num_targets());

  // The forward feeds back thought_scale x the final-norm state of the column before.
  {
    Activations acts;
    acts.resize(cfg, batch.B, batch.T, false);
    acts.pos_ids = batch.pos_ids;
    acts.key_mask = batch.key_mask;
    std::vector<float> embeds(static_cast<size_t>(batch.B) * batch.T * cfg.d_model);
    model.embed_tokens(batch.tokens.data(), batch.B * batch.T, embeds.data());
    forward_passes(model, acts, batch, embeds.data(), nullptr);
    for (const Pass& p : batch.passes)
      for (const Feedback& f : p.feedback) {
        const size_t from = static_cast<size_t>(f.from) * batch.B + f.sample, to = from + batch.B;
        for (int c = 0; c < cfg.d_model; ++c)
          ASSERT_EQ(embeds[to * cfg.d_model + c], GetParam() * acts.lnf[from * cfg.d_model + c]) << "row " << to;
      }
  }
  MultipassRunner runner;
  model.zero_grads();
  runner.forward_backward(model, batch, scale);
  const std::vector<float> analytic(model.grads(), model.grads() + model.num_params());
  double max_abs = 0;
  for (float g : analytic) max_abs = std::max(max_abs, std::abs(static_cast<double>(g)));

  // Elements that reach the loss through the thoughts: the rows of <bot> (whose hidden
  // state becomes the first thought) and of a question token, the position embeddings of
  // the latent columns of sample 0 (positions 4, 5, 6), and the final norm (applied to
  // every fed-back state).
  const ParamLayout& layout = model.layout();
  const int C = fd_config().d_model;
  std::vector<std::pair<std::string, size_t>> elems;
  for (int c : {0, 3, 6}) elems.push_back({"wte.weight", static_cast<size_t>(kBot) * C + c});
  for (int c : {1, 5}) elems.push_back({"wte.weight", static_cast<size_t>(4) * C + c});
  for (int p : {4, 5, 6})
    for (int c : {2, 7}) elems.push_back({"wpe.weight", static_cast<size_t>(p) * C + c});
  for (int c : {0, 4}) elems.push_back({"ln_f.weight", static_cast<size_t>(c)});

  auto central = [&](float& p, const SequenceBatch& b) {
    const float saved = p, h = 1e-2f;
    p = saved + h;
    const double up = runner.forward_loss(model, b, scale);
    p = saved - h;
    const double down = runner.forward_loss(model, b, scale);
    p = saved;
    return (up - down) / (2.0 * h);
  };
  int feedback_matters = 0;
  for (const auto& [name, k] : elems) {
    const size_t idx = layout.find(name).offset + k;
    float& p = model.params()[idx];
    const double numeric = central(p, batch);
    EXPECT_NEAR(analytic[idx], numeric, 2e-2 * std::max(std::abs(numeric), 2e-2 * max_abs)) << name << "[" << k << "]";
    // The same derivative without the feedback: if it differs, the thoughts carry part
    // of this element's gradient, which the analytic backward had to reproduce.
    const double plain = central(p, no_feedback);
    if (std::abs(plain - numeric) > 0.1 * std::max(std::abs(numeric), 2e-2 * max_abs)) ++feedback_matters;
  }
  EXPECT_GE(feedback_matters, static_cast<int>(elems.size()) / 2)
      << "the chosen elements barely depend on the thoughts: the test would not see a wrong feedback gradient";
}

INSTANTIATE_TEST_SUITE_P(ThoughtScale, MultipassFiniteDifferences, ::testing::Values(1.f, 0.3f));

}  // namespace
}  // namespace coconut::model
