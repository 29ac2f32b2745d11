// `coconut bench memory`: peak activation memory per rank against the number of
// continuous thoughts (latent passes), with the keep and the recompute activation
// policies (model/gpt2.h ActivationPolicy), on ProsQA-shaped micro-batches.
//
// Peak bytes are measured by runtime/memory_meter.h (every activation buffer is
// allocated through it); the process's peak RSS (getrusage) is printed next to them as
// a cross-check. With --pp 1 it runs in one process like `coconut train` does
// (MultipassRunner over the micro-batches, gradient accumulation); under
// `mpirun -np S coconut bench memory --pp S` it runs the pipeline executor and prints
// every rank's figures next to the simulator's predicted peak for the same schedule,
// and the rank's pipeline bubble as measured by the executor next to the simulator's.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/gpt2.h"

namespace coconut::parallel {
class Communicator;
}

namespace coconut::bench {

struct MemoryBenchOptions {
  model::GPT2Config model;     // defaults set by the caller: 4 layers, d_model 128
  int min_thoughts = 1, max_thoughts = 8;
  int micro_batch = 8;         // sequences per micro-batch
  int micro_batches = 4;       // per step
  int question = 60;           // question tokens (spread +-25% over samples)
  int rest = 10;               // answer tokens
  int steps = 2;               // timed steps after one warm-up step
  int pp = 1;                  // pipeline stages (the MPI world size must equal pp)
  std::vector<std::string> schedules = {"ring"};  // with pp > 1: each in turn
  // Recompute first by default: the RSS high-water mark then grows with the thoughts
  // within each policy, and the keep rows show where RSS goes above recompute's maximum.
  std::vector<model::ActivationPolicy> policies = {model::ActivationPolicy::Recompute,
                                                   model::ActivationPolicy::Keep};
  int threads = 0;             // 0: all cores / ranks
  bool json = false;           // run_memory_bench: one JSON object per row instead of the table
};

// One configuration's figures on one rank.
struct MemoryRow {
  std::string schedule;        // "" for one process
  model::ActivationPolicy policy = model::ActivationPolicy::Keep;
  int thoughts = 0, rank = 0;
  double peak_bytes = 0;       // measured: activation buffers at the peak
  double simulated_bytes = 0;  // the simulator's peak of per-micro-batch bytes (pipeline only)
  double step_seconds = 0;     // mean over the timed steps
  double rss_bytes = 0;        // process peak RSS so far
  // Pipeline only, over the timed steps: 1 - time in Forward/Backward ops / time of the
  // op lists (the executor's StepTiming), and the simulator's bubble for the same
  // schedule and plans (wall-weighted mean over the steps).
  double bubble_measured = 0, bubble_simulated = 0;
};

// Runs every (schedule, policy, thoughts) configuration; returns every rank's rows on
// rank 0 (nothing on the others), prints nothing; on_row (rank 0) sees each row as soon
// as it is measured. world: null for pp 1 (no MPI needed).
std::vector<MemoryRow> measure_memory(const MemoryBenchOptions& options, parallel::Communicator* world,
                                      const std::function<void(const MemoryRow&)>& on_row = {});

// Prints the table (or with options.json one JSON object per line) on rank 0.
int run_memory_bench(const MemoryBenchOptions& options, parallel::Communicator* world);

// A row as the JSON object `--json` prints, and back (throws coconut::Error naming a
// missing or mistyped field).
nlohmann::json memory_row_json(const MemoryRow& row);
MemoryRow memory_row_from_json(const nlohmann::json& j);

}  // namespace coconut::bench
