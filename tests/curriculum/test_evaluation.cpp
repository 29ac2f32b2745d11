// Sharded evaluation (curriculum/evaluation.h): the ranks of an mpirun job each generate
// every count-th batch; their results joined must equal one worker's result item for
// item, on a random model (whose generations differ from item to item) with thoughts
// fed back. Also the JSON round trip that carries a shard between processes, and the
// merge's refusals. And the decoding loop's use of model/decoder.h, which a GPU decoder
// relies on to stay cheap: hidden states are asked for only by the <eot> classifier,
// greedy tokens only for columns that write text, and the decoder refuses columns that
// do not continue its sequences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "curriculum/evaluation.h"
#include "curriculum/prosqa_generator.h"
#include "curriculum/word_tokenizer.h"
#include "curriculum/batching.h"
#include "curriculum/generate.h"
#include "model/multipass.h"
#include "model/decoder.h"
#include "model/gpt2.h"
#include "runtime/check.h"

namespace coconut::curriculum {
namespace {

struct Fixture {
  std::vector<Sample> samples = generate_prosqa(7, 11);
  WordTokenizer tok = [this] {
    std::vector<std::string> texts = {"\n", "### "};
    for (const Sample& s : samples) {
      texts.push_back(s.question);
      texts.insert(texts.end(), s.steps.begin(), s.steps.end());
      texts.push_back(s.answer);
    }
    return WordTokenizer::build(texts);
  }();
  model::GPT2 model{config(tok.vocab_size())};
  CurriculumConfig cc;  // coconut, c = 1
  Fixture() { model.init_weights(3); }
  // Evaluation prompts of the first four samples at stage 3 (three thoughts each).
  std::vector<BuiltSample> stage3_prompts() const {
    std::vector<BuiltSample> prompts;
    for (int i = 0; i < 4; ++i) prompts.push_back(build_eval_prompt(tokenize_sample(samples[i], tok), cc, 3, tok));
    return prompts;
  }
  static model::GPT2Config config(int vocab) {
    model::GPT2Config c;
    c.vocab_size = vocab, c.max_positions = 512, c.n_layer = 2, c.n_head = 2, c.d_model = 32;
    return c;
  }
};

void expect_same_items(const EvalResult& got, const EvalResult& want) {
  ASSERT_EQ(got.items.size(), want.items.size());
  for (size_t i = 0; i < want.items.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "item " << i);
    EXPECT_EQ(got.items[i].generated, want.items[i].generated);
    EXPECT_EQ(got.items[i].generated_tokens, want.items[i].generated_tokens);
    EXPECT_EQ(got.items[i].thoughts, want.items[i].thoughts);
    EXPECT_EQ(got.items[i].prediction, want.items[i].prediction);
    EXPECT_EQ(got.items[i].reference, want.items[i].reference);
    EXPECT_EQ(got.items[i].correct, want.items[i].correct);
    EXPECT_EQ(got.items[i].thought_donors, want.items[i].thought_donors);
    ASSERT_EQ(got.items[i].thought_tokens.size(), want.items[i].thought_tokens.size());
    for (size_t k = 0; k < want.items[i].thought_tokens.size(); ++k) {
      const auto &g = got.items[i].thought_tokens[k], &w = want.items[i].thought_tokens[k];
      ASSERT_EQ(g.size(), w.size());
      for (size_t m = 0; m < w.size(); ++m) {
        EXPECT_EQ(g[m].token, w[m].token);
        EXPECT_EQ(g[m].prob, w[m].prob);
      }
    }
  }
  EXPECT_EQ(got.correct, want.correct);
  EXPECT_EQ(got.total, want.total);
  EXPECT_DOUBLE_EQ(got.mean_generated_tokens, want.mean_generated_tokens);
  EXPECT_DOUBLE_EQ(got.mean_thoughts, want.mean_thoughts);
}

TEST(Evaluation, ShardsJoinedEqualOneWorker) {
  Fixture f;
  const EvalResult one = evaluate(f.model, f.tok, f.samples, f.cc, 2, /*batch_size=*/2, /*max_new_tokens=*/12);
  ASSERT_EQ(one.total, 11);
  int distinct = 0;  // the random model must not say the same thing everywhere
  for (size_t i = 1; i < one.items.size(); ++i) distinct += one.items[i].generated != one.items[0].generated;
  ASSERT_GT(distinct, 5);
  EXPECT_EQ(one.items[0].thoughts, 2);
  for (int count : {2, 3, 7}) {
    SCOPED_TRACE(testing::Message() << count << " shards");
    std::vector<EvalResult> shards;
    int items = 0;
    for (int k = 0; k < count; ++k) {
      shards.push_back(evaluate(f.model, f.tok, f.samples, f.cc, 2, 2, 12, nullptr, {k, count}));
      items += shards.back().total;
    }
    EXPECT_EQ(items, 11);
    EXPECT_EQ(shards[0].total, count == 7 ? 2 : count == 3 ? 4 : 6);  // batches 0, 3 (of 6) for 3 shards
    expect_same_items(merge_eval_shards(shards), one);
  }
}

// GenerateOptions::stop_requested (a stop signal during a training run's evaluation):
// asked before each batch; once it says stop no batch starts and the result is marked
// interrupted. A stop that never comes changes nothing.
TEST(Evaluation, StopRequestedEndsBeforeTheNextBatch) {
  Fixture f;
  const EvalResult whole = evaluate(f.model, f.tok, f.samples, f.cc, 2, /*batch_size=*/2, /*max_new_tokens=*/12);
  ASSERT_FALSE(whole.interrupted);
  int asked = 0;
  const EvalResult never = evaluate(f.model, f.tok, f.samples, f.cc, 2, 2, 12, nullptr, {}, {}, [&] {
    ++asked;
    return false;
  });
  EXPECT_FALSE(never.interrupted);
  EXPECT_EQ(asked, 6);  // 11 items in batches of 2
  expect_same_items(never, whole);
  // A generator that counts what it is handed and what it decodes: the stop comes after
  // its second batch.
  model::CpuDecoder decoder(f.model);
  int decoded = 0;
  const BatchGenerator counting = [&](const std::vector<std::vector<const BuiltSample*>>& batches,
                                      const GenerateOptions& options) {
    EXPECT_EQ(batches.size(), 6u);
    std::vector<std::vector<Generation>> out;
    for (const auto& batch : batches) {
      if (options.stop_requested && options.stop_requested()) break;
      out.push_back(generate_greedy(decoder, batch, f.tok, options));
      ++decoded;
    }
    return out;
  };
  asked = 0;
  const EvalResult stopped = evaluate(counting, f.tok, f.samples, f.cc, 2, 2, 12, nullptr, {}, {}, [&] {
    return ++asked > 2;
  });
  EXPECT_TRUE(stopped.interrupted);
  EXPECT_EQ(decoded, 2);
  EXPECT_EQ(asked, 3);
  // The decoder form stops the same way, also before its first batch.
  asked = 0;
  EXPECT_TRUE(evaluate(f.model, f.tok, f.samples, f.cc, 2, 2, 12, nullptr, {}, {}, [&] { return ++asked > 4; })
                  .interrupted);
  EXPECT_EQ(asked, 5);
  EXPECT_TRUE(evaluate(f.model, f.tok, f.samples, f.cc, 2, 2, 12, nullptr, {}, {}, [] { return true; }).interrupted);
  // Fewer batches without a stop is the generator's error, not an interruption.
  const BatchGenerator short_one = [](const std::vector<std::vector<const BuiltSample*>>&, const GenerateOptions&) {
    return std::vector<std::vector<Generation>>(1);
  };
  EXPECT_THROW(evaluate(short_one, f.tok, f.samples, f.cc, 2, 2, 12), Error);
}

TEST(Evaluation, JsonRoundTripAndMergeRefusals) {
  Fixture f;
  const EvalResult a = evaluate(f.model, f.tok, f.samples, f.cc, 1, 4, 8, nullptr, {0, 2});
  const EvalResult b = evaluate(f.model, f.tok, f.samples, f.cc, 1, 4, 8, nullptr, {1, 2});
  expect_same_items(eval_result_from_json(eval_result_to_json(a)), a);
  // With thoughts read as tokens, the JSON carries them (bit for bit) and shards join.
  const ThoughtDecoder decode = top_thought_tokens(f.model, f.tok, 3);
  const EvalResult one = evaluate(f.model, f.tok, f.samples, f.cc, 2, 4, 8, nullptr, {}, decode);
  std::vector<EvalResult> shards;
  for (int k = 0; k < 2; ++k)
    shards.push_back(eval_result_from_json(
        eval_result_to_json(evaluate(f.model, f.tok, f.samples, f.cc, 2, 4, 8, nullptr, {k, 2}, decode))));
  ASSERT_FALSE(one.items[0].thought_tokens.empty());
  expect_same_items(merge_eval_shards(shards), one);
  EXPECT_EQ(eval_result_from_json(eval_result_to_json(b)).eot_strategy, "fixed");
  // ... and the donors of thoughts fed from other items (`coconut eval --thought-source
  // other` under mpirun), as item indices of the whole set.
  model::CpuDecoder other(f.model, model::ThoughtSource::other);
  const EvalResult swapped = evaluate(other, f.tok, f.samples, f.cc, 2, 4, 8, nullptr, {1, 2});
  ASSERT_EQ(swapped.items[4].thought_donors, (std::vector<int>{5, 5}));
  expect_same_items(eval_result_from_json(eval_result_to_json(swapped)), swapped);
  EXPECT_THROW(merge_eval_shards({a}), Error);     // items 4..7 of batch 1 generated by nobody
  EXPECT_THROW(merge_eval_shards({a, b, a}), Error);  // items of batch 0 twice
  EXPECT_THROW(evaluate(f.model, f.tok, f.samples, f.cc, 1, 4, 8, nullptr, {2, 2}), Error);
}

// The CPU decoder, counting what the decoding loop asks of it.
class CountingDecoder final : public model::Decoder {
 public:
  explicit CountingDecoder(const model::GPT2& m) : inner_(m) {}
  const model::GPT2Config& config() const override { return inner_.config(); }
  void begin(int B, int T) override { inner_.begin(B, T); }
  void forward(int a, int b, const int* tokens, const int* pos, const uint8_t* mask, const uint8_t* thought) override {
    ++forwards;
    thought_columns += thought != nullptr;
    inner_.forward(a, b, tokens, pos, mask, thought);
  }
  void greedy_tokens(int* out) override { ++greedy, inner_.greedy_tokens(out); }
  const float* hidden() override { return ++hidden_reads, inner_.hidden(); }
  int forwards = 0, thought_columns = 0, greedy = 0, hidden_reads = 0;

 private:
  model::CpuDecoder inner_;
};

TEST(Evaluation, DecodingAsksTheDecoderOnlyForWhatItUses) {
  Fixture f;
  const EvalResult want = evaluate(f.model, f.tok, f.samples, f.cc, 3, 4, 10);
  CountingDecoder fixed(f.model);
  expect_same_items(evaluate(fixed, f.tok, f.samples, f.cc, 3, 4, 10), want);
  // 3 batches: each a prefix forward, 3 thought columns (the last with <eot> joined), then text.
  EXPECT_EQ(fixed.hidden_reads, 0);
  EXPECT_EQ(fixed.thought_columns, 3 * 3);
  EXPECT_EQ(fixed.greedy, fixed.forwards - 3 * 3);  // every forward but the prefixes and the first two thoughts
  // An untrained classifier (p = 0.5) never stops early: the same generations, now
  // reading the hidden states at <bot> and after each thought but the capped last.
  model::AdamWConfig adam;
  const EotClassifier classifier(f.model.config().d_model, adam);
  CountingDecoder learned(f.model);
  EvalResult got = evaluate(learned, f.tok, f.samples, f.cc, 3, 4, 10, &classifier);
  EXPECT_EQ(got.eot_strategy, "classifier");
  got.eot_strategy = want.eot_strategy;
  expect_same_items(got, want);
  EXPECT_EQ(learned.hidden_reads, 3 * 3);

  model::CpuDecoder d(f.model);
  d.begin(2, 8);
  const std::vector<int> tokens(4, 1), pos = {0, 0, 1, 1};
  const std::vector<uint8_t> mask(4, 1), thought = {1, 0};
  EXPECT_THROW(d.forward(1, 2, tokens.data(), pos.data(), mask.data(), nullptr), Error);  // skips column 0
  EXPECT_THROW(d.forward(0, 1, tokens.data(), pos.data(), mask.data(), thought.data()), Error);  // no column before
  EXPECT_THROW(d.greedy_tokens(nullptr), Error);  // nothing run yet
  d.forward(0, 2, tokens.data(), pos.data(), mask.data(), nullptr);
  EXPECT_THROW(d.forward(2, 9, tokens.data(), pos.data(), mask.data(), nullptr), Error);  // past T
}

// BatchDecoding::Forward::needs_tokens tells a driver before the forward whether take()
// will read its greedy tokens (the staged decoding computes and broadcasts them only
// then): it must be exactly the forwards after which take() asks, with the fixed count
// and with the classifier, and false for the prefix and the thought-only forwards.
TEST(Evaluation, NeedsTokensAnnouncesTheGreedyReads) {
  Fixture f;
  model::AdamWConfig adam;
  const EotClassifier classifier(f.model.config().d_model, adam);
  for (const EotClassifier* eot : {static_cast<const EotClassifier*>(nullptr), &classifier}) {
    const std::vector<BuiltSample> prompts = f.stage3_prompts();
    std::vector<const BuiltSample*> ptrs;
    for (const BuiltSample& p : prompts) ptrs.push_back(&p);
    GenerateOptions opt;
    opt.feed_back = true;
    opt.max_new_tokens = 6;
    opt.eot_classifier = eot;
    CountingDecoder decoder(f.model);
    BatchDecoding d(ptrs, f.tok, opt, f.model.config());
    decoder.begin(d.batch_size(), d.max_columns());
    int without_tokens = 0;
    bool more = true;
    while (more) {
      const BatchDecoding::Forward fw = d.next_forward();
      decoder.forward(fw.a, fw.b, fw.tokens, fw.pos_ids, fw.key_mask, fw.thought);
      const int before = decoder.greedy;
      more = d.take(decoder);
      EXPECT_EQ(decoder.greedy - before, fw.needs_tokens ? 1 : 0) << "forward " << decoder.forwards;
      without_tokens += !fw.needs_tokens;
    }
    EXPECT_EQ(without_tokens, 3) << "the prefix and the first two thoughts";
    std::vector<Generation> want = generate_greedy(f.model, ptrs, f.tok, opt);
    std::vector<Generation> got = std::move(d.generations());
    ASSERT_EQ(got.size(), want.size());
    for (size_t s = 0; s < want.size(); ++s) EXPECT_EQ(got[s].ids, want[s].ids) << "sample " << s;
  }
}

// The thoughts kept for --thought-tokens are the hidden states fed back: the whole
// prompts (question <bot> <latent>*K <eot>) through their pass plan with feedback
// (model::forward_passes, not the decoding loop) give, at the column before each
// <latent>, the same vector. And the thought decoder's tokens are the LM head's most
// probable ones, with softmax probabilities.
TEST(Evaluation, ThoughtStatesAreTheFedBackHiddenStatesAndDecodeThroughTheLmHead) {
  Fixture f;
  const std::vector<BuiltSample> prompts = f.stage3_prompts();
  std::vector<const BuiltSample*> ptrs;
  for (const BuiltSample& p : prompts) ptrs.push_back(&p);
  GenerateOptions opt;
  opt.feed_back = true;
  opt.max_new_tokens = 4;
  opt.keep_thought_states = true;
  const std::vector<Generation> got = generate_greedy(f.model, ptrs, f.tok, opt);

  const model::SequenceBatch batch = make_batch(ptrs, f.tok, /*feed_back=*/true, /*align_ends=*/true);
  const int B = batch.B, C = f.model.config().d_model;
  model::Activations acts;
  acts.resize(f.model.config(), B, batch.T, false);
  std::copy(batch.pos_ids.begin(), batch.pos_ids.end(), acts.pos_ids.begin());
  std::copy(batch.key_mask.begin(), batch.key_mask.end(), acts.key_mask.begin());
  std::vector<float> embeds(static_cast<size_t>(B) * batch.T * C);
  f.model.embed_tokens(batch.tokens.data(), B * batch.T, embeds.data());
  model::forward_passes(f.model, acts, batch, embeds.data(), nullptr);
  int compared = 0;
  for (int s = 0; s < B; ++s) {
    std::vector<int> latent_columns;
    for (int t = 0; t < batch.T; ++t)
      if (batch.tokens[static_cast<size_t>(t) * B + s] == f.tok.latent_id()) latent_columns.push_back(t);
    ASSERT_EQ(got[s].thought_states.size(), latent_columns.size()) << "sample " << s;
    for (size_t k = 0; k < latent_columns.size(); ++k) {
      const float* want = acts.lnf + (static_cast<size_t>(latent_columns[k] - 1) * B + s) * C;
      double diff = 0, scale = 0;
      for (int c = 0; c < C; ++c) {
        diff = std::max(diff, std::fabs(static_cast<double>(got[s].thought_states[k][c]) - want[c]));
        scale = std::max(scale, std::fabs(static_cast<double>(want[c])));
      }
      EXPECT_LE(diff, 1e-6 * scale) << "sample " << s << " thought " << k;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 4 * 3);  // stage 3, c = 1: three thoughts each

  const int V = f.model.config().vocab_size;
  const std::vector<ThoughtToken> all = top_thought_tokens(f.model, f.tok, V)(got[0].thought_states[0].data());
  const std::vector<ThoughtToken> top3 = top_thought_tokens(f.model, f.tok, 3)(got[0].thought_states[0].data());
  ASSERT_EQ(all.size(), static_cast<size_t>(V));
  double sum = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    sum += all[i].prob;
    if (i > 0) {
      EXPECT_LE(all[i].prob, all[i - 1].prob);
    }
  }
  EXPECT_NEAR(sum, 1.0, 1e-5);
  std::vector<float> logits(V);
  f.model.lm_head_logits(got[0].thought_states[0].data(), 1, logits.data());
  const int argmax = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  ASSERT_EQ(top3.size(), 3u);
  EXPECT_EQ(top3[0].token, f.tok.id_to_token(argmax));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(top3[i].token, all[i].token);
  EXPECT_THROW(top_thought_tokens(f.model, f.tok, 0), Error);

  // evaluate() with a thought decoder: every item's thoughts, decoded, in the report.
  const EvalResult r = evaluate(f.model, f.tok, f.samples, f.cc, 2, 4, 6, nullptr, {}, top_thought_tokens(f.model, f.tok, 2));
  for (const EvalItem& it : r.items) {
    ASSERT_EQ(it.thought_tokens.size(), static_cast<size_t>(it.thoughts));
    for (const auto& top : it.thought_tokens) EXPECT_EQ(top.size(), 2u);
  }
}

// `coconut eval --thought-source zero|other` (model::ThoughtSource): at stage 1 (one thought,
// then <eot>) the <eot> column's hidden state under an intervention must equal the
// training forward's (model::forward_passes, one pass without feedback) over the whole
// prompts with the <latent> column's input set by hand: zero, or thought_scale times the
// next sample's hidden state before its <latent> (rotation, as in decoder.h). And a
// sample alone in its batch keeps its own thought under `other`.
TEST(Evaluation, ThoughtInterventionsFeedWhatTheyName) {
  Fixture f;
  f.model.init_weights(5);
  const int n = 4, C = f.model.config().d_model;
  std::vector<BuiltSample> prompts;
  for (int i = 0; i < n; ++i) prompts.push_back(build_eval_prompt(tokenize_sample(f.samples[i], f.tok), f.cc, 1, f.tok));
  std::vector<const BuiltSample*> ptrs;
  for (const BuiltSample& p : prompts) ptrs.push_back(&p);

  // The reference: whole prompts, left-padded to end together (<latent> at T - 2, <eot>
  // at T - 1), one pass with the given inputs at the <latent> column.
  const model::SequenceBatch batch = make_batch(ptrs, f.tok, /*feed_back=*/false, /*align_ends=*/true);
  const int B = batch.B, T = batch.T;
  ASSERT_EQ(B, n);
  for (int s = 0; s < B; ++s) ASSERT_EQ(batch.tokens[static_cast<size_t>(T - 2) * B + s], f.tok.latent_id());
  const auto eot_states = [&](const std::vector<float>& latent_inputs) {  // [B, C] -> the <eot> column's [B, C]
    model::Activations acts;
    acts.resize(f.model.config(), B, T, false);
    std::copy(batch.pos_ids.begin(), batch.pos_ids.end(), acts.pos_ids.begin());
    std::copy(batch.key_mask.begin(), batch.key_mask.end(), acts.key_mask.begin());
    std::vector<float> embeds(static_cast<size_t>(B) * T * C);
    f.model.embed_tokens(batch.tokens.data(), B * T, embeds.data());
    std::copy(latent_inputs.begin(), latent_inputs.end(), embeds.begin() + static_cast<size_t>(T - 2) * B * C);
    model::forward_passes(f.model, acts, batch, embeds.data(), nullptr);
    const float* h = acts.lnf + static_cast<size_t>(T - 1) * B * C;
    std::vector<float> keep(h, h + static_cast<size_t>(B) * C);
    // The hidden states before <latent>, for the rotation's inputs.
    const float* before = acts.lnf + static_cast<size_t>(T - 3) * B * C;
    return std::make_pair(keep, std::vector<float>(before, before + static_cast<size_t>(B) * C));
  };
  // The decoder's: prefix, then the thought and <eot> in one forward (decoding's plan).
  const auto decoded_eot_states = [&](model::CpuDecoder& decoder) {
    GenerateOptions opt;
    opt.feed_back = true;
    opt.max_new_tokens = 2;
    BatchDecoding d(ptrs, f.tok, opt, f.model.config());
    decoder.begin(d.batch_size(), d.max_columns());
    for (int forward = 0; forward < 2; ++forward) {
      const BatchDecoding::Forward fw = d.next_forward();
      decoder.forward(fw.a, fw.b, fw.tokens, fw.pos_ids, fw.key_mask, fw.thought);
      if (forward == 1) {
        EXPECT_EQ(fw.b, T) << "the second forward ends at <eot>";
      }
      if (forward == 0) d.take(decoder);
    }
    return std::vector<float>(decoder.hidden(), decoder.hidden() + static_cast<size_t>(B) * C);
  };
  const auto expect_close = [&](const std::vector<float>& got, const std::vector<float>& want, const char* what) {
    double diff = 0, scale = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
      scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
    }
    EXPECT_LE(diff, 1e-5 * scale) << what;
  };

  const std::vector<float> zeros(static_cast<size_t>(B) * C, 0.0f);
  const auto [eot_zero, before_latent] = eot_states(zeros);
  model::CpuDecoder zero(f.model, model::ThoughtSource::zero);
  expect_close(decoded_eot_states(zero), eot_zero, "zero");

  std::vector<float> rotated(static_cast<size_t>(B) * C), own_inputs(static_cast<size_t>(B) * C);
  for (int s = 0; s < B; ++s) {  // the inputs Coconut feeds: thought_scale x the hidden state
    f.model.feed_thought(before_latent.data() + static_cast<size_t>((s + 1) % B) * C, rotated.data() + static_cast<size_t>(s) * C);
    f.model.feed_thought(before_latent.data() + static_cast<size_t>(s) * C, own_inputs.data() + static_cast<size_t>(s) * C);
  }
  model::CpuDecoder other(f.model, model::ThoughtSource::other);
  expect_close(decoded_eot_states(other), eot_states(rotated).first, "other");
  EXPECT_EQ(other.thought_routing()->swapped(), B);
  EXPECT_EQ(other.thought_routing()->kept_alone(), 0);
  ASSERT_NE(other.thought_routing()->donors(), nullptr);
  EXPECT_EQ(*other.thought_routing()->donors(), (std::vector<std::vector<int>>{{1}, {2}, {3}, {0}}));
  EXPECT_EQ(zero.thought_routing()->donors(), nullptr);
  model::CpuDecoder own(f.model);
  expect_close(decoded_eot_states(own), eot_states(own_inputs).first, "own");
  // The interventions change what the model computes (a random model; not a tautology).
  EXPECT_NE(eot_zero, eot_states(own_inputs).first);

  // Alone in its batch, a sample keeps its own thought: the same generation as own.
  GenerateOptions opt;
  opt.feed_back = true;
  opt.max_new_tokens = 6;
  const std::vector<const BuiltSample*> one = {ptrs[2]};
  model::CpuDecoder alone(f.model, model::ThoughtSource::other);
  EXPECT_EQ(generate_greedy(alone, one, f.tok, opt)[0].ids, generate_greedy(f.model, one, f.tok, opt)[0].ids);
  EXPECT_EQ(alone.thought_routing()->kept_alone(), 1);
  EXPECT_EQ(alone.thought_routing()->swapped(), 0);
  EXPECT_EQ(*alone.thought_routing()->donors(), (std::vector<std::vector<int>>{{0}}));
  EXPECT_EQ(model::CpuDecoder(f.model).thought_routing()->donors(), nullptr);

  // evaluate() reports each item's donors as item indices: batches of 4 of the 11 items at
  // stage 1 rotate within [0, 4), [4, 8) and [8, 11).
  model::CpuDecoder rotating(f.model, model::ThoughtSource::other);
  const EvalResult r = evaluate(rotating, f.tok, f.samples, f.cc, 1, 4, 4);
  const std::vector<int> want_donor = {1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 8};
  ASSERT_EQ(r.items.size(), want_donor.size());
  for (size_t i = 0; i < want_donor.size(); ++i)
    EXPECT_EQ(r.items[i].thought_donors, std::vector<int>{want_donor[i]}) << "item " << i;
  EXPECT_TRUE(evaluate(f.model, f.tok, f.samples, f.cc, 1, 4, 4).items[0].thought_donors.empty());

  // The routing of one column directly: samples 0, 2 and 3 take a thought.
  const std::vector<uint8_t> takes = {1, 0, 1, 1, 0};
  model::ThoughtRouting own_routing(model::ThoughtSource::own), zero_routing(model::ThoughtSource::zero),
      other_routing(model::ThoughtSource::other);
  for (model::ThoughtRouting* r : {&own_routing, &zero_routing, &other_routing}) r->begin(5);
  EXPECT_EQ(own_routing.route(takes.data()), (std::vector<int>{0, -1, 2, 3, -1}));
  EXPECT_EQ(zero_routing.route(takes.data()), (std::vector<int>{-1, -1, -1, -1, -1}));
  EXPECT_EQ(other_routing.route(takes.data()), (std::vector<int>{2, -1, 3, 0, -1}));
  const std::vector<uint8_t> only_one = {0, 1, 0, 0, 0};
  EXPECT_EQ(other_routing.route(only_one.data()), (std::vector<int>{-1, 1, -1, -1, -1}));
  EXPECT_EQ(other_routing.swapped(), 3);
  EXPECT_EQ(other_routing.kept_alone(), 1);
  EXPECT_EQ(*other_routing.donors(), (std::vector<std::vector<int>>{{2}, {1}, {3}, {0}, {}}));

  EXPECT_EQ(model::parse_thought_source("other"), model::ThoughtSource::other);
  EXPECT_STREQ(model::thought_source_name(model::ThoughtSource::zero), "zero");
  EXPECT_THROW(model::parse_thought_source("shuffle"), Error);
}

}  // namespace
}  // namespace coconut::curriculum
