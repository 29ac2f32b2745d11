// The pipeline executor under real mpirun processes: a distributed training step of a
// Coconut model (pipeline stages x ZeRO-1 replicas, every schedule) equals the
// one-process step of model::MultipassRunner + model::AdamW.
//
// The batches are built by hand here (parallel/ must not depend on curriculum/): samples
// with 0 to 3 latent thoughts, left-padded so their first latents share a column, with
// the pass plan and feedbacks of DESIGN.md 2.2, and dropout on, keyed by global sample
// ids, so the masks must not depend on the layout either. The reference is the
// single-process run over all micro-batches of the global batch (independent code:
// model/multipass.cpp), computed in every process.
//
// Compared: the loss, the gradient (summed over replicas) and its norm at every step,
// and the weights after the last; the tolerances and why are in "tolerances" below.
// COCONUT_TEST_VERBOSE=1 prints the worst error of each run against its tolerance.
//
// Registered for 1, 2 and 4 ranks; each run covers the topologies (pp, dp) of its rank
// count. Collectives are never placed behind an assertion that could return early on
// one rank only, so that a failing check does not turn into a hang.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "model/adamw.h"
#include "model/batch.h"
#include "model/gpt2.h"
#include "model/multipass.h"
#include "parallel/comm.h"
#include "tests/parallel/mpi_test_main.h"
#include "parallel/executor.h"
#include "parallel/grid.h"
#include "parallel/partition.h"
#include "runtime/memory_meter.h"
#include "runtime/rng.h"

namespace coconut::parallel {
namespace {

Communicator& world() { return test_world(); }

// ---------------------------------------------------------------- the data

constexpr int kPad = 0, kBot = 1, kLatent = 2, kEot = 3, kEos = 4, kFirstWord = 5;

model::GPT2Config tiny_config() {
  model::GPT2Config c;
  c.vocab_size = 40;
  c.max_positions = 32;
  c.n_layer = 4;
  c.n_head = 4;
  c.d_model = 32;
  c.dropout = 0.1f;
  return c;
}

struct SampleSpec {
  int question, latents, answer;
};

// question <bot> <latent>*n <eot> answer <eos>; labels on everything after <eot>.
// Samples with latents are left-padded so that their first latent sits at the same
// column f; the others are not shifted; all are right-padded to the batch length.
model::SequenceBatch make_batch(const std::vector<SampleSpec>& specs, uint64_t seed) {
  const int B = static_cast<int>(specs.size());
  CounterRng rng(seed, {0xBA7C4u});
  std::vector<std::vector<int>> seqs(B);
  std::vector<int> first_label(B);
  int f = 0, n = 0;
  for (int s = 0; s < B; ++s) {
    const SampleSpec& sp = specs[s];
    std::vector<int>& q = seqs[s];
    for (int i = 0; i < sp.question; ++i) q.push_back(kFirstWord + static_cast<int>(rng.below(40 - kFirstWord)));
    q.push_back(kBot);
    for (int i = 0; i < sp.latents; ++i) q.push_back(kLatent);
    q.push_back(kEot);
    first_label[s] = static_cast<int>(q.size());
    for (int i = 0; i < sp.answer; ++i) q.push_back(kFirstWord + static_cast<int>(rng.below(40 - kFirstWord)));
    q.push_back(kEos);
    if (sp.latents > 0) f = std::max(f, sp.question + 1);
    n = std::max(n, sp.latents);
  }
  std::vector<int> pad(B, 0);
  int T = 0;
  for (int s = 0; s < B; ++s) {
    if (specs[s].latents > 0) pad[s] = f - (specs[s].question + 1);
    T = std::max(T, pad[s] + static_cast<int>(seqs[s].size()));
  }
  model::SequenceBatch b;
  b.B = B;
  b.T = T;
  const size_t R = static_cast<size_t>(B) * T;
  b.tokens.assign(R, kPad);
  b.targets.assign(R, -100);
  b.pos_ids.assign(R, 0);
  b.key_mask.assign(R, 0);
  for (int s = 0; s < B; ++s) {
    const int len = static_cast<int>(seqs[s].size());
    for (int i = 0; i < len; ++i) {
      const size_t row = static_cast<size_t>(pad[s] + i) * B + s;
      b.tokens[row] = seqs[s][i];
      b.pos_ids[row] = i;
      b.key_mask[row] = 1;
      // Row i predicts token i+1 when that one is labelled.
      if (i + 1 < len && i + 1 >= first_label[s]) b.targets[row] = seqs[s][i + 1];
    }
  }
  if (n == 0) {
    b.passes.push_back({0, T, {}});
    return b;
  }
  b.passes.push_back({0, f, {}});
  for (int i = 1; i < n; ++i) b.passes.push_back({f + i - 1, f + i, {}});
  b.passes.push_back({f + n - 1, T, {}});
  for (int p = 0; p < n; ++p)
    for (int s = 0; s < B; ++s)
      if (specs[s].latents > p) b.passes[p].feedback.push_back({s, f + p - 1});
  return b;
}

constexpr int kSteps = 3, kMicrosPerStep = 4;
constexpr float kLr = 1e-4f;  // the reference's default (DESIGN.md 2.3)
constexpr uint64_t kInitSeed = 17, kDropoutSeed = 99;

model::AdamWConfig adam_config() {
  model::AdamWConfig c;  // the reference's defaults otherwise
  c.lr = kLr;
  return c;
}

// The global batch of step t: four micro-batches of 2-3 sequences with 0-3 thoughts
// (so micro-batches have 1 to 4 passes), different every step.
std::vector<model::SequenceBatch> global_batch(int t) {
  const std::vector<std::vector<SampleSpec>> kinds = {
      {{4, 3, 3}, {2, 1, 4}, {5, 0, 2}},  // 4 passes; one sample without thoughts
      {{3, 2, 2}, {3, 2, 3}},             // 3 passes
      {{2, 0, 3}, {4, 0, 2}},             // no thoughts: one pass
      {{3, 1, 2}, {1, 3, 2}, {2, 2, 1}},  // 4 passes, unequal left padding
  };
  std::vector<model::SequenceBatch> out;
  for (int m = 0; m < kMicrosPerStep; ++m) out.push_back(make_batch(kinds[(m + t) % kinds.size()], 1000 * t + m));
  return out;
}

// Global sample id of sequence s of micro-batch m at step t (dropout keys).
std::vector<int64_t> sample_ids(int t, int m, int B) {
  std::vector<int64_t> ids(B);
  for (int s = 0; s < B; ++s) ids[s] = 100 * t + 10 * m + s;
  return ids;
}

float loss_scale(const std::vector<model::SequenceBatch>& micro) {
  int n = 0;
  for (const model::SequenceBatch& b : micro) n += b.num_targets();
  return 1.f / static_cast<float>(n);
}

// ---------------------------------------------------------------- the reference

struct Run {
  std::vector<double> losses;
  std::vector<std::vector<float>> grads;  // per step: the global batch's gradient, before clipping
  std::vector<double> norms;              // per step: its norm
  std::vector<float> params;  // after the last step
};

// One process: MultipassRunner over every micro-batch of the global batch, then AdamW.
Run reference_run(double clip) {
  const model::GPT2Config cfg = tiny_config();
  model::GPT2 model(cfg);
  model.init_weights(kInitSeed);
  model::AdamW adam(adam_config(), model.layout(), 0, model.num_params());
  model::MultipassRunner runner;
  Run run;
  for (int t = 0; t < kSteps; ++t) {
    const std::vector<model::SequenceBatch> batch = global_batch(t);
    model.zero_grads();
    double loss = 0;
    for (int m = 0; m < kMicrosPerStep; ++m) {
      runner.set_dropout(kDropoutSeed, t, sample_ids(t, m, batch[m].B));
      loss += runner.forward_backward(model, batch[m], loss_scale(batch));
    }
    run.losses.push_back(loss);
    run.grads.emplace_back(model.grads(), model.grads() + model.num_params());
    const double norm = std::sqrt(model::sum_of_squares(model.grads(), model.num_params()));
    run.norms.push_back(norm);
    if (clip > 0) model::clip_grads(model.grads(), model.num_params(), norm, static_cast<float>(clip));
    adam.step(model.params(), model.grads(), kLr);
  }
  run.params.assign(model.params(), model.params() + model.num_params());
  return run;
}

// A clipping threshold that bites at step 0: 0.7 x the reference's first gradient norm.
double clip_that_bites() {
  const Run r = reference_run(0);
  return 0.7 * r.norms[0];
}

struct Reference {
  double clip = 0;
  Run run;
};
const Reference& reference() {
  static const Reference ref = [] {
    Reference r;
    r.clip = clip_that_bites();
    r.run = reference_run(r.clip);
    return r;
  }();
  return ref;
}

// ---------------------------------------------------------------- the distributed run

struct Distributed {
  Run run;  // params and grads: the whole local buffer (only the slice is meaningful);
            // grads: after each forward_backward, summed over the DP group
  ParamSlice slice;
  bool last_stage = false;
  int64_t peak_activation_bytes = 0;  // this rank's, over the run (runtime/memory_meter.h)
};

// share[d]: how many of the global batch's micro-batches replica d gets, in order
// (empty: an even split).
// partition: empty for partition_layers' balanced one.
Distributed distributed_run(int pp, int dp, ScheduleKind kind, double clip, std::vector<int> share = {},
                            std::vector<StageLayers> partition = {},
                            model::ActivationPolicy activations = model::ActivationPolicy::Keep) {
  if (share.empty()) share.assign(dp, kMicrosPerStep / dp);
  ProcessGrid grid(world(), pp, dp);
  const model::GPT2Config cfg = tiny_config();
  model::GPT2 model(cfg);
  model.init_weights(kInitSeed);
  ExecutorConfig ec;
  ec.schedule = kind;
  ec.adam = adam_config();
  ec.clip_norm = clip;
  ec.activations = activations;
  if (partition.empty()) partition = partition_layers(cfg.n_layer, pp, stage_costs(cfg));
  PipelineExecutor exe(model, grid, partition, ec);
  Distributed out;
  out.slice = exe.slice();
  out.last_stage = grid.last_stage();
  const int64_t base_bytes = ActivationMeter::current();
  ActivationMeter::reset_peak();
  for (int t = 0; t < kSteps; ++t) {
    const std::vector<model::SequenceBatch> global = global_batch(t);
    // DP replica d takes a contiguous share of the global batch.
    int m0 = 0;
    for (int d = 0; d < grid.dp_index(); ++d) m0 += share[d];
    const int per = share[grid.dp_index()];
    std::vector<model::SequenceBatch> mine(global.begin() + m0, global.begin() + m0 + per);
    std::vector<std::vector<int64_t>> ids;
    for (int m = 0; m < per; ++m) ids.push_back(sample_ids(t, m0 + m, mine[m].B));
    exe.set_dropout(kDropoutSeed, t, ids);
    out.run.losses.push_back(exe.forward_backward(mine, loss_scale(global)));
    std::vector<float>& g = out.run.grads.emplace_back(model.grads(), model.grads() + model.num_params());
    grid.data_parallel().all_reduce_sum(g.data(), g.size());
    out.run.norms.push_back(exe.optimizer_step(kLr));
  }
  out.run.params.assign(model.params(), model.params() + model.num_params());
  out.peak_activation_bytes = ActivationMeter::peak() - base_bytes;
  return out;
}

// ---------------------------------------------------------------- tolerances

// Gradients: 1e-5 relative, against a floor of 10% of the tensor's largest element for
// small elements (the floor of model/test_multipass_reference.cpp, which Hugging Face's
// own float32 run needs against a float64 reference).
const double kFloor = 1e-1;
// Weights that start at zero (biases) stay O(lr) in a few steps, far below the weights'
// scale; they are compared against 10% of the initialisation scale 0.02 as well.
const double kWeightFloor = 2e-3;

// The tolerance of a weight, beyond 1e-5 relative, that the gradient's own tolerance
// allows. Gradients are checked to about 1e-6 of their tensor's largest element (1e-5
// relative with a floor of 10%); Adam divides each gradient by its own magnitude, so an
// error d in a gradient g can move that weight by about lr * d / (|g| + eps) per step,
// at most 2 lr. That matters for elements whose gradient is near rounding level: a dead
// GELU unit's weights, or the key biases, whose gradient is zero in exact arithmetic
// (softmax ignores the shift q.b common to all of a query's scores), where any
// reassociation of the sums moves the weight by O(lr). For all others it is small next
// to the 1e-5 relative term.
std::vector<double> adam_tolerance(const Run& ref) {
  std::vector<double> tol(ref.params.size(), 0.0);
  const double eps = model::AdamWConfig{}.eps;
  const model::ParamLayout layout(tiny_config());
  for (const model::TensorSpec& t : layout.tensors())
    for (const std::vector<float>& g : ref.grads) {
      double max_abs = 0;
      for (size_t i = t.offset; i < t.offset + t.numel; ++i) max_abs = std::max(max_abs, std::fabs(double{g[i]}));
      const double d = 1e-5 * kFloor * max_abs;
      for (size_t i = t.offset; i < t.offset + t.numel; ++i)
        tol[i] += kLr * std::min(2.0, d / (std::fabs(double{g[i]}) + eps));
    }
  return tol;
}

// The worst |got - want| / bound over [begin, end) (<= 1 passes) and where, with
// bound = rel * max(|want|, floor * max|want| over the tensor, abs_floor) + extra.
struct Worst {
  double ratio = 0;
  size_t at = 0;
};
Worst compare(const std::vector<float>& got, const std::vector<float>& want, size_t begin, size_t end, double rel,
              double floor, double abs_floor, const std::vector<double>* extra = nullptr) {
  Worst worst;
  const model::ParamLayout layout(tiny_config());
  for (const model::TensorSpec& t : layout.tensors()) {
    const size_t b = std::max(begin, t.offset), e = std::min(end, t.offset + t.numel);
    if (b >= e) continue;
    double max_abs = 0;
    for (size_t i = t.offset; i < t.offset + t.numel; ++i)
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(want[i])));
    for (size_t i = b; i < e; ++i) {
      const double bound = rel * std::max({std::fabs(static_cast<double>(want[i])), floor * max_abs, abs_floor}) +
                           (extra ? (*extra)[i] : 0.0);
      const double r = std::fabs(static_cast<double>(got[i]) - want[i]) / bound;
      if (r > worst.ratio) worst = {r, i};
    }
  }
  return worst;
}

void expect_matches_reference(const Distributed& d, const std::string& what) {
  const Reference& ref = reference();
  for (int t = 0; t < kSteps; ++t) {
    EXPECT_NEAR(d.run.losses[t], ref.run.losses[t], 1e-5 * std::fabs(ref.run.losses[t])) << what << " step " << t;
    EXPECT_NEAR(d.run.norms[t], ref.run.norms[t], 1e-5 * ref.run.norms[t]) << what << " step " << t;
    // The gradient of the stage's slice (summed over replicas; stage 0's wte with the
    // LM head's part).
    const Worst g = compare(d.run.grads[t], ref.run.grads[t], d.slice.begin, d.slice.end, 1e-5, kFloor, 0);
    if (getenv("COCONUT_TEST_VERBOSE")) std::printf("%s step %d: worst gradient ratio %.3f\n", what.c_str(), t, g.ratio);
    EXPECT_LE(g.ratio, 1.0) << what << ": step " << t << " gradient " << g.at << " is " << d.run.grads[t][g.at]
                            << ", one process " << ref.run.grads[t][g.at];
  }
  // Weights after the last step (the last stage also holds the synced wte).
  std::vector<ParamSlice> ranges = {d.slice};
  if (d.last_stage && d.slice.begin > 0) ranges.push_back(wte_slice(model::ParamLayout(tiny_config())));
  const std::vector<double> adam = adam_tolerance(ref.run);
  for (const ParamSlice& r : ranges) {
    const Worst w = compare(d.run.params, ref.run.params, r.begin, r.end, 1e-5, kFloor, kWeightFloor, &adam);
    if (getenv("COCONUT_TEST_VERBOSE")) std::printf("%s: worst weight ratio %.3f\n", what.c_str(), w.ratio);
    EXPECT_LE(w.ratio, 1.0) << what << ": param " << w.at << " is " << d.run.params[w.at] << ", one process "
                            << ref.run.params[w.at];
  }
  // The weights moved at all (a step that did nothing would match a broken reference).
  double moved = 0;
  model::GPT2 init(tiny_config());
  init.init_weights(kInitSeed);
  for (size_t i = d.slice.begin; i < d.slice.end; ++i)
    moved = std::max(moved, std::fabs(static_cast<double>(d.run.params[i]) - init.params()[i]));
  EXPECT_GT(moved, kLr) << what;
}

void check_topology(int pp, int dp, const std::vector<StageLayers>& partition = {}) {
  ASSERT_EQ(world().size(), pp * dp) << "topology does not fit the job";
  for (ScheduleKind kind :
       {ScheduleKind::GPipe, ScheduleKind::GPipePassMajor, ScheduleKind::OneFOneB, ScheduleKind::Ring}) {
    const std::string what = "pp=" + std::to_string(pp) + " dp=" + std::to_string(dp) + " " + schedule_kind_name(kind);
    const auto start = std::chrono::steady_clock::now();
    const Distributed a = distributed_run(pp, dp, kind, reference().clip, {}, partition);
    const Distributed b = distributed_run(pp, dp, kind, reference().clip, {}, partition);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (world().rank() == 0) std::printf("  %s: two runs in %.2f s\n", what.c_str(), seconds);
    expect_matches_reference(a, what);
    // The same topology twice: identical bits.
    EXPECT_EQ(a.run.losses, b.run.losses) << what;
    EXPECT_EQ(std::memcmp(a.run.params.data() + a.slice.begin, b.run.params.data() + b.slice.begin,
                          a.slice.size() * sizeof(float)),
              0)
        << what << ": two runs of the same topology differ";
    // Every rank reports the same global loss.
    std::vector<double> loss = a.run.losses, root = a.run.losses;
    world().broadcast_bytes(root.data(), root.size() * sizeof(double), 0);
    EXPECT_EQ(loss, root) << what << ": ranks disagree on the loss";
  }
}

// ---------------------------------------------------------------- tests

TEST(Partition, BalancesLayersWithEmbeddingAndHeadCosts) {
  const StageCosts equal{1, 0, 0};
  EXPECT_EQ(partition_layers(4, 1, equal), (std::vector<StageLayers>{{0, 4}}));
  EXPECT_EQ(partition_layers(4, 2, equal), (std::vector<StageLayers>{{0, 2}, {2, 4}}));
  EXPECT_EQ(partition_layers(4, 4, equal), (std::vector<StageLayers>{{0, 1}, {1, 2}, {2, 3}, {3, 4}}));
  // A heavy LM head (1.5 layers) moves layers off the last stage: of 12 layers on 3
  // stages, 5 + 4 + (3 + 1.5) costs at most 5 where the even 4 + 4 + (4 + 1.5) costs 5.5.
  const std::vector<StageLayers> head = partition_layers(12, 3, {1, 0, 1.5});
  EXPECT_EQ(head.back().size(), 3);
  double worst = 0;
  for (int s = 0; s < 3; ++s) worst = std::max(worst, stage_cost(head[s], s, 3, {1, 0, 1.5}));
  EXPECT_EQ(worst, 5.0);
  // An expensive embedding moves layers off stage 0.
  EXPECT_EQ(partition_layers(6, 2, {1, 2, 0}), (std::vector<StageLayers>{{0, 2}, {2, 6}}));
  // The model-shaped costs of GPT-2 small (V = 50257, C = 768) on 12 layers and 4
  // stages give the last stage fewer layers than the first.
  model::GPT2Config gpt2;
  gpt2.vocab_size = 50257, gpt2.max_positions = 1024, gpt2.n_layer = 12, gpt2.n_head = 12, gpt2.d_model = 768;
  const std::vector<StageLayers> p = partition_layers(12, 4, stage_costs(gpt2));
  EXPECT_LT(p.back().size(), p.front().size());
}

TEST(Partition, MoreStagesThanLayersIsAClearError) {
  try {
    partition_layers(4, 5, {});
    ADD_FAILURE() << "5 stages accepted for 4 layers";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("5 stages for a model of 4 layers"), std::string::npos) << e.what();
  }
  EXPECT_THROW(partition_layers(4, 0, {}), Error);
  EXPECT_THROW(validate_partition({{0, 2}, {3, 4}}, 4), Error);  // a gap
  EXPECT_THROW(validate_partition({{0, 2}, {2, 3}}, 4), Error);  // short
}

TEST(Partition, SlicesCoverTheBufferOnce) {
  const model::ParamLayout layout(tiny_config());
  const std::vector<StageLayers> p = {{0, 1}, {1, 3}, {3, 4}};
  const ParamSlice s0 = stage_param_slice(layout, p, 0), s1 = stage_param_slice(layout, p, 1),
                   s2 = stage_param_slice(layout, p, 2);
  EXPECT_EQ(s0.begin, 0u);
  EXPECT_EQ(s0.end, layout.find("h.1.ln_1.weight").offset);  // wte, wpe, layer 0
  EXPECT_EQ(s1.begin, s0.end);
  EXPECT_EQ(s1.end, layout.find("h.3.ln_1.weight").offset);
  EXPECT_EQ(s2.begin, s1.end);
  EXPECT_EQ(s2.end, layout.total());  // includes ln_f
  EXPECT_EQ(layout.find("ln_f.bias").offset + layout.find("ln_f.bias").numel, layout.total());
  const ParamSlice all = stage_param_slice(layout, {{0, 4}}, 0);
  EXPECT_EQ(all.begin, 0u);
  EXPECT_EQ(all.end, layout.total());
  EXPECT_EQ(wte_slice(layout).end, static_cast<size_t>(40 * 32));
}

TEST(Partition, GradientBucketsAreTheLayersInOrder) {
  const model::ParamLayout layout(tiny_config());
  const std::vector<ParamSlice> b = layer_gradient_buckets(layout, 4);
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0].begin, 0u);  // wte and wpe go with layer 0: their gradient is final last
  EXPECT_EQ(b[0].end, layout.find("h.1.ln_1.weight").offset);
  for (int l = 1; l < 4; ++l) {
    EXPECT_EQ(b[l].begin, b[l - 1].end);
    EXPECT_EQ(b[l].begin, layout.find("h." + std::to_string(l) + ".ln_1.weight").offset);
  }
  EXPECT_EQ(b[3].end, layout.total());  // with ln_f
  EXPECT_EQ(b[3].end - b[3].begin, b[2].end - b[2].begin + layout.find("ln_f.weight").numel * 2);
}

TEST(Batches, HandBuiltCoconutPlansAreValid) {
  // The test's own data must be what it claims: valid plans with 1 to 4 passes.
  for (int t = 0; t < kSteps; ++t)
    for (const model::SequenceBatch& b : global_batch(t)) {
      EXPECT_NO_THROW(model::validate_batch(b, tiny_config()));
      EXPECT_GT(b.num_targets(), 0);
    }
  const model::SequenceBatch b = make_batch({{4, 3, 3}, {2, 1, 4}, {5, 0, 2}}, 0);
  ASSERT_EQ(b.passes.size(), 4u);
  EXPECT_EQ(b.passes[0].end, 5);  // f = question 4 + <bot>
  EXPECT_EQ(b.passes[0].feedback.size(), 2u);
  EXPECT_EQ(b.passes[1].feedback.size(), 1u);
  EXPECT_EQ(b.tokens[static_cast<size_t>(5) * 3 + 1], kLatent);  // sample 1 is left-padded by 2
  EXPECT_EQ(b.key_mask[1], 0);
}

// One process, one micro-batch (step 0's first), from the initial weights: MultipassRunner's
// forward and backward on `ref`, which keeps the gradient.
double one_process_micro_batch(model::GPT2& ref) {
  const std::vector<model::SequenceBatch> batch = {global_batch(0)[0]};
  ref.init_weights(kInitSeed);
  model::MultipassRunner runner;
  runner.set_dropout(kDropoutSeed, 0, sample_ids(0, 0, batch[0].B));
  ref.zero_grads();
  return runner.forward_backward(ref, batch[0], loss_scale(batch));
}

TEST(Pipeline, OneStageOneReplicaIsExactlyMultipassRunner) {
  if (world().size() != 1) GTEST_SKIP() << "runs with 1 rank";
  // One micro-batch: the same operations in the same order, so the same bits.
  const model::GPT2Config cfg = tiny_config();
  const std::vector<model::SequenceBatch> batch = {global_batch(0)[0]};
  const float scale = loss_scale(batch);
  model::GPT2 ref(cfg);
  const double ref_loss = one_process_micro_batch(ref);
  const std::vector<float> ref_grads(ref.grads(), ref.grads() + ref.num_params());
  model::AdamW adam({.lr = kLr}, ref.layout(), 0, ref.num_params());
  adam.step(ref.params(), ref.grads(), kLr);

  ProcessGrid grid(world(), 1, 1);
  model::GPT2 model(cfg);
  model.init_weights(kInitSeed);
  ExecutorConfig ec;
  ec.adam.lr = kLr;
  PipelineExecutor exe(model, grid, {{0, cfg.n_layer}}, ec);
  exe.set_dropout(kDropoutSeed, 0, {sample_ids(0, 0, batch[0].B)});
  const double loss = exe.forward_backward(batch, scale);
  EXPECT_EQ(loss, ref_loss);
  EXPECT_EQ(std::memcmp(model.grads(), ref_grads.data(), ref_grads.size() * sizeof(float)), 0);
  exe.optimizer_step(kLr);
  EXPECT_EQ(std::memcmp(model.params(), ref.params(), ref.num_params() * sizeof(float)), 0);
}

// model.thought_scale: the last stage scales the thoughts it sends around the ring and
// the gradient it takes back, as MultipassRunner does in one process. (0.01 brings the
// thoughts of the freshly initialised model nearer its token embeddings' scale.)
TEST(Pipeline, ScaledThoughtsMatchOneProcess) {
  const int pp = world().size();
  if (pp != 1 && pp != 2 && pp != 4) GTEST_SKIP() << "runs with 1, 2 or 4 ranks";
  const std::vector<model::SequenceBatch> batch = {global_batch(0)[0]};
  const float scale = loss_scale(batch);
  model::GPT2Config cfg = tiny_config();
  cfg.thought_scale = 0.01f;
  model::GPT2 ref(cfg), unscaled(tiny_config());
  const double ref_loss = one_process_micro_batch(ref);
  const std::vector<float> ref_grads(ref.grads(), ref.grads() + ref.num_params());
  // The scale moves the loss by ten times the comparison's tolerance or more: otherwise
  // the comparison below would not test it.
  EXPECT_GT(std::fabs(ref_loss - one_process_micro_batch(unscaled)), 1e-4 * std::fabs(ref_loss));

  ProcessGrid grid(world(), pp, 1);
  model::GPT2 model(cfg);
  model.init_weights(kInitSeed);
  ExecutorConfig ec;
  ec.adam.lr = kLr;
  PipelineExecutor exe(model, grid, partition_layers(cfg.n_layer, pp, stage_costs(cfg)), ec);
  exe.set_dropout(kDropoutSeed, 0, {sample_ids(0, 0, batch[0].B)});
  const double loss = exe.forward_backward(batch, scale);
  EXPECT_NEAR(loss, ref_loss, 1e-5 * std::fabs(ref_loss));
  const std::vector<float> grads(model.grads(), model.grads() + model.num_params());
  const Worst g = compare(grads, ref_grads, exe.slice().begin, exe.slice().end, 1e-5, kFloor, 0);
  EXPECT_LE(g.ratio, 1.0) << "gradient " << g.at << " is " << grads[g.at] << ", one process " << ref_grads[g.at];
}

TEST(Pipeline, ResetZeroesTheShardAndKeepsWeights) {
  // Curriculum stage switch: moments and step count go to zero on every shard.
  const int n = world().size();
  const int pp = n >= 2 ? 2 : 1, dp = n / pp;
  ProcessGrid grid(world(), pp, dp);
  const model::GPT2Config cfg = tiny_config();
  model::GPT2 model(cfg);
  model.init_weights(kInitSeed);
  PipelineExecutor exe(model, grid, partition_layers(cfg.n_layer, pp, stage_costs(cfg)), {});
  const std::vector<model::SequenceBatch> global = global_batch(0);
  const int per = kMicrosPerStep / dp, m0 = grid.dp_index() * per;
  std::vector<model::SequenceBatch> mine(global.begin() + m0, global.begin() + m0 + per);
  exe.set_dropout(kDropoutSeed, 0);
  exe.train_step(mine, loss_scale(global), kLr);
  EXPECT_EQ(exe.optimizer().step_count(), 1);
  double moments = 0;
  for (float x : exe.optimizer().v()) moments += x;
  if (!exe.optimizer().v().empty()) {
    EXPECT_GT(moments, 0);
  }
  const std::vector<float> kept(model.params(), model.params() + model.num_params());
  exe.reset_optimizer();
  EXPECT_EQ(exe.optimizer().step_count(), 0);
  for (float x : exe.optimizer().m()) ASSERT_EQ(x, 0.f);
  for (float x : exe.optimizer().v()) ASSERT_EQ(x, 0.f);
  EXPECT_EQ(std::memcmp(kept.data(), model.params(), kept.size() * sizeof(float)), 0);
}

TEST(Pipeline, DifferentBatchesOnTheStagesOfAReplicaFailTogether) {
  if (world().size() < 2) GTEST_SKIP() << "needs 2 stages";
  ProcessGrid grid(world(), world().size(), 1);
  const model::GPT2Config cfg = tiny_config();
  model::GPT2 model(cfg);
  model.init_weights(kInitSeed);
  PipelineExecutor exe(model, grid, partition_layers(cfg.n_layer, world().size(), stage_costs(cfg)), {});
  std::vector<model::SequenceBatch> batch = {global_batch(0)[world().rank() == 0 ? 0 : 1]};
  exe.set_dropout(kDropoutSeed, 0);
  try {
    exe.forward_backward(batch, 0.1f);
    ADD_FAILURE() << "stages with different micro-batches were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("must get the same micro-batches"), std::string::npos) << e.what();
  }
}

TEST(Pipeline, UnevenReplicasAndAReplicaWithoutData) {
  // The end of an epoch: one replica gets every micro-batch, the other none.
  const int n = world().size();
  if (n != 2 && n != 4) GTEST_SKIP() << "runs with 2 or 4 ranks";
  const int pp = n / 2;
  for (const std::vector<int>& share : {std::vector<int>{3, 1}, std::vector<int>{0, 4}}) {
    const std::string what = "pp=" + std::to_string(pp) + " dp=2 share " + std::to_string(share[0]) + "+" +
                             std::to_string(share[1]);
    expect_matches_reference(distributed_run(pp, 2, ScheduleKind::Ring, reference().clip, share), what);
  }
}

TEST(Pipeline, RecomputeEqualsKeepBitForBit) {
  // Recomputing each micro-stage's forward in its backward (dropout on) changes no bit
  // of the losses, gradients, norms or weights, and holds less activation memory.
  struct Case {
    int pp, dp;
    ScheduleKind kind;
  };
  const int n = world().size();
  std::vector<Case> cases;
  if (n == 1) cases = {{1, 1, ScheduleKind::GPipe}, {1, 1, ScheduleKind::Ring}};
  if (n == 2) cases = {{2, 1, ScheduleKind::Ring}, {2, 1, ScheduleKind::OneFOneB}, {1, 2, ScheduleKind::GPipePassMajor}};
  if (n == 4) cases = {{2, 2, ScheduleKind::Ring}, {4, 1, ScheduleKind::GPipe}};
  if (cases.empty()) GTEST_SKIP() << "runs with 1, 2 or 4 ranks";
  for (const Case& c : cases) {
    const std::string what = "pp=" + std::to_string(c.pp) + " dp=" + std::to_string(c.dp) + " " +
                             schedule_kind_name(c.kind);
    const double clip = reference().clip;
    const Distributed keep = distributed_run(c.pp, c.dp, c.kind, clip, {}, {}, model::ActivationPolicy::Keep);
    const Distributed again = distributed_run(c.pp, c.dp, c.kind, clip, {}, {}, model::ActivationPolicy::Recompute);
    EXPECT_EQ(keep.run.losses, again.run.losses) << what;
    EXPECT_EQ(keep.run.norms, again.run.norms) << what;
    for (int t = 0; t < kSteps; ++t)
      EXPECT_EQ(std::memcmp(keep.run.grads[t].data() + keep.slice.begin, again.run.grads[t].data() + keep.slice.begin,
                            keep.slice.size() * sizeof(float)),
                0)
          << what << ": step " << t << " gradients differ";
    EXPECT_EQ(std::memcmp(keep.run.params.data() + keep.slice.begin, again.run.params.data() + keep.slice.begin,
                          keep.slice.size() * sizeof(float)),
              0)
        << what << ": weights differ";
    expect_matches_reference(again, what + " recompute");
    if (getenv("COCONUT_TEST_VERBOSE"))
      std::printf("%s rank %d: peak activation bytes keep %lld, recompute %lld\n", what.c_str(), world().rank(),
                  static_cast<long long>(keep.peak_activation_bytes),
                  static_cast<long long>(again.peak_activation_bytes));
    EXPECT_LT(again.peak_activation_bytes, keep.peak_activation_bytes) << what;
  }
}

TEST(Pipeline, MatchesOneProcessOnEveryTopologyAndSchedule) {
  const int n = world().size();
  if (n == 1) check_topology(1, 1);
  if (n == 2) check_topology(2, 1), check_topology(1, 2);
  // (2, 2) with an unbalanced cut: a 3-layer first stage, a 1-layer last stage.
  if (n == 4) check_topology(4, 1), check_topology(2, 2, {{0, 3}, {3, 4}});
  if (n != 1 && n != 2 && n != 4) GTEST_SKIP() << "runs with 1, 2 or 4 ranks";
}

}  // namespace
}  // namespace coconut::parallel
