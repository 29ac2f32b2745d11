// Peak activation memory against the number of thoughts (see activation_memory.h).
#include "bench/activation_memory.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "bench/synthetic_batch.h"
#include "model/multipass.h"
#include "parallel/comm.h"
#include "parallel/executor.h"
#include "parallel/grid.h"
#include "parallel/partition.h"
#include "runtime/check.h"
#include "runtime/memory_meter.h"
#include "runtime/threads.h"
#include "runtime/timer.h"

namespace coconut::bench {

namespace {

// This process's peak resident set so far, in bytes (Linux reports KiB).
double peak_rss_bytes() {
  rusage u{};
  COCONUT_CHECK(getrusage(RUSAGE_SELF, &u) == 0, "getrusage failed");
  return static_cast<double>(u.ru_maxrss) * 1024.0;
}

double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

// The step's micro-batches: every sample has n thoughts; seeds differ per micro-batch.
std::vector<model::SequenceBatch> micro_batches(const MemoryBenchOptions& o, int n) {
  std::vector<model::SequenceBatch> out;
  for (int m = 0; m < o.micro_batches; ++m)
    out.push_back(make_synthetic_batch(prosqa_like_samples(o.micro_batch, o.question, n, o.rest, 100 + m),
                                       o.model.vocab_size, 200 + m));
  return out;
}

float loss_scale(const std::vector<model::SequenceBatch>& micro) {
  int targets = 0;
  for (const model::SequenceBatch& b : micro) targets += b.num_targets();
  return 1.f / static_cast<float>(targets);
}

// One configuration's figures on this rank.
struct Figures {
  double peak_bytes = 0;       // measured: activation buffers at the peak
  double simulated_bytes = 0;  // the simulator's peak of per-micro-batch buffers (pipeline only)
  double step_seconds = 0;     // mean over the timed steps
  double rss_bytes = 0;        // process peak RSS so far
};

// One process, as `coconut train` without MPI: the runner over the micro-batches.
Figures run_one_process(model::GPT2& gpt, const std::vector<model::SequenceBatch>& micro,
                        model::ActivationPolicy policy, int steps) {
  const float scale = loss_scale(micro);
  const int64_t base = ActivationMeter::current();
  ActivationMeter::reset_peak();
  Figures f;
  {
    model::MultipassRunner runner;
    runner.set_activation_policy(policy);
    for (int step = 0; step <= steps; ++step) {  // step 0 warms up
      Timer t;
      gpt.zero_grads();
      for (const model::SequenceBatch& b : micro) runner.forward_backward(gpt, b, scale);
      if (step > 0) f.step_seconds += t.seconds() / steps;
    }
  }
  f.peak_bytes = static_cast<double>(ActivationMeter::peak() - base);
  f.rss_bytes = peak_rss_bytes();
  return f;
}

// One rank of the pipeline (pp stages, one replica): forward_backward + optimizer step.
Figures run_pipeline(model::GPT2& gpt, parallel::ProcessGrid& grid, const std::vector<model::SequenceBatch>& micro,
                     const MemoryBenchOptions& o, model::ActivationPolicy policy) {
  parallel::ExecutorConfig ec;
  ec.schedule = parallel::parse_schedule_kind(o.schedule);
  ec.activations = policy;
  const float scale = loss_scale(micro);
  const int64_t base = ActivationMeter::current();
  ActivationMeter::reset_peak();
  Figures f;
  {
    parallel::PipelineExecutor exe(gpt, grid, parallel::partition_layers(o.model.n_layer, o.pp,
                                                                         parallel::stage_costs(o.model)),
                                   ec);
    for (int step = 0; step <= o.steps; ++step) {
      grid.pipeline().barrier();
      Timer t;
      exe.train_step(micro, scale, 1e-4f);
      if (step > 0) f.step_seconds += t.seconds() / o.steps;
    }
    f.simulated_bytes = exe.last_timing().simulated_peak_bytes;
  }
  f.peak_bytes = static_cast<double>(ActivationMeter::peak() - base);
  f.rss_bytes = peak_rss_bytes();
  return f;
}

}  // namespace

int run_memory_bench(const MemoryBenchOptions& o, parallel::Communicator* world) {
  const int ranks = world ? world->size() : 1, rank = world ? world->rank() : 0;
  COCONUT_CHECK(o.pp >= 1 && o.pp <= o.model.n_layer, "bench memory: --pp {} must be in [1, layers = {}]", o.pp,
                o.model.n_layer);
  COCONUT_CHECK(ranks == o.pp, "bench memory: --pp {} needs exactly {} ranks (mpirun -np {}), this job has {}", o.pp,
                o.pp, o.pp, ranks);
  COCONUT_CHECK(1 <= o.min_thoughts && o.min_thoughts <= o.max_thoughts,
                "bench memory: thoughts {}..{} is not a range of at least 1", o.min_thoughts, o.max_thoughts);
  set_num_threads(o.threads);
  model::GPT2 gpt(o.model);
  gpt.init_weights(1);
  std::unique_ptr<parallel::ProcessGrid> grid;
  if (o.pp > 1) grid = std::make_unique<parallel::ProcessGrid>(*world, o.pp, 1);

  if (rank == 0) {
    fmt::print("peak activation memory per rank: {} layers, d_model {}, {} heads, {} micro-batches of {} samples, "
               "question ~{} tokens, answer {}; {}\n",
               o.model.n_layer, o.model.d_model, o.model.n_head, o.micro_batches, o.micro_batch, o.question, o.rest,
               o.pp == 1 ? std::string("one process (MultipassRunner, as coconut train)")
                         : fmt::format("{} pipeline stages, {} schedule", o.pp, o.schedule));
    fmt::print("measured = bytes of activation buffers allocated at the peak (runtime/memory_meter.h); "
               "RSS = process peak RSS so far (getrusage, monotone)\n");
    if (o.pp > 1)
      fmt::print("simulated = the simulator's peak of per-micro-batch bytes for the same schedule (without the "
                 "stage's shared workspace and scratch)\n");
    fmt::print("\n| thoughts | passes | policy | rank | measured MiB | {}step s | RSS MiB |\n", o.pp > 1 ? "simulated MiB | " : "");
    fmt::print("|---:|---:|---|---:|---:|{}---:|---:|\n", o.pp > 1 ? "---:|" : "");
  }
  // Recompute first: the RSS high-water mark then grows with the thoughts within each
  // policy, and the keep rows show where RSS goes above the recompute maximum.
  for (model::ActivationPolicy policy : {model::ActivationPolicy::Recompute, model::ActivationPolicy::Keep}) {
    for (int n = o.min_thoughts; n <= o.max_thoughts; ++n) {
      const std::vector<model::SequenceBatch> micro = micro_batches(o, n);
      const Figures f = o.pp == 1 ? run_one_process(gpt, micro, policy, o.steps) : run_pipeline(gpt, *grid, micro, o, policy);
      // Every rank's figures to rank 0.
      std::vector<double> all(4 * static_cast<size_t>(ranks), 0.0);
      all[4 * rank + 0] = f.peak_bytes, all[4 * rank + 1] = f.simulated_bytes;
      all[4 * rank + 2] = f.step_seconds, all[4 * rank + 3] = f.rss_bytes;
      if (world && ranks > 1) world->all_reduce_sum(all.data(), all.size());
      if (rank != 0) continue;
      for (int r = 0; r < ranks; ++r) {
        const double* x = &all[4 * r];
        fmt::print("| {} | {} | {} | {} | {:.2f} | {}{:.3f} | {:.1f} |\n", n, n + 1,
                   model::activation_policy_name(policy), r, mib(x[0]),
                   o.pp > 1 ? fmt::format("{:.2f} | ", mib(x[1])) : std::string(), x[2], mib(x[3]));
      }
    }
  }
  return 0;
}

}  // namespace coconut::bench
