// `coconut train CONFIG.yaml [--set key=value ...]`: one training run (see trainer.h).
#include <fmt/format.h>

#include "launcher/commands.h"
#include "launcher/trainer.h"
#include "parallel/comm.h"
#include "runtime/check.h"
#include "runtime/log.h"

namespace coconut::launcher {

int cmd_train(const std::vector<std::string>& args) {
  const char* help =
      "usage: coconut train CONFIG.yaml [--set key=value ...]\n"
      "  Trains through the curriculum of the config's method, evaluating after epochs.\n"
      "  Writes RUN_DIR/{config.yaml, tokenizer.txt, metrics.jsonl, eval_*.json, model/}.\n"
      "  --set overrides any key, e.g. --set train.epochs=3 --set curriculum.c_thought=2\n";
  if (args.empty() || args[0] == "--help") {
    fmt::print("{}", help);
    return args.empty() ? 2 : 0;
  }
  TrainConfig config;
  try {
    Config yaml = Config::load_file(args[0]);
    for (size_t i = 1; i < args.size(); ++i) {
      if (args[i] == "--set") yaml.apply_override(option_value(args, i));
      else throw UsageError(fmt::format("unknown option '{}'\n{}", args[i], help));
    }
    config = read_train_config(yaml);
  } catch (const coconut::Error& e) {
    throw UsageError(e.what());  // configuration errors are usage errors: exit code 2
  }
  // One process or an MPI job (mpirun / srun): MPI initialises as a singleton otherwise.
  parallel::MpiRuntime mpi(nullptr, nullptr);
  auto world = parallel::MpiCommunicator::world();
  init_logging(world->rank(), world->size(), "info");
  TrainSummary s;
  try {
    s = run_training(config, world.get());
  } catch (const coconut::Error& e) {
    // One rank's failure must stop every rank rather than leave them waiting.
    if (world->size() > 1) parallel::abort_all(e.what());
    throw;
  }
  if (world->rank() != 0) return 0;
  fmt::print("\n| run | method | c | final stage | final loss | valid accuracy | test accuracy | wall s |\n");
  fmt::print("|---|---|---|---|---|---|---|---|\n");
  auto acc = [](double a) { return a < 0 ? std::string("-") : fmt::format("{:.3f}", a); };
  fmt::print("| {} | {} | {} | {} | {:.4f} | {} | {} | {:.1f} |\n", config.run_dir,
             curriculum::method_name(config.curriculum.method), config.curriculum.c_thought, s.final_stage,
             s.final_loss, acc(s.valid_accuracy), acc(s.test_accuracy), s.seconds);
  return 0;
}

}  // namespace coconut::launcher
