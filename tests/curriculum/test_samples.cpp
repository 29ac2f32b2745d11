// Sample layout per stage and method, and batch padding / pass plans, against
// hand-written expected token sequences (DESIGN.md 2.1 and 2.2).
#include <gtest/gtest.h>

#include <cmath>

#include "curriculum/batching.h"
#include "curriculum/samples.h"
#include "curriculum/word_tokenizer.h"
#include "model/batch.h"
#include "model/gpt2.h"
#include "model/multipass.h"

namespace coconut::curriculum {
namespace {

class SamplesTest : public ::testing::Test {
 protected:
  SamplesTest() : tok(WordTokenizer::build({"q a b c ans s1 s2 s3 ###\n"})) {
    sample.question = "q";
    sample.steps = {"s1", "s2", "s3"};
    sample.answer = "ans";
    ts = tokenize_sample(sample, tok);
  }
  int id(const char* w) const { return tok.token_id(w); }
  // Expands a space-separated word list, with BOT/EOT/LAT/EOS for the special tokens.
  std::vector<int> ids(const std::string& words) const {
    std::vector<int> out;
    size_t i = 0;
    while (i < words.size()) {
      size_t j = words.find(' ', i);
      if (j == std::string::npos) j = words.size();
      const std::string w = words.substr(i, j - i);
      if (w == "BOT") out.push_back(tok.start_latent_id());
      else if (w == "EOT") out.push_back(tok.end_latent_id());
      else if (w == "LAT") out.push_back(tok.latent_id());
      else if (w == "EOS") out.push_back(tok.eos_id());
      else if (w == "NL") out.push_back(id("\n"));
      else {
        const std::vector<int> e = tok.encode(w);  // "###" is three "#" tokens
        out.insert(out.end(), e.begin(), e.end());
      }
      i = j + 1;
    }
    return out;
  }
  // Sample 0: "a b q NL BOT LAT LAT EOT ans EOS" (latent at 5), sample 1: "q NL BOT LAT
  // EOT ans EOS" (latent at 3), sample 2: "q NL ans EOS" (no latents); "ans" and EOS labelled.
  std::vector<BuiltSample> three_samples() const {
    std::vector<BuiltSample> x = {{ids("a b q NL BOT LAT LAT EOT ans EOS"), {}, 2},
                                  {ids("q NL BOT LAT EOT ans EOS"), {}, 1},
                                  {ids("q NL ans EOS"), {}, 0}};
    for (BuiltSample& s : x) {
      s.labels.assign(s.tokens.size(), -100);
      s.labels[s.tokens.size() - 2] = s.tokens[s.tokens.size() - 2];
      s.labels.back() = s.tokens.back();
    }
    return x;
  }
  std::vector<int> masked(const std::vector<int>& t, size_t n_masked) const {
    std::vector<int> l = t;
    for (size_t i = 0; i < n_masked; ++i) l[i] = -100;
    return l;
  }
  WordTokenizer tok;
  Sample sample;
  TokenizedSample ts;
};

TEST_F(SamplesTest, CoconutStagesReplaceStepsWithCThoughtsEach) {
  CurriculumConfig cc;
  cc.c_thought = 2;
  cc.max_latent_stage = 2;
  auto s0 = build_training_sample(ts, cc, 0, 0, tok);
  EXPECT_EQ(s0.tokens, ids("q NL BOT EOT s1 NL s2 NL s3 NL ### ans EOS"));
  EXPECT_EQ(s0.labels, masked(s0.tokens, 4));
  auto s1 = build_training_sample(ts, cc, 1, 0, tok);
  EXPECT_EQ(s1.tokens, ids("q NL BOT LAT LAT EOT s2 NL s3 NL ### ans EOS"));
  EXPECT_EQ(s1.labels, masked(s1.tokens, 6));
  EXPECT_EQ(s1.n_latents, 2);
  // Past max_latent_stage: every step removed, min(steps, max) * c latents.
  auto s3 = build_training_sample(ts, cc, 3, 0, tok);
  EXPECT_EQ(s3.tokens, ids("q NL BOT LAT LAT LAT LAT EOT ### ans EOS"));
  EXPECT_EQ(s3.labels, masked(s3.tokens, 8));
}

// curriculum.question_loss: the question's tokens get labels too; <bot>, the thoughts
// and <eot> still do not; the tokens are the same.
TEST_F(SamplesTest, QuestionLossLabelsTheQuestion) {
  CurriculumConfig cc;
  cc.max_latent_stage = 2;
  const BuiltSample plain = build_training_sample(ts, cc, 1, 0, tok);
  cc.question_loss = true;
  const BuiltSample with = build_training_sample(ts, cc, 1, 0, tok);
  EXPECT_EQ(with.tokens, plain.tokens);
  EXPECT_EQ(with.tokens, ids("q NL BOT LAT EOT s2 NL s3 NL ### ans EOS"));
  std::vector<int> want = with.tokens;
  for (size_t i = 2; i < 5; ++i) want[i] = -100;  // BOT LAT EOT
  EXPECT_EQ(with.labels, want);
  cc.method = Method::cot;
  const BuiltSample cot = build_training_sample(ts, cc, 0, 0, tok);
  EXPECT_EQ(cot.labels, cot.tokens) << "cot: every token labelled";
}

TEST_F(SamplesTest, FewerStepsThanStageKeepsStageTimesCLatents) {
  CurriculumConfig cc;
  cc.c_thought = 1;
  cc.max_latent_stage = 6;
  auto s = build_training_sample(ts, cc, 5, 0, tok);  // 3 steps, stage 5
  EXPECT_EQ(s.tokens, ids("q NL BOT LAT LAT LAT LAT LAT EOT ### ans EOS"));
}

TEST_F(SamplesTest, PadLatentToMax) {
  CurriculumConfig cc;
  cc.max_latent_stage = 4;
  cc.pad_latent_to_max = true;
  auto s = build_training_sample(ts, cc, 5, 0, tok);  // only 3 steps, padded to 4 latents
  EXPECT_EQ(s.tokens, ids("q NL BOT LAT LAT LAT LAT EOT ### ans EOS"));
  cc.pad_latent_to_max = false;
  auto t = build_training_sample(ts, cc, 5, 0, tok);
  EXPECT_EQ(t.tokens, ids("q NL BOT LAT LAT LAT EOT ### ans EOS"));
}

TEST_F(SamplesTest, BaselineMethods) {
  CurriculumConfig cc;
  cc.method = Method::cot;
  EXPECT_EQ(cc.stage_of_epoch(7), 0);
  auto cot = build_training_sample(ts, cc, cc.stage_of_epoch(7), 7, tok);
  EXPECT_EQ(cot.tokens, ids("q NL s1 NL s2 NL s3 NL ### ans EOS"));
  EXPECT_EQ(cot.labels, masked(cot.tokens, 2));
  cc.method = Method::no_cot;
  EXPECT_EQ(build_training_sample(ts, cc, 0, 0, tok).tokens, ids("q NL ### ans EOS"));
  cc.method = Method::no_thought;
  EXPECT_EQ(build_training_sample(ts, cc, 2, 0, tok).tokens, ids("q NL s3 NL ### ans EOS"));
  cc.method = Method::pause_as_thought;
  EXPECT_FALSE(cc.feeds_back());
  EXPECT_EQ(build_training_sample(ts, cc, 1, 0, tok).tokens, ids("q NL BOT LAT EOT s2 NL s3 NL ### ans EOS"));
  cc.method = Method::no_curriculum;
  cc.max_latent_stage = 3;
  EXPECT_TRUE(cc.feeds_back());
  EXPECT_EQ(cc.stage_of_epoch(0), 4);
  EXPECT_EQ(build_training_sample(ts, cc, cc.stage_of_epoch(0), 0, tok).tokens,
            ids("q NL BOT LAT LAT LAT EOT ### ans EOS"));
  cc.method = Method::icot;
  cc.icot_tokens_per_epoch = 3;  // epoch 1 drops "s1 NL s2"
  EXPECT_EQ(build_training_sample(ts, cc, 0, 1, tok).tokens, ids("q NL NL s3 NL ### ans EOS"));
  EXPECT_EQ(build_training_sample(ts, cc, 0, 9, tok).tokens, ids("q NL ### ans EOS"));
  EXPECT_THROW(parse_method("coconuts"), coconut::Error);
}

TEST_F(SamplesTest, EvalPrompt) {
  CurriculumConfig cc;
  cc.c_thought = 2;
  cc.max_latent_stage = 1;
  EXPECT_EQ(build_eval_prompt(ts, cc, 3, tok).tokens, ids("q NL BOT LAT LAT EOT"));
  // K = min(stage, max) * c, as the official get_question_latent_dataset with padding:
  // padding does not give an early stage more thoughts than it was trained with (this
  // used to give every stage max * c).
  cc.c_thought = 1;
  cc.max_latent_stage = 6;
  cc.pad_latent_to_max = true;
  EXPECT_EQ(build_eval_prompt(ts, cc, 0, tok).tokens, ids("q NL BOT EOT"));
  EXPECT_EQ(build_eval_prompt(ts, cc, 2, tok).tokens, ids("q NL BOT LAT LAT EOT"));
  EXPECT_EQ(build_eval_prompt(ts, cc, 5, tok).tokens, ids("q NL BOT LAT LAT LAT LAT LAT EOT"));
  EXPECT_EQ(build_eval_prompt(ts, cc, 9, tok).tokens, ids("q NL BOT LAT LAT LAT LAT LAT LAT EOT"));
  // Each stage's prompt has as many thoughts as its training sample (the 3 steps of ts
  // are gone by stage 3, the thoughts stay), so evaluation sees what training saw.
  for (int stage = 0; stage <= 9; ++stage)
    EXPECT_EQ(build_eval_prompt(ts, cc, stage, tok).n_latents, build_training_sample(ts, cc, stage, 0, tok).n_latents)
        << "stage " << stage;
  // Without padding: also capped at the sample's 3 steps (the official
  // get_question_latent_dataset), so past the last stage evaluation again has the
  // training sample's thoughts: min(steps, max) * c.
  cc.pad_latent_to_max = false;
  EXPECT_EQ(build_eval_prompt(ts, cc, 2, tok).tokens, ids("q NL BOT LAT LAT EOT"));
  EXPECT_EQ(build_eval_prompt(ts, cc, 5, tok).tokens, ids("q NL BOT LAT LAT LAT EOT"));
  for (int stage = cc.max_latent_stage + 1; stage <= 9; ++stage)
    EXPECT_EQ(build_eval_prompt(ts, cc, stage, tok).n_latents, build_training_sample(ts, cc, stage, 0, tok).n_latents)
        << "stage " << stage;
  cc.c_thought = 2;
  EXPECT_EQ(build_eval_prompt(ts, cc, 9, tok).n_latents, 6);
  cc.method = Method::cot;
  EXPECT_EQ(build_eval_prompt(ts, cc, 0, tok).tokens, ids("q NL"));
}

TEST_F(SamplesTest, BatchAlignsFirstLatentAndPlansPasses) {
  // Sample 1's latent (at 3) is shifted right by 2 to sample 0's (at 5); sample 2 has none
  // and is not shifted.
  const std::vector<BuiltSample> x = three_samples();
  const BuiltSample &x0 = x[0], &x1 = x[1], &x2 = x[2];
  auto b = make_batch({&x0, &x1, &x2}, tok, true);
  ASSERT_EQ(b.B, 3);
  ASSERT_EQ(b.T, 10);
  auto at = [&](const std::vector<int>& v, int t, int s) { return v[t * 3 + s]; };
  EXPECT_EQ(at(b.tokens, 5, 0), tok.latent_id());
  EXPECT_EQ(at(b.tokens, 5, 1), tok.latent_id());
  EXPECT_EQ(b.key_mask[0 * 3 + 1], 0);  // sample 1 left-padded at columns 0, 1
  EXPECT_EQ(b.key_mask[1 * 3 + 1], 0);
  EXPECT_EQ(at(b.pos_ids, 2, 1), 0);    // its first real token has position 0
  EXPECT_EQ(at(b.pos_ids, 5, 1), 3);
  EXPECT_EQ(at(b.tokens, 0, 2), id("q"));  // sample 2 not shifted
  EXPECT_EQ(b.key_mask[4 * 3 + 2], 0);     // and right-padded from column 4
  // Targets: the next token's label at the previous column.
  EXPECT_EQ(at(b.targets, 7, 0), id("ans"));
  EXPECT_EQ(at(b.targets, 8, 0), tok.eos_id());
  EXPECT_EQ(at(b.targets, 1, 2), id("ans"));
  EXPECT_EQ(at(b.targets, 9, 0), -100);
  EXPECT_EQ(b.num_targets(), 6);
  // Passes: [0,5) feeds column 4 -> 5 for samples 0 and 1; [5,6) feeds 5 -> 6 for sample 0; [6,10).
  ASSERT_EQ(b.passes.size(), 3u);
  EXPECT_EQ(b.passes[0].begin, 0);
  EXPECT_EQ(b.passes[0].end, 5);
  ASSERT_EQ(b.passes[0].feedback.size(), 2u);
  EXPECT_EQ(b.passes[0].feedback[0].from, 4);
  EXPECT_EQ(b.passes[1].begin, 5);
  EXPECT_EQ(b.passes[1].end, 6);
  ASSERT_EQ(b.passes[1].feedback.size(), 1u);
  EXPECT_EQ(b.passes[1].feedback[0].sample, 0);
  EXPECT_EQ(b.passes[1].feedback[0].from, 5);
  EXPECT_EQ(b.passes[2].begin, 6);
  EXPECT_EQ(b.passes[2].end, 10);
  EXPECT_TRUE(b.passes[2].feedback.empty());
  // The alignment makes each pass's feedbacks one run of consecutive rows (model/batch.h:
  // the GPU moves them with one copy): rows 12-13 (column 4, samples 0-1), then row 15.
  const std::vector<model::FeedbackRun> runs0 = model::feedback_runs(b.passes[0], b.B);
  const std::vector<model::FeedbackRun> runs1 = model::feedback_runs(b.passes[1], b.B);
  ASSERT_EQ(runs0.size(), 1u);
  EXPECT_EQ(runs0[0].first_row, 12u);
  EXPECT_EQ(runs0[0].count, 2u);
  ASSERT_EQ(runs1.size(), 1u);
  EXPECT_EQ(runs1[0].first_row, 15u);
  EXPECT_EQ(runs1[0].count, 1u);
  // Without feedback (pause tokens, plain models): one pass over everything.
  auto plain = make_batch({&x0, &x1, &x2}, tok, false);
  ASSERT_EQ(plain.passes.size(), 1u);
  EXPECT_EQ(plain.passes[0].end, 10);
}

// The layout alone (what `coconut train` measures against model.max_positions before
// training, launcher/sequence_lengths.h): the extents of the three samples (first latent
// at 5, at 3, none; lengths 10, 7, 4) give make_batch's columns, f and left padding, with
// and without train.pad_columns.
TEST_F(SamplesTest, AlignedLayoutIsMakeBatchsShape) {
  const std::vector<BuiltSample> x = three_samples();
  std::vector<SampleExtent> extents;
  for (const BuiltSample& s : x) extents.push_back(sample_extent(s, tok));
  ASSERT_EQ(extents.size(), 3u);
  EXPECT_EQ(extents[0].first_latent, 5);
  EXPECT_EQ(extents[1].first_latent, 3);
  EXPECT_EQ(extents[2].first_latent, -1);
  for (int pad_to : {1, 4, 7}) {
    const AlignedLayout l = aligned_layout(extents, pad_to);
    const model::SequenceBatch b = make_batch({&x[0], &x[1], &x[2]}, tok, true, false, pad_to);
    EXPECT_EQ(l.T, b.T) << "pad_to " << pad_to;
    EXPECT_EQ(l.f, b.passes[0].end) << "pad_to " << pad_to;
    EXPECT_EQ(l.pad_left[2], 0) << "a sample without latents is not shifted";
    EXPECT_EQ(l.pad_left[0], l.f - 5);
    EXPECT_EQ(l.pad_left[1], l.f - 3);
  }
  // Hand-made extents: first latents at 6 and 1, lengths 8 and 9: f = 6, T = max(8, 5 + 9).
  const AlignedLayout l = aligned_layout({{6, 8}, {1, 9}});
  EXPECT_EQ(l.f, 6);
  EXPECT_EQ(l.T, 14) << "longer than either sample alone";
  EXPECT_EQ(aligned_layout({{6, 8}, {1, 9}}, 4).T, 16) << "f rounded to 8: pads 2 and 7, 7 + 9 = 16";
  EXPECT_EQ(aligned_layout({{6, 8}, {1, 10}}, 4).T, 20) << "7 + 10 = 17, rounded to 20";
  EXPECT_EQ(aligned_layout({{-1, 5}, {-1, 3}}).T, 5) << "no latents: the longest";
}

// train.pad_columns: the latent column (5) and the length (13 after the shift) rounded
// up to multiples of 4 (8 and 16). The samples with latents move right by 3, the one
// without keeps its place, every added column is a pad, the targets and the pass plan
// follow, and a model's loss and gradients are the unpadded batch's up to summation
// order (the pads are masked keys without targets).
TEST_F(SamplesTest, PaddedBatchRoundsLatentColumnAndLength) {
  const std::vector<BuiltSample> x = three_samples();
  const BuiltSample &x0 = x[0], &x1 = x[1], &x2 = x[2];
  const auto plain = make_batch({&x0, &x1, &x2}, tok, true);
  const auto b = make_batch({&x0, &x1, &x2}, tok, true, false, 4);
  ASSERT_EQ(plain.T, 10);
  ASSERT_EQ(b.T, 16);
  auto at = [](const std::vector<int>& v, int t, int s) { return v[t * 3 + s]; };
  for (int t = 0; t < plain.T; ++t) {
    EXPECT_EQ(at(b.tokens, t + 3, 0), at(plain.tokens, t, 0)) << "sample 0, column " << t;
    EXPECT_EQ(at(b.tokens, t + 3, 1), at(plain.tokens, t, 1)) << "sample 1, column " << t;
    EXPECT_EQ(at(b.tokens, t, 2), at(plain.tokens, t, 2)) << "sample 2, column " << t;
    EXPECT_EQ(at(b.targets, t + 3, 0), at(plain.targets, t, 0));
    EXPECT_EQ(at(b.pos_ids, t + 3, 1), at(plain.pos_ids, t, 1));
  }
  int real = 0;
  for (uint8_t m : b.key_mask) real += m;
  EXPECT_EQ(real, 10 + 7 + 4) << "only the samples' own tokens are keys";
  EXPECT_EQ(b.num_targets(), plain.num_targets());
  ASSERT_EQ(b.passes.size(), 3u);
  EXPECT_EQ(b.passes[0].end, 8);
  EXPECT_EQ(b.passes[0].feedback[0].from, 7);
  EXPECT_EQ(b.passes[1].begin, 8);
  EXPECT_EQ(b.passes[1].end, 9);
  EXPECT_EQ(b.passes[2].end, 16);
  EXPECT_THROW(make_batch({&x0}, tok, false, true, 4), Error) << "generation prompts are not padded";

  model::GPT2Config config;
  config.vocab_size = tok.vocab_size();
  config.max_positions = 16;
  config.n_layer = 2;
  config.n_head = 2;
  config.d_model = 16;
  model::GPT2 gpt(config);
  gpt.init_weights(3);
  model::MultipassRunner runner;
  const float scale = 1.f / float(plain.num_targets());
  const double want = runner.forward_backward(gpt, plain, scale);
  const std::vector<float> want_grads(gpt.grads(), gpt.grads() + gpt.num_params());
  gpt.zero_grads();
  const double got = runner.forward_backward(gpt, b, scale);
  EXPECT_NEAR(got, want, 1e-6 * std::abs(want));
  double max_err = 0, max_grad = 0;
  for (size_t i = 0; i < want_grads.size(); ++i) {
    max_err = std::max(max_err, double(std::abs(gpt.grads()[i] - want_grads[i])));
    max_grad = std::max(max_grad, double(std::abs(want_grads[i])));
  }
  EXPECT_LE(max_err, 1e-5 * max_grad) << "gradients of the padded batch";
}

}  // namespace
}  // namespace coconut::curriculum
