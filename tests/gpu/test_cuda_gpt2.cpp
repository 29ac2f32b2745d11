// A full Coconut training step on the CUDA models (model/cuda_gpt2.h) against the CPU
// model (model::MultipassRunner + model::AdamW): a random tiny GPT-2, a batch with
// left padding and continuous thoughts (a prompt pass, a one-column latent pass, the
// final pass, thoughts fed back between them), loss, every parameter gradient and the
// weights after one AdamW step. Labelled gpu; skipped without a GPU.
//
// Tolerance: normwise per tensor, max |gpu - cpu| <= 1e-4 * max |cpu| (fp32 on both
// sides; the difference is summation order through a dozen ops and two passes of
// backpropagation through time, each op within 1e-5: see test_cuda_ops.cpp). The bf16
// mixed-precision model is compared with the same fp32 CPU step at 0.1 (see below).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "model/adamw.h"
#include "model/cuda_decoder.h"
#include "model/cuda_gpt2.h"
#include "model/cuda_multipass.h"
#include "model/multipass.h"
#include "parallel/partition.h"
#include "runtime/check.h"
#include "runtime/cuda/ops.h"
#include "tests/gpu/gpu_fixture.h"
#include "tests/gpu/tiny_model.h"

namespace coconut::model {
namespace {

using testing_gpu::expect_tensors_close;
using testing_gpu::latent_batch;
using testing_gpu::tiny_config;

using Gpu = testing_gpu::GpuTest;
constexpr double kStepTolerance = 1e-4;

// A CUDA model's gradients, copied to the host.
template <typename Model>
std::vector<float> host_grads(const Model& model) {
  std::vector<float> grads(model.num_params());
  model.get_grads(grads.data());
  return grads;
}

// What keys a step's dropout masks: the runners' set_dropout arguments.
struct DropoutKeys {
  uint64_t seed = 0, step = 0;
  std::vector<int64_t> sample_ids;
};

// The CPU reference: one MultipassRunner step from zeroed gradients (dropout keyed by
// `keys` when given); its loss, and its gradients left in cpu.grads().
double cpu_reference_step(GPT2& cpu, const SequenceBatch& batch, float scale, const DropoutKeys* keys = nullptr) {
  cpu.zero_grads();
  MultipassRunner runner;
  if (keys) runner.set_dropout(keys->seed, keys->step, keys->sample_ids);
  return runner.forward_backward(cpu, batch, scale);
}

// AdamW's decay segments of the whole buffer (matrices decayed, the rest not) and zeroed
// moments on the device: what gpu::adamw_step needs for a first step over the model.
struct DeviceAdamWState {
  explicit DeviceAdamWState(const AdamW& of) : m(of.end() - of.begin()), v(of.end() - of.begin()) {
    for (const auto& s : of.segments()) segments.push_back({s.begin, s.end, s.decay});
    CUDA_CHECK(cudaMemset(m.data(), 0, m.bytes()));
    CUDA_CHECK(cudaMemset(v.data(), 0, v.bytes()));
  }
  std::vector<gpu::DecaySegment> segments;
  DeviceBuffer<float> m, v;
};

TEST_F(Gpu, CoconutTrainingStepMatchesCpu) {
  const GPT2Config config = tiny_config();
  GPT2 cpu(config);
  cpu.init_weights(1234);
  CudaGPT2 gpu_model(config);
  gpu_model.set_params(cpu.params());
  const SequenceBatch batch = latent_batch();
  const float scale = 1.f / batch.num_targets();

  // Forward, loss and backward through the thoughts.
  const double cpu_loss = cpu_reference_step(cpu, batch, scale);
  gpu_model.zero_grads();
  CudaMultipassRunner gpu_runner;
  const double gpu_loss = gpu_runner.forward_backward(gpu_model, batch, scale);
  EXPECT_NEAR(gpu_loss, cpu_loss, 1e-5 * std::abs(cpu_loss));
  std::vector<float> grads = host_grads(gpu_model);
  const std::vector<float> cpu_grads(cpu.grads(), cpu.grads() + cpu.num_params());
  expect_tensors_close(cpu.layout(), grads, cpu_grads, "gradient", kStepTolerance);

  // One AdamW step over the whole buffer on both sides. The CPU optimizer steps from the
  // GPU's gradients: AdamW's first step is lr * g / (|g| + eps), which turns a gradient
  // that is only rounding noise into a full step of either sign. The key bias has such
  // a gradient (exactly zero in exact arithmetic: softmax ignores a shift shared by all
  // keys), so stepping from each side's own gradients differs by up to 2 lr there.
  AdamWConfig opt;
  opt.lr = 1e-2f;
  AdamW cpu_opt(opt, cpu.layout(), 0, cpu.num_params());
  cpu_opt.step(cpu.params(), grads.data(), opt.lr);
  DeviceAdamWState state(cpu_opt);
  gpu::adamw_step(gpu_model.params(), gpu_model.grads(), state.m.data(), state.v.data(), 0, state.segments,
                  {opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay}, 1, nullptr, nullptr);
  std::vector<float> params(cpu.num_params());
  gpu_model.get_params(params.data());
  const std::vector<float> cpu_params(cpu.params(), cpu.params() + cpu.num_params());
  expect_tensors_close(cpu.layout(), params, cpu_params, "weight after AdamW", kStepTolerance);

  // The same step again on the GPU gives the same bits (reproducible kernels).
  gpu_model.zero_grads();
  const double loss2 = gpu_runner.forward_backward(gpu_model, batch, scale);
  const std::vector<float> again = host_grads(gpu_model);
  gpu_model.zero_grads();
  EXPECT_EQ(gpu_runner.forward_backward(gpu_model, batch, scale), loss2);
  EXPECT_EQ(host_grads(gpu_model), again) << "two identical GPU steps differ";
}

// bf16 mixed precision against the fp32 CPU step: bf16 storage rounds every activation
// to 8 bits of mantissa, so the tolerance is loose (kBf16StepTolerance), yet a wrong op,
// a wrong layout or a missing conversion gives errors of the order of the values.
// AdamW refreshes the bf16 weight copy from the fp32 master weights.
constexpr double kBf16StepTolerance = 0.1;

// The tiny model with head size 64, which the fused attention needs.
GPT2Config head64_config() {
  GPT2Config c = tiny_config();
  c.d_model = 128;
  return c;
}

// Run with each attention: fp32 (on an fp32 copy of q|k|v), bf16 batched, bf16 fused
// (on the head-64 model, where it applies; the others on the tiny one).
class GpuBf16Attention : public testing_gpu::GpuTest, public ::testing::WithParamInterface<CudaAttention> {};
INSTANTIATE_TEST_SUITE_P(Attention, GpuBf16Attention,
                         ::testing::Values(CudaAttention::kFp32, CudaAttention::kBf16Batched,
                                           CudaAttention::kBf16Flash),
                         [](const ::testing::TestParamInfo<CudaAttention>& info) {
                           switch (info.param) {
                             case CudaAttention::kFp32: return std::string("Fp32Attention");
                             case CudaAttention::kBf16Batched: return std::string("Bf16Attention");
                             case CudaAttention::kBf16Flash: return std::string("FusedAttention");
                           }
                           return std::string("Unknown");
                         });

TEST_P(GpuBf16Attention, CoconutTrainingStepInBf16IsCloseToCpu) {
  const GPT2Config config = GetParam() == CudaAttention::kBf16Flash ? head64_config() : tiny_config();
  GPT2 cpu(config);
  cpu.init_weights(1234);
  CudaGPT2Bf16 gpu_model(config);
  gpu_model.set_attention(GetParam());
  EXPECT_EQ(gpu_model.saves_attention_probabilities(), GetParam() != CudaAttention::kBf16Flash)
      << "the fused kernel must run on the head-64 model";
  gpu_model.set_params(cpu.params());
  const SequenceBatch batch = latent_batch();
  const float scale = 1.f / batch.num_targets();

  const double cpu_loss = cpu_reference_step(cpu, batch, scale);
  gpu_model.zero_grads();
  CudaMultipassRunnerBf16 gpu_runner;
  const double gpu_loss = gpu_runner.forward_backward(gpu_model, batch, scale);
  EXPECT_NEAR(gpu_loss, cpu_loss, 2e-2 * std::abs(cpu_loss));
  const std::vector<float> cpu_grads(cpu.grads(), cpu.grads() + cpu.num_params());
  expect_tensors_close(cpu.layout(), host_grads(gpu_model), cpu_grads, "bf16 gradient", kBf16StepTolerance);

  AdamWConfig opt;
  DeviceAdamWState state(AdamW(opt, cpu.layout(), 0, cpu.num_params()));
  gpu::adamw_step(gpu_model.params(), gpu_model.grads(), state.m.data(), state.v.data(), 0, state.segments,
                  {1e-2f, opt.beta1, opt.beta2, opt.eps, opt.weight_decay}, 1, gpu_model.params_for_compute(),
                  nullptr);
  std::vector<float> master(cpu.num_params());
  gpu_model.get_params(master.data());
  std::vector<gpu::bf16> copy(cpu.num_params());
  CUDA_CHECK(cudaMemcpy(copy.data(), gpu_model.params_for_compute(), copy.size() * sizeof(gpu::bf16),
                        cudaMemcpyDeviceToHost));
  size_t moved = 0;
  for (size_t i = 0; i < master.size(); ++i) {
    ASSERT_EQ(__bfloat162float(copy[i]), __bfloat162float(__float2bfloat16_rn(master[i]))) << "element " << i;
    moved += master[i] != cpu.params()[i];
  }
  EXPECT_GT(moved, master.size() / 2) << "AdamW did not update the master weights";
}

// With dropout the GPU draws the CPU's masks (same Philox streams and sites): loss and
// gradients agree to the same tolerance, and a mask that differed in one element of
// one row would move them far more than that.
TEST_F(Gpu, CoconutTrainingStepWithDropoutMatchesCpu) {
  GPT2Config config = tiny_config();
  config.dropout = 0.2f;
  GPT2 cpu(config);
  cpu.init_weights(99);
  CudaGPT2 gpu_model(config);
  gpu_model.set_params(cpu.params());
  const SequenceBatch batch = latent_batch();
  const float scale = 1.f / batch.num_targets();
  const DropoutKeys keys{5, 3, {10, 11, 12}};

  const double cpu_loss = cpu_reference_step(cpu, batch, scale, &keys);
  gpu_model.zero_grads();
  CudaMultipassRunner gpu_runner;
  EXPECT_THROW(gpu_runner.forward_backward(gpu_model, batch, scale), Error) << "dropout keys are required";
  gpu_runner.set_dropout(keys.seed, keys.step, keys.sample_ids);
  const double gpu_loss = gpu_runner.forward_backward(gpu_model, batch, scale);
  EXPECT_NEAR(gpu_loss, cpu_loss, 1e-5 * std::abs(cpu_loss));
  const std::vector<float> cpu_grads(cpu.grads(), cpu.grads() + cpu.num_params());
  expect_tensors_close(cpu.layout(), host_grads(gpu_model), cpu_grads, "gradient with dropout", kStepTolerance);
}

// Two copies of one randomly initialised model, `want` and `got`, each with its own
// runner: a test sets up the `got` runner (graphs, rounded target rows, phase timing)
// and compares its step with the plain runner's on the `want` copy.
template <typename Act>
struct TwinRunners {
  TwinRunners(const GPT2Config& c, uint64_t seed, CudaAttention attention = CudaAttention::kFp32)
      : config(c), cpu(c), want_model(c), got_model(c) {
    cpu.init_weights(seed);
    for (CudaGPT2Of<Act>* model : {&want_model, &got_model}) {
      model->set_attention(attention);
      model->set_params(cpu.params());
    }
  }
  // One step of each copy from zeroed gradients: {want loss, got loss}.
  std::pair<double, double> step(const SequenceBatch& batch, float scale) {
    want_model.zero_grads();
    got_model.zero_grads();
    const double want_loss = want.forward_backward(want_model, batch, scale);
    return {want_loss, got.forward_backward(got_model, batch, scale)};
  }
  // A step whose loss and gradients must be the same bits in both copies.
  void expect_same_bits(const SequenceBatch& batch, float scale, const std::string& what) {
    const auto [want_loss, got_loss] = step(batch, scale);
    EXPECT_EQ(got_loss, want_loss) << what;
    EXPECT_EQ(host_grads(got_model), host_grads(want_model)) << "gradients: " << what;
  }
  GPT2Config config;
  GPT2 cpu;
  CudaGPT2Of<Act> want_model, got_model;
  CudaMultipassRunnerOf<Act> want, got;
};

// A step captured into a CUDA graph and replayed gives the eager step's bits (the same
// kernels in the same order), and replays follow new data with the same plan: other
// tokens and other dropout keys each step. Per plan: the first step runs eagerly and
// sizes the buffers, the second is captured and launched, later ones are replays. A
// new plan (other feedback) is run eagerly once, then captured again, and so is the same
// plan after a decoder moved the model's scratch buffers.
template <typename Act>
void expect_graphs_equal_eager(CudaAttention attention = CudaAttention::kFp32, float dropout = 0.1f) {
  GPT2Config config = attention == CudaAttention::kBf16Flash ? head64_config() : tiny_config();
  config.dropout = dropout;
  TwinRunners<Act> run(config, 7, attention);  // want: eager, got: graphs
  run.got.set_cuda_graphs(true);
  SequenceBatch batch = latent_batch();
  const float scale = 1.f / batch.num_targets();
  auto compare_steps = [&](int first_step, int steps) {
    for (int step = first_step; step < first_step + steps; ++step) {
      for (int& t : batch.tokens) t = (t + 5) % config.vocab_size;
      run.want.set_dropout(11, step);
      run.got.set_dropout(11, step);
      run.expect_same_bits(batch, scale, "step " + std::to_string(step));
    }
  };
  compare_steps(0, 4);
  EXPECT_EQ(run.got.graph_captures(), 1);
  batch.passes = {Pass{0, 4, {Feedback{0, 3}}}, Pass{4, 5, {Feedback{0, 4}}}, Pass{5, 10, {}}};
  compare_steps(4, 3);
  EXPECT_EQ(run.got.graph_captures(), 2);
  // Decoding 8 x 16 columns on the graphed model grows its scratch buffers past this
  // batch's 3 x 10 rows: the captured graph holds the old addresses, so the runner
  // must run the plan eagerly and capture it again.
  {
    CudaDecoderOf<Act> decoder(run.got_model);
    const int B = 8, T = config.max_positions;
    std::vector<int> tokens(size_t(B) * T), pos(size_t(B) * T);
    for (size_t r = 0; r < tokens.size(); ++r) tokens[r] = int(r % config.vocab_size), pos[r] = int(r / B);
    const std::vector<uint8_t> mask(tokens.size(), 1);
    decoder.begin(B, T);
    decoder.forward(0, T, tokens.data(), pos.data(), mask.data(), nullptr);
  }
  compare_steps(7, 3);
  EXPECT_EQ(run.got.graph_captures(), 3);
}

TEST_F(Gpu, GraphReplayEqualsEagerBitForBit) { expect_graphs_equal_eager<float>(); }
TEST_F(Gpu, GraphReplayEqualsEagerBitForBitInBf16) { expect_graphs_equal_eager<gpu::bf16>(); }
TEST_F(Gpu, GraphReplayEqualsEagerBitForBitWithBf16Attention) {
  expect_graphs_equal_eager<gpu::bf16>(CudaAttention::kBf16Batched);
}
// The fused kernel runs without attention dropout (with it, the batched products do).
TEST_F(Gpu, GraphReplayEqualsEagerBitForBitWithFusedAttention) {
  expect_graphs_equal_eager<gpu::bf16>(CudaAttention::kBf16Flash, 0.f);
}

// The tiny fp32 model twice, stepped by an eager runner and by a runner with graphs.
struct EagerAndGraphed : TwinRunners<float> {
  explicit EagerAndGraphed(uint64_t seed) : TwinRunners<float>(tiny_config(), seed) { got.set_cuda_graphs(true); }
};

// A graph is never replayed after a larger batch moved the step's buffers (the plan key
// holds their addresses; before it did, the replay wrote to freed memory): the small
// plan captured and replayed, one larger batch run eagerly (every buffer grows), then the
// small plan again runs eagerly, is captured anew and replayed.
TEST_F(Gpu, GraphIsNotReplayedAfterItsBuffersMoved) {
  EagerAndGraphed run(9);
  const SequenceBatch small = latent_batch();
  SequenceBatch large;  // 5 sequences of 14 columns, one pass, targets everywhere but the last column
  large.B = 5;
  large.T = 14;
  for (int t = 0; t < large.T; ++t)
    for (int s = 0; s < large.B; ++s) {
      large.tokens.push_back((3 * t + 5 * s + 2) % run.config.vocab_size);
      large.targets.push_back(t + 1 < large.T ? (7 * t + s) % run.config.vocab_size : -100);
      large.pos_ids.push_back(t);
      large.key_mask.push_back(1);
    }
  large.passes = {Pass{0, large.T, {}}};
  auto step = [&](const SequenceBatch& b, const std::string& what, int captures) {
    run.expect_same_bits(b, 1.f / float(b.num_targets()), what);
    EXPECT_EQ(run.got.graph_captures(), captures) << what;
  };
  step(small, "small: eager", 0);
  step(small, "small: captured", 1);
  step(small, "small: replayed", 1);
  step(large, "large: eager, the buffers grow", 1);
  step(small, "small again: eager (its graph's buffers moved)", 1);
  step(small, "small again: captured", 2);
  step(small, "small again: replayed", 2);
}

// Training alternates plans (padded batch shapes) and changes the loss scale every step:
// the runner keeps a graph per plan and the scale lives in device memory, so plans A and B
// in turn, with a new scale each step, are captured once each and then replayed.
TEST_F(Gpu, GraphsArePerPlanAndFollowTheLossScale) {
  EagerAndGraphed run(13);
  SequenceBatch a = latent_batch(), b = latent_batch(1);
  b.passes = {Pass{0, 4, {Feedback{0, 3}}}, Pass{4, 5, {Feedback{0, 4}}}, Pass{5, 10, {}}};
  const int captures[] = {0, 0, 1, 2, 2, 2, 2, 2}, replays[] = {0, 0, 0, 0, 1, 2, 3, 4};
  for (int step = 0; step < 8; ++step) {
    const SequenceBatch& batch = step % 2 == 0 ? a : b;
    run.expect_same_bits(batch, 1.f / float(batch.num_targets() + step), "step " + std::to_string(step));  // a new scale each step
    EXPECT_EQ(run.got.graph_captures(), captures[step]) << "step " << step;
    EXPECT_EQ(run.got.graph_replays(), replays[step]) << "step " << step;
  }
}

// set_target_rows_multiple: the 9 targeted rows of the batch rounded up to 16 with rows
// that have no target give the same loss and gradients (up to the LM head products'
// summation order over more rows).
TEST_F(Gpu, TargetRowsRoundedUpAddNothing) {
  TwinRunners<float> run(tiny_config(), 17);  // want: plain, got: rows rounded up
  run.got.set_target_rows_multiple(8);
  EXPECT_THROW(run.got.set_target_rows_multiple(0), Error);
  const SequenceBatch batch = latent_batch();
  ASSERT_EQ(batch.num_targets(), 9);
  const auto [want, got] = run.step(batch, 1.f / 9.f);
  EXPECT_NEAR(got, want, 1e-6 * std::abs(want));
  expect_tensors_close(run.cpu.layout(), host_grads(run.got_model), host_grads(run.want_model),
                       "gradients with rows rounded up", 1e-5);
}

// Phase timing (bench/gpu_train.cpp --phases): every pass's forward and backward, the
// loss and the token embeddings' backward, in the step's order, each a time >= 0; the
// step's loss and gradients are those without it (events only observe); refused with
// CUDA graphs.
TEST_F(Gpu, PhaseTimingNamesEveryPhaseInOrder) {
  TwinRunners<float> run(tiny_config(), 19);  // want: plain, got: timed
  run.got.set_phase_timing(true);
  const SequenceBatch batch = latent_batch();
  const float scale = 1.f / float(batch.num_targets());
  const auto [plain_loss, timed_loss] = run.step(batch, scale);
  EXPECT_EQ(timed_loss, plain_loss);
  std::vector<std::string> want;
  const size_t P = batch.passes.size();
  for (size_t p = 0; p < P; ++p) want.push_back("forward " + std::to_string(p));
  want.push_back("loss");
  for (size_t p = P; p-- > 0;) want.push_back("backward " + std::to_string(p));
  want.push_back("token embeddings");
  const auto phases = run.got.last_phases();
  std::vector<std::string> names;
  for (const auto& ph : phases) {
    names.push_back(ph.name);
    EXPECT_GE(ph.ms, 0.f) << ph.name;
  }
  EXPECT_EQ(names, want);
  expect_tensors_close(run.cpu.layout(), host_grads(run.got_model), host_grads(run.want_model),
                       "gradients with phase timing", 0.0);
  CudaMultipassRunner graphed;
  graphed.set_cuda_graphs(true);
  graphed.set_phase_timing(true);
  EXPECT_THROW(graphed.forward_backward(run.got_model, batch, scale), Error);
}

// The runner's grad_ready calls (what data parallelism sums while the backward goes
// on): layers n_layer - 1 .. 1, then 0 last, once per step, and each bucket's gradient
// is final when it is handed over. The callback copies the bucket on the model's
// stream; after the step the copies must equal the final gradients bit for bit, in an
// eager step, a captured one and a replayed one (the graph holds the copies).
TEST_F(Gpu, GradReadyHandsOverFinishedLayers) {
  const GPT2Config config = tiny_config();
  CudaGPT2 model(config);
  GPT2 cpu(config);
  cpu.init_weights(5);
  model.set_params(cpu.params());
  const size_t n = model.num_params();
  const std::vector<parallel::ParamSlice> buckets = parallel::layer_gradient_buckets(cpu.layout(), config.n_layer);
  DeviceBuffer<float> snapshot(n);
  std::vector<int> calls;
  CudaMultipassRunner runner;
  runner.set_cuda_graphs(true);
  runner.set_grad_ready([&](int l) {
    calls.push_back(l);
    const parallel::ParamSlice b = buckets.at(size_t(l));
    CUDA_CHECK(cudaMemcpyAsync(snapshot.data() + b.begin, model.grads() + b.begin, b.size() * sizeof(float),
                               cudaMemcpyDeviceToDevice, model.stream()));
  });
  const SequenceBatch batch = latent_batch();
  for (int step = 0; step < 3; ++step) {  // eager, captured, replayed
    model.zero_grads();
    CUDA_CHECK(cudaMemset(snapshot.data(), 0xff, snapshot.bytes()));  // NaNs: a missed copy shows
    calls.clear();
    runner.forward_backward(model, batch, 0.1f);
    const std::vector<float> grads = host_grads(model);
    const std::vector<float> copied = snapshot.to_host();
    EXPECT_EQ(std::memcmp(copied.data(), grads.data(), n * sizeof(float)), 0) << "step " << step;
    if (step < 2) EXPECT_EQ(calls, (std::vector<int>{1, 0})) << "step " << step;  // n_layer 2
    else EXPECT_TRUE(calls.empty()) << "a replayed graph makes no host calls";
  }
  EXPECT_EQ(runner.graph_captures(), 1);
}

// Which kernel a pass runs (CudaGPT2Of::pass_attention), and the bf16 kinds need the bf16 model.
TEST_F(Gpu, AttentionKernelsApplyWhereTheyCan) {
  CudaGPT2 fp32_model(tiny_config());
  EXPECT_THROW(fp32_model.set_attention(CudaAttention::kBf16Batched), Error);
  EXPECT_THROW(fp32_model.set_attention(CudaAttention::kBf16Flash), Error);
  CudaGPT2Bf16 small_heads(tiny_config());
  small_heads.set_attention(CudaAttention::kBf16Flash);
  EXPECT_TRUE(small_heads.saves_attention_probabilities()) << "head size 8: the batched products run instead";
  EXPECT_EQ(small_heads.pass_attention(false), CudaAttention::kBf16Batched);
  GPT2Config head4 = tiny_config();
  head4.n_head = 4;  // head size 4: no 16-byte aligned heads for the batched products
  CudaGPT2Bf16 tiny_heads(head4);
  tiny_heads.set_attention(CudaAttention::kBf16Batched);
  EXPECT_EQ(tiny_heads.pass_attention(false), CudaAttention::kFp32);
  CudaGPT2Bf16 fused(head64_config());
  fused.set_attention(CudaAttention::kBf16Flash);
  EXPECT_EQ(fused.pass_attention(false), CudaAttention::kBf16Flash);
  EXPECT_EQ(fused.pass_attention(true), CudaAttention::kBf16Batched) << "attention dropout: the batched products";
}

}  // namespace
}  // namespace coconut::model
