// Greedy decoding on the GPU (model/cuda_decoder.h) against the CPU decoder
// (model/decoder.h), through the one decoding loop of curriculum/generate.h: a random
// tiny GPT-2 with weights scaled up so that its logits have clear maxima, Coconut
// prompts with 0-3 continuous thoughts and left padding, and pause-as-thought prompts
// (tokens, no feedback). Also the argmax op against std::max_element. Labelled gpu;
// skipped without a GPU.
//
// Tolerances: fp32 generates the same tokens as the CPU (each column's hidden states
// within 1e-4 of the CPU's, normwise; the scaled model's largest logits are far apart
// next to that). bf16 rounds every activation (about 3 significant digits), which can
// flip a close argmax, so for bf16 the test checks the hidden states of the prefix
// within 5e-2 normwise, that the number of thoughts follows the prompts, and that the
// first generated token agrees on at least 3 of the 4 samples.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "curriculum/generate.h"
#include "curriculum/samples.h"
#include "curriculum/word_tokenizer.h"
#include "model/cuda_decoder.h"
#include "model/decoder.h"
#include "runtime/cuda/ops.h"
#include "runtime/rng.h"
#include "tests/gpu/gpu_fixture.h"

namespace coconut::model {
namespace {

using Gpu = testing_gpu::GpuTest;
using curriculum::BuiltSample;
using curriculum::Sample;

// max |a - b| / max |b|.
double normwise(const float* a, const float* b, size_t n) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

class CudaDecoderTest : public Gpu {
 protected:
  CudaDecoderTest() : tok(curriculum::WordTokenizer::build({"q r s t u v w x y z a b c ans s1 s2 s3 s4 ###\n"})) {
    cc.c_thought = 1;
    cc.max_latent_stage = 4;
    GPT2Config c;
    c.vocab_size = tok.vocab_size();
    c.max_positions = 48;
    c.n_layer = 2;
    c.n_head = 2;
    c.d_model = 16;
    cpu = std::make_unique<GPT2>(c);
    cpu->init_weights(3);
    for (size_t i = 0; i < cpu->num_params(); ++i) cpu->params()[i] *= 6.f;  // clear maxima
  }
  // Four questions of different lengths at `stage` (thoughts = min(stage, steps)).
  std::vector<BuiltSample> prompts(curriculum::Method method, int stage) {
    cc.method = method;
    auto sample = [](const std::string& q, int steps) {
      Sample s;
      s.question = q;
      const std::vector<std::string> names = {"s1", "s2", "s3", "s4"};
      s.steps.assign(names.begin(), names.begin() + steps);
      s.answer = "ans";
      return s;
    };
    std::vector<BuiltSample> out;
    for (const Sample& s : {sample("q r s", 3), sample("t", 2), sample("u v w x y z a", 1), sample("b c", 4)})
      out.push_back(curriculum::build_eval_prompt(curriculum::tokenize_sample(s, tok), cc, stage, tok));
    return out;
  }
  static std::vector<const BuiltSample*> ptrs(const std::vector<BuiltSample>& v) {
    std::vector<const BuiltSample*> p;
    for (const BuiltSample& b : v) p.push_back(&b);
    return p;
  }
  // Greedy decoding of the prompts on both decoders (at most 12 new tokens): the GPU's
  // tokens must be the CPU's, sample by sample. Returns the CPU's generations.
  std::vector<curriculum::Generation> expect_same_generations(Decoder& on_cpu, Decoder& on_gpu,
                                                              const std::vector<BuiltSample>& p, bool feed_back,
                                                              const std::string& what) {
    curriculum::GenerateOptions opt;
    opt.feed_back = feed_back;
    opt.max_new_tokens = 12;
    const auto want = curriculum::generate_greedy(on_cpu, ptrs(p), tok, opt);
    const auto got = curriculum::generate_greedy(on_gpu, ptrs(p), tok, opt);
    EXPECT_EQ(got.size(), want.size()) << what;
    for (size_t s = 0; s < std::min(got.size(), want.size()); ++s) {
      EXPECT_EQ(got[s].ids, want[s].ids) << what << " sample " << s;
      EXPECT_EQ(got[s].thoughts, want[s].thoughts) << what << " sample " << s;
    }
    return want;
  }
  curriculum::WordTokenizer tok;
  curriculum::CurriculumConfig cc;
  std::unique_ptr<GPT2> cpu;
};

TEST_F(Gpu, ArgmaxRowsIsTheFirstMaximum) {
  const int N = 37, V = 1003, ld = 1024;
  std::vector<float> logits(size_t(N) * ld, 1e30f);  // the padding past V must be ignored
  CounterRng rng(5, {1});
  for (int r = 0; r < N; ++r)
    for (int v = 0; v < V; ++v) logits[size_t(r) * ld + v] = rng.normal();
  // Ties: row 1 has its maximum at columns 900 and 7, row 2 everywhere, row 3 at the last column.
  logits[size_t(1) * ld + 900] = logits[size_t(1) * ld + 7] = 50.f;
  std::fill(logits.begin() + ld * 2, logits.begin() + ld * 2 + V, 2.f);
  logits[size_t(3) * ld + V - 1] = 60.f;
  // NaNs, which std::max_element never picks past column 0 and always picks at it: row 4
  // has NaNs at a thread's first column (5) and elsewhere, its maximum at 261; row 5 a
  // NaN at column 0.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  logits[size_t(4) * ld + 5] = logits[size_t(4) * ld + 700] = nan;
  logits[size_t(4) * ld + 261] = 70.f;
  logits[size_t(5) * ld + 0] = nan;
  DeviceBuffer<float> d(logits.size());
  d.copy_from_host(logits);
  DeviceBuffer<int> out(N);
  gpu::argmax_rows(d.data(), ld, N, V, out.data(), nullptr);
  const std::vector<int> got = out.to_host();
  for (int r = 0; r < N; ++r) {
    const float* z = logits.data() + size_t(r) * ld;
    EXPECT_EQ(got[r], int(std::max_element(z, z + V) - z)) << "row " << r;
  }
  EXPECT_EQ(got[1], 7);
  EXPECT_EQ(got[2], 0);
  EXPECT_EQ(got[3], V - 1);
  EXPECT_EQ(got[4], 261);
  EXPECT_EQ(got[5], 0);
}

TEST_F(CudaDecoderTest, Fp32GeneratesWhatTheCpuGenerates) {
  CudaGPT2 gpu_model(cpu->config());
  gpu_model.set_params(cpu->params());
  CpuDecoder on_cpu(*cpu);
  CudaDecoder on_gpu(gpu_model);
  int differing = 0, compared = 0;
  for (const curriculum::Method method : {curriculum::Method::coconut, curriculum::Method::pause_as_thought}) {
    const bool feed_back = method == curriculum::Method::coconut;
    for (int stage = 0; stage <= 3; ++stage) {
      const std::vector<BuiltSample> p = prompts(method, stage);
      const auto want = expect_same_generations(on_cpu, on_gpu, p, feed_back,
                                                fmt::format("method {} stage {}", int(method), stage));
      for (const curriculum::Generation& g : want) compared += int(g.ids.size());
      curriculum::GenerateOptions as_tokens;  // the same prompt, <latent> read as a token
      as_tokens.feed_back = false;
      as_tokens.max_new_tokens = 12;
      if (feed_back && stage > 0)
        differing += want[0].ids != curriculum::generate_greedy(on_cpu, {&p[0]}, tok, as_tokens).at(0).ids;
    }
  }
  EXPECT_GT(compared, 40) << "too few generated tokens to compare";
  EXPECT_GT(differing, 0) << "thoughts never changed a generation: the test could not tell feedback from none";
}

// `coconut eval --thought-source zero|other` on the GPU: the same generations and donors
// as the CPU decoder's interventions (fp32), the four prompts taking 0-3 thoughts so that
// the rotation runs over 3, 2 and 1 takers (the last one keeps its own).
TEST_F(CudaDecoderTest, Fp32InterventionsGenerateWhatTheCpusGenerate) {
  CudaGPT2 gpu_model(cpu->config());
  gpu_model.set_params(cpu->params());
  for (const ThoughtSource source : {ThoughtSource::zero, ThoughtSource::other}) {
    CpuDecoder on_cpu(*cpu, source);
    CudaDecoder on_gpu(gpu_model, source);
    expect_same_generations(on_cpu, on_gpu, prompts(curriculum::Method::coconut, 3), true,
                            thought_source_name(source));
    EXPECT_EQ(on_gpu.thought_routing()->swapped(), on_cpu.thought_routing()->swapped());
    EXPECT_EQ(on_gpu.thought_routing()->kept_alone(), on_cpu.thought_routing()->kept_alone());
    if (source == ThoughtSource::other) {
      EXPECT_EQ(*on_gpu.thought_routing()->donors(), *on_cpu.thought_routing()->donors());
    }
  }
}

TEST_F(CudaDecoderTest, HiddenStatesAndTokensOfEachColumnMatchTheCpu) {
  for (const bool bf16 : {false, true}) {
    CudaGPT2 fp32_model(cpu->config());
    CudaGPT2Bf16 bf16_model(cpu->config());
    std::unique_ptr<Decoder> on_gpu;
    if (bf16) {
      bf16_model.set_attention(CudaAttention::kBf16Batched);
      bf16_model.set_params(cpu->params());
      on_gpu = std::make_unique<CudaDecoderBf16>(bf16_model);
    } else {
      fp32_model.set_params(cpu->params());
      on_gpu = std::make_unique<CudaDecoder>(fp32_model);
    }
    CpuDecoder on_cpu(*cpu);
    const double tolerance = bf16 ? 5e-2 : 1e-4;
    // Three sequences: a 5-column prefix with one left pad, then two one-column steps,
    // the second feeding sample 1's hidden state back as a thought.
    const int B = 3, T = 8, C = cpu->config().d_model;
    std::vector<int> tokens = {3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17};
    std::vector<int> pos = {0, 0, 0, 1, 1, 0, 2, 2, 1, 3, 3, 2, 4, 4, 3};
    std::vector<uint8_t> mask = {1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (Decoder* d : {static_cast<Decoder*>(&on_cpu), on_gpu.get()}) {
      d->begin(B, T);
      d->forward(0, 5, tokens.data(), pos.data(), mask.data(), nullptr);
    }
    std::vector<float> want(on_cpu.hidden(), on_cpu.hidden() + B * C);
    EXPECT_LE(normwise(on_gpu->hidden(), want.data(), want.size()), tolerance) << "prefix, bf16 " << bf16;
    std::vector<int> cpu_next(B), gpu_next(B);
    on_cpu.greedy_tokens(cpu_next.data());
    on_gpu->greedy_tokens(gpu_next.data());
    int agree = 0;
    for (int s = 0; s < B; ++s) agree += cpu_next[s] == gpu_next[s];
    if (bf16) {
      EXPECT_GE(agree, B - 1);
    } else {
      EXPECT_EQ(gpu_next, cpu_next);
    }
    const std::vector<int> p5 = {5, 5, 4}, p6 = {6, 6, 5};
    const std::vector<uint8_t> ones(B, 1), thought = {0, 1, 0};
    for (Decoder* d : {static_cast<Decoder*>(&on_cpu), on_gpu.get()}) {
      d->forward(5, 6, cpu_next.data(), p5.data(), ones.data(), nullptr);
      d->forward(6, 7, cpu_next.data(), p6.data(), ones.data(), thought.data());
    }
    want.assign(on_cpu.hidden(), on_cpu.hidden() + B * C);
    EXPECT_LE(normwise(on_gpu->hidden(), want.data(), want.size()), tolerance) << "after a thought, bf16 " << bf16;
  }
}

TEST_F(CudaDecoderTest, Bf16CountsThoughtsAsTheCpuAndMostlyAgrees) {
  CudaGPT2Bf16 gpu_model(cpu->config());
  gpu_model.set_attention(CudaAttention::kBf16Batched);
  gpu_model.set_params(cpu->params());
  CpuDecoder on_cpu(*cpu);
  CudaDecoderBf16 on_gpu(gpu_model);
  for (int stage = 0; stage <= 3; ++stage) {
    const std::vector<BuiltSample> p = prompts(curriculum::Method::coconut, stage);
    curriculum::GenerateOptions opt;
    opt.feed_back = true;
    opt.max_new_tokens = 12;
    const auto want = curriculum::generate_greedy(on_cpu, ptrs(p), tok, opt);
    const auto got = curriculum::generate_greedy(on_gpu, ptrs(p), tok, opt);
    ASSERT_EQ(got.size(), want.size());
    int first_agree = 0;
    for (size_t s = 0; s < got.size(); ++s) {
      EXPECT_EQ(got[s].thoughts, want[s].thoughts) << "stage " << stage << " sample " << s;
      first_agree += !got[s].ids.empty() && !want[s].ids.empty() && got[s].ids[0] == want[s].ids[0];
    }
    EXPECT_GE(first_agree, 3) << "stage " << stage;
  }
}

}  // namespace
}  // namespace coconut::model
