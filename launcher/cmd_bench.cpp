// `coconut bench`: benchmarks that print figures.
#include <fmt/format.h>

#include "bench/gpt2_step.h"
#include "bench/schedule_sim.h"
#include "launcher/commands.h"

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

}  // namespace

int cmd_bench(const std::vector<std::string>& args) {
  const char* help =
      "usage: coconut bench gpt2 [--batch N] [--seq-len N] [--steps N] [--threads N] [--layers N]\n"
      "                          [--d-model N] [--heads N] [--dropout P] [--no-torch]\n"
      "  Times a GPT-2 training step (default: the 124M shape, batch 4 x 128) on the CPU backend,\n"
      "  prints tokens/s, GFLOP/s against the measured SGEMM peak, and the same step in PyTorch.\n"
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
    else if (a == "--threads") o.threads = option_int(args, i, 0, 1024);
    else if (a == "--layers") o.model.n_layer = option_int(args, i, 1, 1000);
    else if (a == "--d-model") o.model.d_model = option_int(args, i, 1, 100000);
    else if (a == "--heads") o.model.n_head = option_int(args, i, 1, 1000);
    else if (a == "--vocab") o.model.vocab_size = option_int(args, i, 2, 10000000);
    else if (a == "--dropout") o.dropout = option_probability(args, i);
    else if (a == "--no-torch") o.torch_peer = false;
    else throw UsageError(fmt::format("unknown option '{}'\n{}", a, help));
  }
  return bench::run_gpt2_step_bench(o);
}

}  // namespace coconut::launcher
