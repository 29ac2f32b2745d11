// `coconut bench`: benchmarks that print figures.
#include <fmt/format.h>

#include "bench/activation_memory.h"
#include "bench/bench_all.h"
#include "bench/ckpt_bench.h"
#include "bench/coconut_step.h"
#include "bench/gpt2_step.h"
#include "bench/options.h"
#include "bench/schedule_sim.h"
#include "bench/synthetic_batch.h"
#include "launcher/commands.h"
#include "parallel/comm.h"

namespace coconut::launcher {

std::string option_value(const std::vector<std::string>& args, size_t& i) {
  if (i + 1 >= args.size()) throw UsageError(fmt::format("option {} needs a value", args[i]));
  return args[++i];
}

int option_int(const std::vector<std::string>& args, size_t& i, int min, int max) {
  const std::string name = args[i], text = option_value(args, i);
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || v < min || v > max)
    throw UsageError(fmt::format("option {} expects an integer in [{}, {}], got '{}'", name, min, max, text));
  return v;
}

namespace {

// A drop probability in [0, 1).
float option_probability(const std::vector<std::string>& args, size_t& i) {
  const std::string name = args[i], text = option_value(args, i);
  size_t used = 0;
  float v = -1;
  try {
    v = std::stof(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !(v >= 0 && v < 1))
    throw UsageError(fmt::format("option {} expects a probability in [0, 1), got '{}'", name, text));
  return v;
}

// Options every model benchmark takes: the model's shape and the thread count. Returns
// whether args[i] was one of them (and consumes its value).
bool model_option(const std::vector<std::string>& args, size_t& i, model::GPT2Config& model, int& threads) {
  const std::string& a = args[i];
  if (a == "--threads") threads = option_int(args, i, 0, 1024);
  else if (a == "--layers") model.n_layer = option_int(args, i, 1, 1000);
  else if (a == "--d-model") model.d_model = option_int(args, i, 1, 100000);
  else if (a == "--heads") model.n_head = option_int(args, i, 1, 1000);
  else if (a == "--vocab") model.vocab_size = option_int(args, i, 9, 10000000);
  else if (a == "--positions") model.max_positions = option_int(args, i, 2, 100000);
  else return false;
  return true;
}

int bench_coconut(const std::vector<std::string>& args, const char* help) {
  bench::CoconutStepOptions o;
  o.model = bench::synthetic_model(4, 256, 4);
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--batch") o.batch = option_int(args, i, 1, 4096);
    else if (a == "--question") o.question = option_int(args, i, 1, 4096);
    else if (a == "--thoughts") o.thoughts = option_int(args, i, 0, 256);
    else if (a == "--rest") o.rest = option_int(args, i, 1, 4096);
    else if (a == "--steps") o.steps = option_int(args, i, 1, 100000);
    else if (a == "--warmup") o.warmup = option_int(args, i, 0, 1000);
    else if (model_option(args, i, o.model, o.threads)) continue;
    else if (a == "--no-torch") o.torch_peer = false;
    else if (a == "--gap-ms") o.gap_ms = option_int(args, i, 0, 100000);
    else throw UsageError(fmt::format("unknown option '{}'\n{}", a, help));
  }
  return bench::run_coconut_step_bench(o);
}

// --policy keep | recompute | both (both: recompute first, see MemoryBenchOptions).
std::vector<model::ActivationPolicy> policies(const std::string& text) {
  if (text == "keep") return {model::ActivationPolicy::Keep};
  if (text == "recompute") return {model::ActivationPolicy::Recompute};
  if (text == "both") return {model::ActivationPolicy::Recompute, model::ActivationPolicy::Keep};
  throw UsageError(fmt::format("--policy expects keep, recompute or both, got '{}'", text));
}

// `coconut bench memory`: one process, or under mpirun one rank per pipeline stage.
int bench_memory(const std::vector<std::string>& args, const char* help) {
  bench::MemoryBenchOptions o;
  o.model = bench::synthetic_model(4, 128, 4);
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--pp") o.pp = option_int(args, i, 1, 1024);
    else if (a == "--schedule") o.schedules = bench::split_list(option_value(args, i));
    else if (a == "--policy") o.policies = policies(option_value(args, i));
    else if (a == "--json") o.json = true;
    else if (a == "--min-thoughts") o.min_thoughts = option_int(args, i, 1, 1000);
    else if (a == "--max-thoughts") o.max_thoughts = option_int(args, i, 1, 1000);
    else if (a == "--micro-batch") o.micro_batch = option_int(args, i, 1, 4096);
    else if (a == "--micro-batches") o.micro_batches = option_int(args, i, 1, 4096);
    else if (a == "--question") o.question = option_int(args, i, 1, 4096);
    else if (a == "--rest") o.rest = option_int(args, i, 1, 4096);
    else if (a == "--steps") o.steps = option_int(args, i, 1, 100000);
    else if (model_option(args, i, o.model, o.threads)) continue;
    else throw UsageError(fmt::format("unknown option '{}'\n{}", a, help));
  }
  for (const std::string& schedule : o.schedules)
    if (schedule != "gpipe" && schedule != "gpipe-pass" && schedule != "1f1b" && schedule != "ring")
      throw UsageError(fmt::format("--schedule expects gpipe, gpipe-pass, 1f1b or ring (or a comma-separated list), "
                                   "got '{}'", schedule));
  if (o.min_thoughts > o.max_thoughts)
    throw UsageError(fmt::format("--min-thoughts {} is above --max-thoughts {}", o.min_thoughts, o.max_thoughts));
  if (o.model.d_model % o.model.n_head != 0)
    throw UsageError(fmt::format("--d-model {} must be a multiple of --heads {}", o.model.d_model, o.model.n_head));
  if (o.pp > o.model.n_layer)
    throw UsageError(fmt::format("--pp {} is more stages than --layers {}", o.pp, o.model.n_layer));
  // One process or an MPI job: MPI initialises as a singleton otherwise.
  parallel::MpiRuntime mpi(nullptr, nullptr);
  auto world = parallel::MpiCommunicator::world();
  if (world->size() != o.pp)
    throw UsageError(fmt::format("--pp {} needs exactly {} ranks (mpirun -np {}), this job has {}", o.pp, o.pp, o.pp,
                                 world->size()));
  try {
    return bench::run_memory_bench(o, world.get());
  } catch (const Error& e) {
    if (world->size() > 1) parallel::abort_all(e.what());
    throw;
  }
}

// `coconut bench all`: every benchmark in one Markdown document (bench/bench_all.h).
int bench_all(const std::vector<std::string>& args, const char* help) {
  bench::BenchAllOptions o;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--quick") o.quick = true;
    else if (a == "--threads") o.threads = option_int(args, i, 0, 1024);
    else if (a == "--no-torch") o.torch = false;
    else if (a == "--dir") o.dir = option_value(args, i);
    else if (a == "--keep") o.keep = true;
    else if (a == "--mpirun") o.mpirun = option_value(args, i);
    else throw UsageError(fmt::format("unknown option '{}'\n{}", a, help));
  }
  return bench::run_bench_all(o);
}

// `coconut bench ckpt`: one process or an MPI job (each rank saves its share).
int bench_ckpt(const std::vector<std::string>& args, const char* help) {
  bench::CkptBenchOptions o;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--params") o.params = static_cast<uint64_t>(option_int(args, i, 1, 2000000000));
    else if (a == "--dir") o.dir = option_value(args, i);
    else if (a == "--repeats") o.repeats = option_int(args, i, 1, 100);
    else if (a == "--keep") o.keep = true;
    else throw UsageError(fmt::format("unknown option '{}'\n{}", a, help));
  }
  parallel::MpiRuntime mpi(nullptr, nullptr);
  auto world = parallel::MpiCommunicator::world();
  try {
    return bench::run_ckpt_bench(o, *world);
  } catch (const Error& e) {
    if (world->size() > 1) parallel::abort_all(e.what());
    throw;
  }
}

}  // namespace

int cmd_bench(const std::vector<std::string>& args) {
  const char* help =
      "usage: coconut bench all [--quick] [--threads N] [--no-torch] [--dir DIR] [--keep] [--mpirun PATH]\n"
      "  Every benchmark below in one Markdown document (summary table first): Coconut step vs PyTorch and %\n"
      "  of SGEMM peak, memory and step time for 1..8 thoughts (keep/recompute), pipeline bubble measured vs\n"
      "  simulated per schedule (a child `mpirun --oversubscribe -np 2 coconut bench memory --pp 2 --json`),\n"
      "  checkpoint save/load vs plain write/read (scratch in DIR, default ./bench_all). A few minutes on\n"
      "  2 cores; --quick: small shapes, under a minute. As root, mpirun needs cluster/env.sh.\n"
      "usage: coconut bench gpt2 [--batch N] [--seq-len N] [--steps N] [--threads N] [--layers N]\n"
      "                          [--d-model N] [--heads N] [--dropout P] [--no-torch]\n"
      "  Times a GPT-2 training step (default: the 124M shape, batch 4 x 128) on the CPU backend,\n"
      "  prints tokens/s, GFLOP/s against the measured SGEMM peak, and the same step in PyTorch.\n"
      "usage: coconut bench coconut [--batch N] [--question N] [--thoughts N] [--rest N] [--steps N]\n"
      "                             [--threads N] [--layers N] [--d-model N] [--heads N] [--vocab N] [--no-torch]\n"
      "                             [--gap-ms N]\n"
      "  Times a Coconut training step (all latent passes, BPTT, AdamW) on a ProsQA-shaped batch\n"
      "  (default: 4 layers, d_model 256, vocab 128, 16 samples, 6 thoughts) against a PyTorch peer\n"
      "  that replays the same batch from the same weights, step for step alternated, --gap-ms apart\n"
      "  (default 100: OpenMP threads spin after a step and would slow the other side's).\n"
      "usage: [mpirun -np S] coconut bench memory [--pp S] [--schedule ring[,gpipe,...]] [--policy both|keep|recompute]\n"
      "                          [--min-thoughts 1] [--max-thoughts 8] [--micro-batch 8] [--micro-batches 4]\n"
      "                          [--question 60] [--rest 10] [--steps 2] [--threads N] [--layers 4] [--d-model 128]\n"
      "                          [--heads 4] [--json]\n"
      "  Peak activation memory per rank (measured where the buffers are allocated) and step time against\n"
      "  the number of continuous thoughts, keep vs recompute; with --pp > 1 next to the simulator's peak,\n"
      "  and each rank's pipeline bubble measured by the executor next to the simulator's, per schedule.\n"
      "  --json: one JSON object per row instead of the table.\n"
      "usage: [mpirun -np N] coconut bench ckpt [--params N] [--dir DIR] [--repeats N] [--keep]\n"
      "  Checkpoint save/load MB/s of 3 tensors x N floats (default GPT-2 124M: 1.49 GB) next to a plain\n"
      "  write + fsync and read of the same bytes in DIR (default ./ckpt_bench, removed afterwards),\n"
      "  and the time an asynchronous save blocks the caller.\n"
      "usage: coconut bench schedule [--passes N] [--max-in-flight N]\n"
      "  Simulated bubble fraction and activation memory of the pipeline schedules (GPipe, 1F1B, ring).\n";
  if (args.empty() || args[0] == "--help") {
    fmt::print("{}", help);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "schedule") {
    bench::ScheduleBenchOptions so;
    for (size_t i = 1; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a == "--passes") so.passes = option_int(args, i, 2, 1000);
      else if (a == "--max-in-flight") so.max_in_flight = option_int(args, i, 0, 100000);
      else throw UsageError(fmt::format("unknown option '{}'\n{}", a, help));
    }
    return bench::run_schedule_bench(so);
  }
  if (args[0] == "all") return bench_all(args, help);
  if (args[0] == "coconut") return bench_coconut(args, help);
  if (args[0] == "memory") return bench_memory(args, help);
  if (args[0] == "ckpt") return bench_ckpt(args, help);
  if (args[0] != "gpt2") throw UsageError(fmt::format("unknown benchmark '{}'\n{}", args[0], help));
  bench::Gpt2StepOptions o;
  o.model.vocab_size = 50257;
  o.model.max_positions = 1024;
  o.model.n_layer = 12;
  o.model.n_head = 12;
  o.model.d_model = 768;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--batch") o.batch = option_int(args, i, 1, 4096);
    else if (a == "--seq-len") o.seq_len = option_int(args, i, 2, 1024);
    else if (a == "--steps") o.steps = option_int(args, i, 1, 100000);
    else if (a == "--warmup") o.warmup = option_int(args, i, 0, 1000);
    else if (model_option(args, i, o.model, o.threads)) continue;
    else if (a == "--dropout") o.dropout = option_probability(args, i);
    else if (a == "--no-torch") o.torch_peer = false;
    else throw UsageError(fmt::format("unknown option '{}'\n{}", a, help));
  }
  return bench::run_gpt2_step_bench(o);
}

}  // namespace coconut::launcher
