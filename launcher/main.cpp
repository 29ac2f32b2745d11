// The `coconut` command: one entry point with subcommands. Usage and configuration
// errors print one clear message and exit with code 2; runtime failures exit with 1.
#include <fmt/format.h>

#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "launcher/commands.h"
#include "runtime/blas.h"
#include "runtime/check.h"

namespace {

void print_usage() {
  fmt::print(
      "usage: coconut <command> [options]\n\n"
      "commands:\n"
      "  train CONFIG.yaml [options]               train a model (see configs/; --set, --resume auto|PATH)\n"
      "  data generate|stats|convert-gsm8k|split|tokenizer ...  datasets: generate, statistics, convert, split\n"
      "  eval RUN_DIR [options]                    accuracy of a run's model (final, best or a checkpoint) on a dataset\n"
      "  probe RUN_DIR [options]                   latent-search probe on ProsQA (frontier values)\n"
      "  report RUN_DIR [--out FILE.png]           loss/accuracy curves with stage boundaries to PNG\n"
      "  sweep SWEEP.yaml [options]                a grid of training runs (skips finished, resumes interrupted)\n"
      "  ckpt inspect|export DIR ...               look into a checkpoint; export its weights to HF safetensors\n"
      "  bench all|gpt2|coconut|memory|schedule|ckpt ...  benchmarks: CPU step vs PyTorch, memory, bubble, checkpoints\n"
      "\n`coconut <command> --help` describes each command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  coconut::select_blas_kernels(argv);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    print_usage();
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    if (command == "bench") return coconut::launcher::cmd_bench(args);
    if (command == "train") return coconut::launcher::cmd_train(args);
    if (command == "data") return coconut::launcher::cmd_data(args);
    if (command == "eval") return coconut::launcher::cmd_eval(args);
    if (command == "probe") return coconut::launcher::cmd_probe(args);
    if (command == "ckpt") return coconut::launcher::cmd_ckpt(args);
    if (command == "report") return coconut::launcher::cmd_report(args);
    if (command == "sweep") return coconut::launcher::cmd_sweep(args);
    fmt::print(stderr, "coconut: unknown command '{}'\n", command);
    print_usage();
    return 2;
  } catch (const coconut::launcher::UsageError& e) {
    fmt::print(stderr, "coconut {}: {}\n", command, e.what());
    return 2;
  } catch (const coconut::Error& e) {
    fmt::print(stderr, "coconut {}: error: {}\n", command, e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "coconut {}: unexpected error: {}\n", command, e.what());
    return 1;
  }
}
