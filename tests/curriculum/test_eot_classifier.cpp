// The learned <eot> classifier (curriculum/eot_classifier.h) and column-by-column
// generation (curriculum/generate.h): decision rows of a batch; gradients of w, b and
// of the model (through MultipassRunner's hidden-loss hook) against finite
// differences; weight 0 leaves training bitwise unchanged; a classifier trained on a
// model's hidden states stops each sample at its own count; the fixed-count decoder
// equals the previous implementation (the whole prompt through its pass plan, then
// greedy decoding), which is rebuilt here from model::forward_passes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "curriculum/batching.h"
#include "curriculum/eot_classifier.h"
#include "curriculum/generate.h"
#include "curriculum/word_tokenizer.h"
#include "model/adamw.h"
#include "model/gpt2.h"
#include "model/multipass.h"
#include "runtime/rng.h"

namespace coconut::curriculum {
namespace {

std::unique_ptr<model::GPT2> tiny_model(int vocab, float scale, uint64_t seed = 3, float thought_scale = 1.f) {
  model::GPT2Config c;
  c.thought_scale = thought_scale;
  c.vocab_size = vocab;
  c.max_positions = 64;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 16;
  auto m = std::make_unique<model::GPT2>(c);
  m->init_weights(seed);
  for (size_t i = 0; i < m->num_params(); ++i) m->params()[i] *= scale;
  return m;
}

Sample make_sample(const std::string& question, int steps) {
  Sample s;
  s.question = question;
  const std::vector<std::string> names = {"s1", "s2", "s3", "s4"};
  s.steps.assign(names.begin(), names.begin() + steps);
  s.answer = "ans";
  return s;
}

// The generation of the previous implementation: the whole prompt (with its latents
// and <eot>) through its pass plan, then greedy decoding column by column.
std::vector<std::vector<int>> prompt_pass_generate(const model::GPT2& m, const std::vector<const BuiltSample*>& prompts,
                                                   const Tokenizer& tok, bool feed_back, int max_new_tokens) {
  const model::GPT2Config& cfg = m.config();
  const model::SequenceBatch batch = make_batch(prompts, tok, feed_back, /*align_ends=*/true);
  const int B = batch.B, T0 = batch.T, C = cfg.d_model, V = cfg.vocab_size;
  const int T = std::min(T0 + max_new_tokens, cfg.max_positions);
  model::Activations acts;
  acts.resize(cfg, B, T, false);
  std::copy(batch.pos_ids.begin(), batch.pos_ids.end(), acts.pos_ids.begin());
  std::copy(batch.key_mask.begin(), batch.key_mask.end(), acts.key_mask.begin());
  std::vector<float> embeds(static_cast<size_t>(B) * T0 * C);
  m.embed_tokens(batch.tokens.data(), B * T0, embeds.data());
  model::forward_passes(m, acts, batch, embeds.data(), nullptr);
  std::vector<std::vector<int>> out(B);
  std::vector<uint8_t> done(B, 0);
  std::vector<float> logits(static_cast<size_t>(B) * V), step(static_cast<size_t>(B) * C);
  std::vector<int> next(B);
  for (int t = T0 - 1; t < T - 1; ++t) {
    m.lm_head_logits(acts.lnf + static_cast<size_t>(t) * B * C, B, logits.data());
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
    m.embed_tokens(next.data(), B, step.data());
    m.forward_range(acts, t + 1, t + 2, step.data());
  }
  return out;
}

// Mean BCE of the decision rows, computed here in double from the definition.
double reference_bce(const EotClassifier& clf, const float* hidden, const std::vector<EotTarget>& targets) {
  const int C = clf.d_model();
  double sum = 0;
  for (const EotTarget& t : targets) {
    double z = clf.params()[C];
    for (int c = 0; c < C; ++c) z += static_cast<double>(clf.params()[c]) * hidden[static_cast<size_t>(t.row) * C + c];
    const double p = 1.0 / (1.0 + std::exp(-z));
    sum += t.stop ? -std::log(p) : -std::log(1.0 - p);
  }
  return sum / static_cast<double>(targets.size());
}

class EotTest : public ::testing::Test {
 protected:
  EotTest() : tok(WordTokenizer::build({"q r s t u v w x y z a b c ans s1 s2 s3 s4 ###\n"})) {
    cc.c_thought = 1;
    cc.max_latent_stage = 4;
    // Every prompt of a stage has the stage's thoughts, whatever its number of steps (the
    // reference implementation below needs one count per batch).
    cc.pad_latent_to_max = true;
  }
  BuiltSample train(const Sample& s, int stage) { return build_training_sample(tokenize_sample(s, tok), cc, stage, 0, tok); }
  BuiltSample prompt(const Sample& s, int stage) { return build_eval_prompt(tokenize_sample(s, tok), cc, stage, tok); }
  // Generation with the fixed count of thoughts (no classifier).
  static std::vector<Generation> generate_fixed(const model::GPT2& m, const std::vector<BuiltSample>& prompts,
                                                const Tokenizer& tok, bool feed_back, int max_new_tokens) {
    GenerateOptions opt;
    opt.feed_back = feed_back;
    opt.max_new_tokens = max_new_tokens;
    return generate_greedy(m, ptrs(prompts), tok, opt);
  }
  static std::vector<const BuiltSample*> ptrs(const std::vector<BuiltSample>& v) {
    std::vector<const BuiltSample*> p;
    for (const BuiltSample& b : v) p.push_back(&b);
    return p;
  }
  WordTokenizer tok;
  CurriculumConfig cc;
};

TEST_F(EotTest, DecisionRowsAreBotAndEveryThoughtTheLastOneStopping) {
  // Stage 2 (two latents, aligned at f), stage 0 (no latents: not shifted), a longer
  // question at stage 1.
  std::vector<BuiltSample> b = {train(make_sample("q r", 3), 2), train(make_sample("q", 3), 0),
                                train(make_sample("q r s t", 3), 1)};
  const model::SequenceBatch batch = make_batch(ptrs(b), tok, true);
  const int B = 3;
  // Sample 2: "q r s t \n <bot>" puts <bot> at column 5 and its latent at 6 = f;
  // sample 0: "q r \n <bot>" is shifted by 2: <bot> at 5, latents at 6 and 7;
  // sample 1 is not shifted: "q \n <bot>" puts <bot> at column 2.
  const std::vector<EotTarget> t = eot_targets(batch, tok);
  std::vector<std::pair<int, int>> got;
  for (const EotTarget& e : t) got.push_back({e.row, e.stop});
  const std::vector<std::pair<int, int>> want = {
      {5 * B + 0, 0}, {6 * B + 0, 0}, {7 * B + 0, 1}, {2 * B + 1, 1}, {5 * B + 2, 0}, {6 * B + 2, 1}};
  EXPECT_EQ(got, want);
  for (const EotTarget& e : t) {
    const int col = e.row / B, s = e.row % B, next = batch.tokens[static_cast<size_t>(col + 1) * B + s];
    EXPECT_EQ(next, e.stop ? tok.end_latent_id() : tok.latent_id()) << "row " << e.row;
  }
  // No markers, no rows.
  CurriculumConfig cot = cc;
  cot.method = Method::cot;
  BuiltSample plain = build_training_sample(tokenize_sample(make_sample("q r", 3), tok), cot, 0, 0, tok);
  EXPECT_TRUE(eot_targets(make_batch({&plain}, tok, false), tok).empty());
}

// Gradients: w and b against central differences of the mean BCE; the model's gradient
// added by the hook (with hook minus without) against central differences of
// weight * mean BCE through the full multi-pass forward.
TEST_F(EotTest, GradientsOfClassifierAndModelMatchFiniteDifferences) {
  auto m = tiny_model(tok.vocab_size(), 2.f);
  std::vector<BuiltSample> b = {train(make_sample("q r", 3), 2), train(make_sample("q", 3), 0),
                                train(make_sample("q r s t", 3), 3)};
  const model::SequenceBatch batch = make_batch(ptrs(b), tok, true);
  ASSERT_EQ(batch.passes.size(), 4u);  // thoughts are fed back: the hook's gradient goes through them
  const std::vector<EotTarget> targets = eot_targets(batch, tok);
  const int count = static_cast<int>(targets.size()) + 2;  // as if another micro-batch had 2 more rows
  const float weight = 0.7f;
  model::AdamWConfig ac;
  EotClassifier clf(16, ac);
  CounterRng rng(11, {1});
  for (size_t i = 0; i < clf.num_params(); ++i) clf.params()[i] = static_cast<float>(rng.uniform() - 0.5);

  model::MultipassRunner runner;
  m->zero_grads();
  const double lm = runner.forward_backward(*m, batch, 0.1f);
  const std::vector<float> g_plain(m->grads(), m->grads() + m->num_params());
  m->zero_grads();
  clf.zero_grads();
  runner.set_hidden_loss(clf.hidden_loss(targets, count, weight));
  const double total = runner.forward_backward(*m, batch, 0.1f);
  // The gradient the hook added (forward_loss below accumulates the LM head's part of
  // wte's gradient, so the model's gradients are read now).
  std::vector<float> g_hook(m->num_params());
  for (size_t i = 0; i < g_hook.size(); ++i) g_hook[i] = m->grads()[i] - g_plain[i];
  const std::vector<float> lnf(runner.activations().lnf, runner.activations().lnf + batch.B * batch.T * 16);
  const double bce = reference_bce(clf, lnf.data(), targets) * targets.size() / count;
  EXPECT_NEAR(total - lm, weight * bce, 1e-6);
  runner.set_hidden_loss({});

  // w and b: the hidden states are fixed.
  for (size_t i = 0; i < clf.num_params(); ++i) {
    const float keep = clf.params()[i], eps = 1e-3f;
    clf.params()[i] = keep + eps;
    const double up = reference_bce(clf, lnf.data(), targets);
    clf.params()[i] = keep - eps;
    const double down = reference_bce(clf, lnf.data(), targets);
    clf.params()[i] = keep;
    const double fd = (up - down) / (2 * eps) * targets.size() / count;
    EXPECT_NEAR(clf.grads()[i], fd, 1e-4 + 1e-3 * std::abs(fd)) << "classifier parameter " << i;
  }

  // The model: the largest hook gradients of several tensors.
  auto eot_loss = [&]() {
    runner.forward_loss(*m, batch, 1.f);
    return weight * reference_bce(clf, runner.activations().lnf, targets) * targets.size() / count;
  };
  int checked = 0;
  for (const char* name : {"wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.0.mlp.c_fc.weight",
                           "h.1.attn.c_proj.weight", "ln_f.weight"}) {
    const model::TensorSpec& spec = m->layout().find(name);
    std::vector<size_t> idx(spec.numel);
    for (size_t i = 0; i < spec.numel; ++i) idx[i] = spec.offset + i;
    std::partial_sort(idx.begin(), idx.begin() + 3, idx.end(), [&](size_t a, size_t b) {
      return std::abs(g_hook[a]) > std::abs(g_hook[b]);
    });
    for (int k = 0; k < 3; ++k) {
      const size_t i = idx[k];
      const float keep = m->params()[i], eps = 2e-3f;
      m->params()[i] = keep + eps;
      const double up = eot_loss();
      m->params()[i] = keep - eps;
      const double down = eot_loss();
      m->params()[i] = keep;
      const double fd = (up - down) / (2 * eps), an = g_hook[i];
      EXPECT_GT(std::abs(an), 1e-4) << name << ": the hook adds no gradient";
      EXPECT_NEAR(an, fd, 2e-4 + 2e-2 * std::abs(fd)) << name << " element " << i - spec.offset;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 18);
}

// Weight 0: the classifier still learns (a probe) but the model's training is bitwise
// what it is without the classifier.
TEST_F(EotTest, WeightZeroLeavesModelTrainingBitwiseUnchanged) {
  auto a = tiny_model(tok.vocab_size(), 1.f), b = tiny_model(tok.vocab_size(), 1.f);
  std::vector<BuiltSample> s = {train(make_sample("q r", 3), 2), train(make_sample("q", 3), 0),
                                train(make_sample("q r s t", 3), 1)};
  const model::SequenceBatch batch = make_batch(ptrs(s), tok, true);
  const std::vector<EotTarget> targets = eot_targets(batch, tok);
  model::AdamWConfig ac;
  ac.lr = 1e-2f;
  model::AdamW opt_a(ac, a->layout(), 0, a->num_params()), opt_b(ac, b->layout(), 0, b->num_params());
  EotClassifier clf(16, ac);
  clf.params()[3] = 0.5f;  // a classifier whose gradient w.r.t. h is not zero
  model::MultipassRunner ra, rb;
  for (int step = 0; step < 3; ++step) {
    a->zero_grads();
    b->zero_grads();
    clf.zero_grads();
    rb.set_hidden_loss(clf.hidden_loss(targets, static_cast<int>(targets.size()), 0.f));
    const double la = ra.forward_backward(*a, batch, 0.05f), lb = rb.forward_backward(*b, batch, 0.05f);
    EXPECT_EQ(std::memcmp(&la, &lb, sizeof la), 0) << "step " << step;
    opt_a.step(a->params(), a->grads(), ac.lr);
    opt_b.step(b->params(), b->grads(), ac.lr);
    const float before = clf.params()[0];
    clf.step(ac.lr);
    EXPECT_NE(clf.params()[0], before) << "the classifier does not learn at weight 0";
  }
  EXPECT_EQ(std::memcmp(a->params(), b->params(), sizeof(float) * a->num_params()), 0);
}

// Fixed count, column by column, equals the previous implementation: questions of
// different lengths in one batch, 0..3 thoughts, and a method without feedback.
TEST_F(EotTest, FixedCountColumnByColumnEqualsThePromptPassImplementation) {
  auto m = tiny_model(tok.vocab_size(), 6.f);
  const std::vector<Sample> items = {make_sample("q r s", 3), make_sample("t", 2), make_sample("u v w x y z a", 1),
                                     make_sample("b c", 4)};
  int differing = 0;
  for (const bool feed_back : {true, false}) {
    cc.method = feed_back ? Method::coconut : Method::pause_as_thought;
    for (int stage = 0; stage <= 3; ++stage) {
      std::vector<BuiltSample> prompts;
      for (const Sample& s : items) prompts.push_back(prompt(s, stage));
      const auto want = prompt_pass_generate(*m, ptrs(prompts), tok, feed_back, 10);
      const std::vector<Generation> got = generate_fixed(*m, prompts, tok, feed_back, 10);
      ASSERT_EQ(got.size(), want.size());
      for (size_t s = 0; s < got.size(); ++s) {
        EXPECT_EQ(got[s].ids, want[s]) << "feed_back " << feed_back << " stage " << stage << " sample " << s;
        EXPECT_EQ(got[s].thoughts, feed_back ? stage : 0);
      }
      if (stage > 0) differing += want[0] != prompt_pass_generate(*m, {&prompts[0]}, tok, false, 10)[0];
    }
  }
  // Feeding thoughts back changes what the model says (the test can tell them apart).
  EXPECT_GT(differing, 0);
}

// model.thought_scale: decoding feeds back the scaled state, as the prompt passes do.
TEST_F(EotTest, ScaledThoughtsColumnByColumnEqualThePromptPassImplementation) {
  auto plain = tiny_model(tok.vocab_size(), 6.f);
  auto scaled = tiny_model(tok.vocab_size(), 6.f, 3, 0.3f);  // the same weights
  cc.method = Method::coconut;
  const std::vector<Sample> items = {make_sample("q r s", 3), make_sample("t", 2), make_sample("b c", 4)};
  int differing = 0;
  for (int stage = 1; stage <= 3; ++stage) {
    std::vector<BuiltSample> prompts;
    for (const Sample& s : items) prompts.push_back(prompt(s, stage));
    const auto want = prompt_pass_generate(*scaled, ptrs(prompts), tok, true, 10);
    const std::vector<Generation> got = generate_fixed(*scaled, prompts, tok, true, 10);
    ASSERT_EQ(got.size(), want.size());
    for (size_t s = 0; s < got.size(); ++s) {
      EXPECT_EQ(got[s].ids, want[s]) << "stage " << stage << " sample " << s;
      differing += got[s].ids != generate_fixed(*plain, prompts, tok, true, 10)[s].ids;
    }
  }
  EXPECT_GT(differing, 0) << "the scale never changed what the model says: the test cannot see it";
}

// Without padding a prompt's thoughts are capped at its own number of steps, so one
// batch mixes counts: each sample must say what it says alone, with and without feedback.
TEST_F(EotTest, UnpaddedPromptsOfOneBatchKeepTheirOwnCounts) {
  auto m = tiny_model(tok.vocab_size(), 6.f);
  cc.pad_latent_to_max = false;
  const std::vector<Sample> items = {make_sample("q r s", 3), make_sample("t", 2), make_sample("u v w x y z a", 1),
                                     make_sample("b c", 4)};
  const std::vector<int> counts = {3, 2, 1, 3};  // min(stage 3, steps, max 4)
  for (const bool feed_back : {true, false}) {
    cc.method = feed_back ? Method::coconut : Method::pause_as_thought;
    std::vector<BuiltSample> prompts;
    for (const Sample& s : items) prompts.push_back(prompt(s, 3));
    const std::vector<Generation> got = generate_fixed(*m, prompts, tok, feed_back, 10);
    ASSERT_EQ(got.size(), items.size());
    for (size_t s = 0; s < items.size(); ++s) {
      EXPECT_EQ(prompts[s].n_latents, counts[s]) << "sample " << s;
      EXPECT_EQ(got[s].thoughts, feed_back ? counts[s] : 0) << "sample " << s;
      EXPECT_EQ(got[s].ids, prompt_pass_generate(*m, {&prompts[s]}, tok, feed_back, 10)[0])
          << "feed_back " << feed_back << " sample " << s;
    }
  }
}

// A classifier trained on the model's own hidden states (separable: a few points in 16
// dimensions) stops each sample after its own count, in one batch; each sample then
// says what the fixed count with that K says.
TEST_F(EotTest, TrainedClassifierStopsEachSampleAtItsCount) {
  auto m = tiny_model(tok.vocab_size(), 6.f);
  cc.max_latent_stage = 4;
  const std::vector<Sample> items = {make_sample("q r s", 3), make_sample("t", 2), make_sample("u v w x", 1)};
  const std::vector<int> counts = {0, 2, 3};
  const int cap = 4;
  std::vector<BuiltSample> prompts;
  for (const Sample& s : items) prompts.push_back(prompt(s, cap));
  // Hidden states of the capped prompts (thoughts fed back), and the rows to learn.
  const model::SequenceBatch batch = make_batch(ptrs(prompts), tok, true, /*align_ends=*/true);
  model::Activations acts;
  acts.resize(m->config(), batch.B, batch.T, false);
  acts.pos_ids = batch.pos_ids;
  acts.key_mask = batch.key_mask;
  std::vector<float> embeds(static_cast<size_t>(batch.B) * batch.T * 16);
  m->embed_tokens(batch.tokens.data(), batch.B * batch.T, embeds.data());
  model::forward_passes(*m, acts, batch, embeds.data(), nullptr);
  std::vector<EotTarget> targets;
  const int bot = batch.passes[0].end - 1;
  for (int s = 0; s < batch.B; ++s)
    for (int i = 0; i <= counts[s]; ++i)
      targets.push_back({(bot + i) * batch.B + s, static_cast<uint8_t>(i == counts[s])});

  model::AdamWConfig ac;
  ac.lr = 0.05f;
  ac.weight_decay = 0.f;
  EotClassifier clf(16, ac);
  double loss = 0;
  for (int it = 0; it < 400; ++it) {
    clf.zero_grads();
    loss = clf.loss_and_grad(acts.lnf, targets, static_cast<int>(targets.size()), 0.f, nullptr);
    clf.step(ac.lr);
  }
  EXPECT_LT(loss, 0.05);
  for (const EotTarget& t : targets) EXPECT_EQ(clf.stops(acts.lnf + static_cast<size_t>(t.row) * 16), t.stop != 0);

  GenerateOptions opt;
  opt.feed_back = true;
  opt.max_new_tokens = 8;
  opt.eot_classifier = &clf;
  const std::vector<Generation> got = generate_greedy(*m, ptrs(prompts), tok, opt);
  for (int s = 0; s < batch.B; ++s) {
    EXPECT_EQ(got[s].thoughts, counts[s]) << "sample " << s;
    const BuiltSample fixed = prompt(items[s], counts[s]);
    EXPECT_EQ(got[s].ids, prompt_pass_generate(*m, {&fixed}, tok, true, 8)[0]) << "sample " << s;
    EXPECT_LE(static_cast<int>(got[s].ids.size()), 8);
  }
}

// The two extremes of a classifier: always stop (0 thoughts) and never stop (the cap)
// equal the fixed counts 0 and K.
TEST_F(EotTest, AlwaysAndNeverStoppingClassifiersEqualFixedCounts) {
  auto m = tiny_model(tok.vocab_size(), 6.f);
  const std::vector<Sample> items = {make_sample("q r s", 3), make_sample("t", 2), make_sample("u v w x y", 1)};
  std::vector<BuiltSample> p0, p3;
  for (const Sample& s : items) p0.push_back(prompt(s, 0)), p3.push_back(prompt(s, 3));
  EotClassifier clf(16, model::AdamWConfig{});
  GenerateOptions opt;
  opt.feed_back = true;
  opt.max_new_tokens = 10;
  opt.eot_classifier = &clf;
  for (const float b : {+50.f, -50.f}) {
    clf.params()[16] = b;
    const auto got = generate_greedy(*m, ptrs(p3), tok, opt);
    const auto want = prompt_pass_generate(*m, ptrs(b > 0 ? p0 : p3), tok, true, 10);
    for (size_t s = 0; s < items.size(); ++s) {
      EXPECT_EQ(got[s].thoughts, b > 0 ? 0 : 3);
      EXPECT_EQ(got[s].ids, want[s]) << "bias " << b << " sample " << s;
    }
  }
}

TEST_F(EotTest, SaveLoadRoundTripsExactlyAndRejectsBadFiles) {
  EotClassifier clf(5, model::AdamWConfig{});
  for (size_t i = 0; i < clf.num_params(); ++i) clf.params()[i] = std::nextafter(0.1f * i - 0.3f, 1.f);
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "coconut_eot_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "eot.txt").string();
  clf.save(path);
  const EotClassifier back = EotClassifier::load(path, model::AdamWConfig{});
  ASSERT_EQ(back.d_model(), 5);
  EXPECT_EQ(std::memcmp(back.params(), clf.params(), sizeof(float) * 6), 0);
  auto write = [&](const std::string& text) {
    std::ofstream(path) << text;
    return path;
  };
  auto message = [&](const std::string& text) {
    try {
      EotClassifier::load(write(text), model::AdamWConfig{});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("coconut-eot-classifier v2\n").find(":1: expected 'coconut-eot-classifier v1'"), std::string::npos);
  EXPECT_NE(message("coconut-eot-classifier v1\nd_model x\n").find(":2: bad d_model 'x'"), std::string::npos);
  EXPECT_NE(message("coconut-eot-classifier v1\nd_model 2\n1\n2\n").find("ends at line 5"), std::string::npos);
  EXPECT_NE(message("coconut-eot-classifier v1\nd_model 2\n1\nfoo\n3\n").find(":4: expected a finite number"),
            std::string::npos);
  EXPECT_NE(message("coconut-eot-classifier v1\nd_model 1\n1\n2\n3\n").find(":5: unexpected text"), std::string::npos);
  EXPECT_THROW(EotClassifier::load((dir / "missing.txt").string(), model::AdamWConfig{}), Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace coconut::curriculum
