// Peak activation memory against the number of thoughts (see activation_memory.h).
#include "bench/activation_memory.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <functional>
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

// One process, as `coconut train` without MPI: the runner over the micro-batches.
MemoryRow run_one_process(model::GPT2& gpt, const std::vector<model::SequenceBatch>& micro,
                          model::ActivationPolicy policy, int steps) {
  const float scale = loss_scale(micro);
  const int64_t base = ActivationMeter::current();
  ActivationMeter::reset_peak();
  MemoryRow f;
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
MemoryRow run_pipeline(model::GPT2& gpt, parallel::ProcessGrid& grid, const std::vector<model::SequenceBatch>& micro,
                       const MemoryBenchOptions& o, const std::string& schedule, model::ActivationPolicy policy) {
  parallel::ExecutorConfig ec;
  ec.schedule = parallel::parse_schedule_kind(schedule);
  ec.activations = policy;
  const float scale = loss_scale(micro);
  const int64_t base = ActivationMeter::current();
  ActivationMeter::reset_peak();
  MemoryRow f;
  {
    parallel::PipelineExecutor exe(gpt, grid, parallel::partition_layers(o.model.n_layer, o.pp,
                                                                         parallel::stage_costs(o.model)),
                                   ec);
    double busy = 0, wall = 0, simulated = 0;  // over the timed steps, as train_loop.cpp sums them
    for (int step = 0; step <= o.steps; ++step) {
      grid.pipeline().barrier();
      Timer t;
      exe.train_step(micro, scale, 1e-4f);
      if (step == 0) continue;
      f.step_seconds += t.seconds() / o.steps;
      const parallel::StepTiming& timing = exe.last_timing();
      busy += timing.busy_seconds, wall += timing.wall_seconds;
      simulated += timing.simulated_bubble * timing.wall_seconds;
    }
    f.simulated_bytes = exe.last_timing().simulated_peak_bytes;
    f.bubble_measured = wall > 0 ? 1.0 - busy / wall : 0.0;
    f.bubble_simulated = wall > 0 ? simulated / wall : 0.0;
  }
  f.peak_bytes = static_cast<double>(ActivationMeter::peak() - base);
  f.rss_bytes = peak_rss_bytes();
  return f;
}

// The fields of a row that travel to rank 0 (the strings are the same on every rank).
constexpr size_t kRowFields = 7;

}  // namespace

std::vector<MemoryRow> measure_memory(const MemoryBenchOptions& o, parallel::Communicator* world,
                                      const std::function<void(const MemoryRow&)>& on_row) {
  const int ranks = world ? world->size() : 1, rank = world ? world->rank() : 0;
  COCONUT_CHECK(o.pp >= 1 && o.pp <= o.model.n_layer, "bench memory: --pp {} must be in [1, layers = {}]", o.pp,
                o.model.n_layer);
  COCONUT_CHECK(ranks == o.pp, "bench memory: --pp {} needs exactly {} ranks (mpirun -np {}), this job has {}", o.pp,
                o.pp, o.pp, ranks);
  COCONUT_CHECK(1 <= o.min_thoughts && o.min_thoughts <= o.max_thoughts,
                "bench memory: thoughts {}..{} is not a range of at least 1", o.min_thoughts, o.max_thoughts);
  COCONUT_CHECK(!o.policies.empty() && !o.schedules.empty(), "bench memory: no activation policy or schedule");
  set_num_threads(o.threads);
  model::GPT2 gpt(o.model);
  gpt.init_weights(1);
  std::unique_ptr<parallel::ProcessGrid> grid;
  if (o.pp > 1) grid = std::make_unique<parallel::ProcessGrid>(*world, o.pp, 1);

  // One process has no schedule: run its configurations once.
  const std::vector<std::string> schedules = o.pp > 1 ? o.schedules : std::vector<std::string>{""};
  std::vector<MemoryRow> rows;
  for (const std::string& schedule : schedules) {
    for (model::ActivationPolicy policy : o.policies) {
      for (int n = o.min_thoughts; n <= o.max_thoughts; ++n) {
        const std::vector<model::SequenceBatch> micro = micro_batches(o, n);
        const MemoryRow f = o.pp == 1 ? run_one_process(gpt, micro, policy, o.steps)
                                      : run_pipeline(gpt, *grid, micro, o, schedule, policy);
        // Every rank's figures to rank 0.
        std::vector<double> all(kRowFields * static_cast<size_t>(ranks), 0.0);
        double* mine = &all[kRowFields * rank];
        mine[0] = f.peak_bytes, mine[1] = f.simulated_bytes, mine[2] = f.step_seconds, mine[3] = f.rss_bytes;
        mine[4] = f.bubble_measured, mine[5] = f.bubble_simulated, mine[6] = 1;
        if (world && ranks > 1) world->all_reduce_sum(all.data(), all.size());
        if (rank != 0) continue;
        for (int r = 0; r < ranks; ++r) {
          const double* x = &all[kRowFields * r];
          COCONUT_CHECK(x[6] == 1, "bench memory: rank {} sent no figures", r);
          MemoryRow row;
          row.schedule = schedule, row.policy = policy, row.thoughts = n, row.rank = r;
          row.peak_bytes = x[0], row.simulated_bytes = x[1], row.step_seconds = x[2], row.rss_bytes = x[3];
          row.bubble_measured = x[4], row.bubble_simulated = x[5];
          rows.push_back(row);
          if (on_row) on_row(row);
        }
      }
    }
  }
  return rows;
}

int run_memory_bench(const MemoryBenchOptions& o, parallel::Communicator* world) {
  const int rank = world ? world->rank() : 0;
  const bool pipeline = o.pp > 1;
  if (rank == 0 && !o.json) {
    fmt::print("peak activation memory per rank: {} layers, d_model {}, {} heads, {} micro-batches of {} samples, "
               "question ~{} tokens, answer {}; {}\n",
               o.model.n_layer, o.model.d_model, o.model.n_head, o.micro_batches, o.micro_batch, o.question, o.rest,
               pipeline ? fmt::format("{} pipeline stages", o.pp)
                        : std::string("one process (MultipassRunner, as coconut train)"));
    fmt::print("measured = bytes of activation buffers allocated at the peak (runtime/memory_meter.h); "
               "RSS = process peak RSS so far (getrusage, monotone)\n");
    if (pipeline)
      fmt::print("simulated = the simulator's peak of per-micro-batch bytes for the same schedule (without the "
                 "stage's shared workspace and scratch); bubble = 1 - busy / op-list time over the timed steps, "
                 "measured by the executor / simulated for the same schedule\n");
    fmt::print("\n| {}thoughts | passes | policy | rank | measured MiB | {}step s | RSS MiB |\n",
               pipeline ? "schedule | " : "", pipeline ? "simulated MiB | bubble measured / simulated | " : "");
    fmt::print("|{}---:|---:|---|---:|---:|{}---:|---:|\n", pipeline ? "---|" : "", pipeline ? "---:|---:|" : "");
  }
  // Each row as soon as every rank has measured it.
  measure_memory(o, world, [&](const MemoryRow& r) {
    if (o.json) {
      fmt::print("{}\n", memory_row_json(r).dump());
    } else {
      fmt::print("| {}{} | {} | {} | {} | {:.2f} | {}{:.3f} | {:.1f} |\n", pipeline ? r.schedule + " | " : "",
                 r.thoughts, r.thoughts + 1, model::activation_policy_name(r.policy), r.rank, mib(r.peak_bytes),
                 pipeline ? fmt::format("{:.2f} | {:.3f} / {:.3f} | ", mib(r.simulated_bytes), r.bubble_measured,
                                        r.bubble_simulated)
                          : std::string(),
                 r.step_seconds, mib(r.rss_bytes));
    }
    std::fflush(stdout);
  });
  return 0;
}

nlohmann::json memory_row_json(const MemoryRow& r) {
  return {{"schedule", r.schedule},
          {"policy", model::activation_policy_name(r.policy)},
          {"thoughts", r.thoughts},
          {"rank", r.rank},
          {"peak_bytes", r.peak_bytes},
          {"simulated_bytes", r.simulated_bytes},
          {"step_seconds", r.step_seconds},
          {"rss_bytes", r.rss_bytes},
          {"bubble_measured", r.bubble_measured},
          {"bubble_simulated", r.bubble_simulated}};
}

MemoryRow memory_row_from_json(const nlohmann::json& j) {
  MemoryRow r;
  try {
    r.schedule = j.at("schedule").get<std::string>();
    r.policy = model::parse_activation_policy(j.at("policy").get<std::string>());
    r.thoughts = j.at("thoughts").get<int>();
    r.rank = j.at("rank").get<int>();
    r.peak_bytes = j.at("peak_bytes").get<double>();
    r.simulated_bytes = j.at("simulated_bytes").get<double>();
    r.step_seconds = j.at("step_seconds").get<double>();
    r.rss_bytes = j.at("rss_bytes").get<double>();
    r.bubble_measured = j.at("bubble_measured").get<double>();
    r.bubble_simulated = j.at("bubble_simulated").get<double>();
  } catch (const nlohmann::json::exception& e) {
    COCONUT_FAIL("bench memory: a JSON row lacks a field or has a wrong type ({}): {}", e.what(), j.dump());
  }
  return r;
}

}  // namespace coconut::bench
