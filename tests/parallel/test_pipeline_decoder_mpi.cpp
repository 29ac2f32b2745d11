// PipelineDecoder (parallel/pipeline_decoder.h) under real mpirun processes: greedy
// decoding through pipeline stages, each rank holding only its stage's parameters,
// equals CpuDecoder over the whole model bit for bit (tokens and hidden states, with
// continuous thoughts fed back and padded samples), and the parameters a rank does not
// hold are never touched: their pages of the model's buffers stay out of memory.
// And the staged generation of launcher/staged_generation.h (a batch in flight on every
// stage) equals generate_greedy on the whole model, batch for batch, bit for bit.
// Registered for 1, 2 and 4 ranks: pp = ranks, and with 4 ranks also 2 stages x 2
// replicas. Collectives are never placed behind an assertion that could return early.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "curriculum/eot_classifier.h"
#include "curriculum/generate.h"
#include "curriculum/prosqa_generator.h"
#include "curriculum/samples.h"
#include "curriculum/word_tokenizer.h"
#include "launcher/staged_generation.h"
#include "model/decoder.h"
#include "model/gpt2.h"
#include "parallel/grid.h"
#include "parallel/partition.h"
#include "parallel/pipeline_decoder.h"
#include "runtime/zero_pages.h"
#include "tests/parallel/mpi_test_main.h"

namespace coconut::parallel {
namespace {

constexpr uint64_t kSeed = 1234;

model::GPT2Config small_config() {
  model::GPT2Config c;
  c.vocab_size = 50;
  c.max_positions = 24;
  c.n_layer = 4;
  c.n_head = 4;
  c.d_model = 64;  // about 0.2M parameters: every stage spans many pages
  return c;
}

// The parts of [0, n) outside the held slices (sorted, disjoint).
std::vector<ParamSlice> not_held(const std::vector<ParamSlice>& held, size_t n) {
  std::vector<ParamSlice> gaps;
  size_t at = 0;
  for (const ParamSlice& h : held) {
    if (h.begin > at) gaps.push_back({at, h.begin});
    at = std::max(at, h.end);
  }
  if (at < n) gaps.push_back({at, n});
  return gaps;
}

// Decodes B = 3 samples of up to T = 14 columns with both decoders in step: a 5-column
// prefix (sample 2 left-padded by 2), then one column at a time, samples 0 and 1
// thinking (the previous column's hidden state fed back) in columns 5-7, every other
// column taking the greedy tokens. Returns the number of columns compared.
int decode_and_compare(model::Decoder& reference, model::Decoder& pipelined, const std::string& what) {
  const int B = 3, T = 14, prefix = 5;
  reference.begin(B, T);
  pipelined.begin(B, T);
  std::vector<int> tokens(prefix * B), pos(prefix * B);
  std::vector<uint8_t> mask(prefix * B, 1);
  for (int t = 0; t < prefix; ++t)
    for (int s = 0; s < B; ++s) {
      const size_t r = static_cast<size_t>(t) * B + s;
      tokens[r] = 7 + (11 * t + 5 * s) % 40;
      const bool pad = s == 2 && t < 2;
      mask[r] = pad ? 0 : 1;
      pos[r] = s == 2 ? std::max(0, t - 2) : t;
    }
  reference.forward(0, prefix, tokens.data(), pos.data(), mask.data(), nullptr);
  pipelined.forward(0, prefix, tokens.data(), pos.data(), mask.data(), nullptr);
  const int C = reference.config().d_model;
  std::vector<int> ref_tok(B), pipe_tok(B), next(B), next_pos(B);
  std::vector<uint8_t> ones(B, 1);
  int compared = 0;
  for (int col = prefix;; ++col) {
    reference.greedy_tokens(ref_tok.data());
    pipelined.greedy_tokens(pipe_tok.data());
    EXPECT_EQ(ref_tok, pipe_tok) << what << ": greedy tokens of column " << col - 1;
    EXPECT_EQ(std::memcmp(reference.hidden(), pipelined.hidden(), sizeof(float) * B * C), 0)
        << what << ": hidden states of column " << col - 1;
    ++compared;
    if (col == T) break;
    const uint8_t thinking[3] = {1, 1, 0};
    const bool thoughts = col >= prefix && col < prefix + 3;
    for (int s = 0; s < B; ++s) {
      next[s] = ref_tok[s];  // a thought's token is ignored
      next_pos[s] = s == 2 ? col - 2 : col;
    }
    reference.forward(col, col + 1, next.data(), next_pos.data(), ones.data(), thoughts ? thinking : nullptr);
    pipelined.forward(col, col + 1, next.data(), next_pos.data(), ones.data(), thoughts ? thinking : nullptr);
  }
  return compared;
}

void check_grid(int pp, int dp) {
  Communicator& world = test_world();
  ASSERT_EQ(world.size(), pp * dp);
  const std::string what = "pp=" + std::to_string(pp) + " dp=" + std::to_string(dp);
  ProcessGrid grid(world, pp, dp);
  const model::GPT2Config cfg = small_config();
  const std::vector<StageLayers> partition = partition_layers(cfg.n_layer, pp, stage_costs(cfg));
  model::GPT2 whole(cfg);
  whole.init_weights(kSeed);
  model::GPT2 mine(cfg);  // only this stage's slices written
  const std::vector<ParamSlice> held = held_param_slices(mine.layout(), partition, grid.stage());
  for (const ParamSlice& h : held) mine.init_weights(kSeed, h.begin, h.end);
  for (const ParamSlice& h : held)
    EXPECT_EQ(std::memcmp(whole.params() + h.begin, mine.params() + h.begin, h.size() * sizeof(float)), 0)
        << what << ": a held slice's init differs from the whole model's";

  model::CpuDecoder reference(whole);
  PipelineDecoder pipelined(mine, grid.pipeline(), partition);
  EXPECT_EQ(decode_and_compare(reference, pipelined, what), 14 - 5 + 1);

  // The parameters and gradients this rank does not hold were never touched.
  const size_t n = mine.num_params();
  size_t held_count = 0, outside = 0;
  for (const ParamSlice& h : held) held_count += h.size();
  for (const ParamSlice& g : not_held(held, n)) {
    outside += g.size();
    EXPECT_EQ(resident_bytes(mine.params() + g.begin, g.size() * sizeof(float)), 0u)
        << what << ": parameters [" << g.begin << ", " << g.end << ") are in memory on stage " << grid.stage();
  }
  EXPECT_EQ(resident_bytes(mine.grads(), n * sizeof(float)), 0u) << what << ": decoding touched the gradients";
  EXPECT_EQ(held_count + outside, n);
  if (pp > 1) {
    EXPECT_GT(outside, n / 4) << what << ": a stage should leave much of the model out";
  }
  EXPECT_GT(resident_bytes(mine.params() + held.back().begin, held.back().size() * sizeof(float)), 0u) << what;
}

TEST(PipelineDecoder, EqualsTheWholeModelAndTouchesOnlyItsStage) {
  const int n = test_world().size();
  check_grid(n, 1);
  if (n == 4) check_grid(2, 2);
}

TEST(PipelineDecoder, APartitionForAnotherPipelineIsRefused) {
  Communicator& world = test_world();
  ProcessGrid grid(world, world.size(), 1);
  const model::GPT2Config cfg = small_config();
  model::GPT2 model(cfg);
  const std::vector<StageLayers> wrong = world.size() == 1 ? std::vector<StageLayers>{{0, 2}, {2, 4}}
                                                           : std::vector<StageLayers>{{0, 4}};
  EXPECT_THROW(PipelineDecoder(model, grid.pipeline(), wrong), std::exception);
}

// ProsQA items, a word tokenizer over them and their evaluation prompts at stage 2
// (two thoughts each, fed back), in batches of 3 (the last one of 2).
struct Prompts {
  std::vector<curriculum::Sample> samples = curriculum::generate_prosqa(17, 11);
  curriculum::WordTokenizer tok = [this] {
    std::vector<std::string> texts = {"\n", "### "};
    for (const curriculum::Sample& s : samples) {
      texts.push_back(s.question);
      texts.insert(texts.end(), s.steps.begin(), s.steps.end());
      texts.push_back(s.answer);
    }
    return curriculum::WordTokenizer::build(texts);
  }();
  std::vector<curriculum::BuiltSample> built;
  std::vector<std::vector<const curriculum::BuiltSample*>> batches;
  Prompts() {
    curriculum::CurriculumConfig cc;  // coconut, c = 1
    for (const curriculum::Sample& s : samples)
      built.push_back(curriculum::build_eval_prompt(curriculum::tokenize_sample(s, tok), cc, 2, tok));
    for (size_t i = 0; i < built.size(); i += 3) {
      batches.emplace_back();
      for (size_t k = i; k < std::min(built.size(), i + 3); ++k) batches.back().push_back(&built[k]);
    }
  }
};

void expect_same_generations(const std::vector<std::vector<curriculum::Generation>>& got,
                             const std::vector<std::vector<curriculum::Generation>>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t b = 0; b < want.size(); ++b) {
    ASSERT_EQ(got[b].size(), want[b].size()) << what << ": batch " << b;
    for (size_t i = 0; i < want[b].size(); ++i) {
      EXPECT_EQ(got[b][i].ids, want[b][i].ids) << what << ": batch " << b << " item " << i;
      EXPECT_EQ(got[b][i].thoughts, want[b][i].thoughts) << what << ": batch " << b << " item " << i;
      EXPECT_EQ(got[b][i].thought_states, want[b][i].thought_states) << what << ": batch " << b << " item " << i;
    }
  }
}

TEST(StagedGeneration, EqualsGenerateGreedyOnTheWholeModelForAnyNumberOfBatches) {
  Communicator& world = test_world();
  const int S = world.size();
  ProcessGrid grid(world, S, 1);
  const Prompts p;
  model::GPT2Config cfg = small_config();
  cfg.vocab_size = p.tok.vocab_size();
  cfg.max_positions = 512;
  const std::vector<StageLayers> partition = partition_layers(cfg.n_layer, S, stage_costs(cfg));
  model::GPT2 whole(cfg);
  whole.init_weights(kSeed);
  model::GPT2 mine(cfg);
  const std::vector<ParamSlice> held = held_param_slices(mine.layout(), partition, grid.stage());
  for (const ParamSlice& h : held) mine.init_weights(kSeed, h.begin, h.end);
  // The <eot> classifier (random weights) ends some samples' thoughts early, so that
  // the batches' lengths differ; the thoughts are kept and compared.
  curriculum::EotClassifier eot(cfg.d_model, model::AdamWConfig{});
  for (size_t i = 0; i < eot.num_params(); ++i) eot.params()[i] = 0.5f * std::sin(1.7f * static_cast<float>(i));
  for (const bool classifier : {false, true}) {
    curriculum::GenerateOptions opt;
    opt.feed_back = true;
    opt.max_new_tokens = 10;
    opt.keep_thought_states = true;
    opt.eot_classifier = classifier ? &eot : nullptr;
    // 0 batches, fewer batches than stages, and all of them (4, the last one smaller).
    for (size_t n : {size_t(0), size_t(1), p.batches.size()}) {
      const std::string what = "S=" + std::to_string(S) + " batches=" + std::to_string(n) +
                               (classifier ? " classifier" : " fixed");
      const std::vector<std::vector<const curriculum::BuiltSample*>> batches(p.batches.begin(),
                                                                           p.batches.begin() + n);
      std::vector<std::vector<curriculum::Generation>> want;
      for (const auto& batch : batches) want.push_back(curriculum::generate_greedy(whole, batch, p.tok, opt));
      const auto got = launcher::generate_through_stages(mine, grid.pipeline(), partition, batches, p.tok, opt);
      expect_same_generations(got, want, what);
      if (n == p.batches.size()) {  // what is compared is not trivial
        int thoughts = 0, early = 0, samples = 0;
        for (const auto& batch : want)
          for (const curriculum::Generation& g : batch) thoughts += g.thoughts, early += g.thoughts < 2, ++samples;
        EXPECT_EQ(samples, 11) << what;
        EXPECT_GT(thoughts, 0) << what;
        if (classifier) {
          EXPECT_GT(early, 0) << what << ": the classifier should end some thoughts early";
        } else {
          EXPECT_EQ(thoughts, 2 * samples) << what;
        }
      }
    }
  }
  // options.stop_requested, true on the last stage only from its third question on: every
  // rank stops before the same batch and returns the batches started, equal to the
  // unstopped generation's.
  curriculum::GenerateOptions opt;
  opt.feed_back = true;
  opt.max_new_tokens = 10;
  int asked = 0;
  opt.stop_requested = [&] { return ++asked > 2 && grid.stage() == S - 1; };
  const auto stopped = launcher::generate_through_stages(mine, grid.pipeline(), partition, p.batches, p.tok, opt);
  EXPECT_EQ(asked, 3) << "asked before each new batch until the stop";
  opt.stop_requested = nullptr;
  const std::vector<std::vector<const curriculum::BuiltSample*>> first_two(p.batches.begin(), p.batches.begin() + 2);
  std::vector<std::vector<curriculum::Generation>> want;
  for (const auto& batch : first_two) want.push_back(curriculum::generate_greedy(whole, batch, p.tok, opt));
  expect_same_generations(stopped, want, "S=" + std::to_string(S) + " stopped at the third batch");
  size_t outside = 0;  // staged generation too leaves the other stages' parameters alone
  for (const ParamSlice& g : not_held(held, mine.num_params()))
    outside += resident_bytes(mine.params() + g.begin, g.size() * sizeof(float));
  EXPECT_EQ(outside, 0u);
}

}  // namespace
}  // namespace coconut::parallel
