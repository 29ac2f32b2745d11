// `coconut train CONFIG.yaml [--set key=value ...]`: one training run (see trainer.h).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>

#include "launcher/commands.h"
#include "launcher/preflight.h"
#include "launcher/run_output.h"
#include "launcher/trainer.h"
#include "parallel/comm.h"
#include "runtime/check.h"
#include "runtime/log.h"
#include "runtime/stop_signals.h"

namespace coconut::launcher {

namespace {

// Runs the input checks on every rank and agrees on the outcome, so that no rank starts
// while another stops. Rank 0 reports its problems (the lowest failing rank when rank 0
// has none); the other ranks return quietly. False: the command exits with code 2.
bool preflight_ok(const TrainConfig& config, parallel::Communicator& world) {
  PreflightOptions options;
  options.world_size = world.size();
  const std::vector<std::string> problems = preflight_problems(config, options);
  const std::vector<int64_t> failed = parallel::gather_to_all(world, problems.empty() ? 0 : 1);
  int first = -1;
  for (int r = 0; r < world.size() && first < 0; ++r)
    if (failed[r]) first = r;
  if (first < 0) return true;
  if (world.size() == 1) throw UsageError(fmt::format("cannot start:\n  {}", fmt::join(problems, "\n  ")));
  // Several ranks: the reporting rank prints before anyone exits, because mpirun may kill
  // the remaining ranks as soon as the first one exits with code 2.
  if (world.rank() == first) {
    fmt::print(stderr, "coconut train: cannot start (rank {}):\n  {}\n", first, fmt::join(problems, "\n  "));
    std::fflush(stderr);
  }
  world.barrier();
  return false;
}

}  // namespace

int cmd_train(const std::vector<std::string>& args) {
  const char* help =
      "usage: coconut train CONFIG.yaml [--set key=value ...] [--resume auto|PATH] [--dry-run [--np N]]\n"
      "  Trains through the curriculum of the config's method, evaluating after epochs.\n"
      "  Writes RUN_DIR/{config.yaml, tokenizer.txt, metrics.jsonl, steps.jsonl, events.out.tfevents.*,\n"
      "  eval_*.json, model/, logs/train.rank<r>.log}\n"
      "  and, with checkpoint.every_steps or checkpoint.at_epoch_end, checkpoints (docs/config.md).\n"
      "  --set overrides any key, e.g. --set train.epochs=3 --set curriculum.c_thought=2\n"
      "  --resume auto|PATH: continue from the newest committed checkpoint under\n"
      "             checkpoint.dir (auto) or from PATH (same as --set checkpoint.resume=...)\n"
      "  --dry-run: check the config (files may be missing), print the effective config and\n"
      "             the model size, measure the data's sequences against the model's positions\n"
      "             (when the inputs are there), and exit without training or writing anything\n"
      "  --np N:    with --dry-run, for a job of N ranks (mpirun -np N): the process grid checked\n"
      "             against it, the micro-batches it would use measured exactly\n"
      "  SIGTERM or SIGUSR1 (to any rank, or to mpirun for SIGUSR1): every rank stops after the\n"
      "  current step, saves a checkpoint and exits with code 75; --resume auto continues.\n";
  if (args.empty() || args[0] == "--help") {
    fmt::print("{}", help);
    return args.empty() ? 2 : 0;
  }
  TrainConfig config;
  bool dry_run = false;
  int job_ranks = 0;
  try {
    Config yaml = Config::load_file(args[0]);
    for (size_t i = 1; i < args.size(); ++i) {
      if (args[i] == "--set") yaml.apply_override(option_value(args, i));
      else if (args[i] == "--dry-run") dry_run = true;
      else if (args[i] == "--np") job_ranks = option_int(args, i, 1, 1 << 20);
      else if (args[i] == "--resume") yaml.apply_override("checkpoint.resume=" + option_value(args, i));
      else throw UsageError(fmt::format("unknown option '{}'\n{}", args[i], help));
    }
    config = read_train_config(yaml);
  } catch (const coconut::Error& e) {
    throw UsageError(e.what());  // configuration errors are usage errors: exit code 2
  }
  if (job_ranks > 0 && !dry_run)
    throw UsageError(fmt::format("--np goes with --dry-run (a run's ranks are its job's: mpirun -np N)\n{}", help));
  if (dry_run) return print_dry_run(config, job_ranks);
  // One process or an MPI job (mpirun / srun): MPI initialises as a singleton otherwise.
  parallel::MpiRuntime mpi(nullptr, nullptr);
  // From here until the process ends SIGTERM and SIGUSR1 are recorded, not fatal: the
  // trainer looks at them before its first step and between steps, so that a signal
  // during the start-up stops the run cleanly too (exit 75), and one after the last step,
  // or another while the run stops, saves and exits, is ignored (all is saved).
  const StopSignals signals(StopSignals::Restore::never);
  auto world = parallel::MpiCommunicator::world();
  // Bad input stops every rank before anything is written (no half run directory).
  if (!preflight_ok(config, *world)) return 2;
  // Console, and a file per rank that a resumed run appends to: RUN_DIR/logs/train.rank<r>.log.
  init_logging(world->rank(), world->size(), "info", config.run_dir + "/logs/train.rank{rank}.log");
  spdlog::info("launcher: {}", mpi.launch_env().describe());
  if (!mpi.launch_env().warning.empty()) spdlog::warn("{}", mpi.launch_env().warning);
  TrainSummary s;
  try {
    s = run_training(config, world.get(), mpi.local_rank(), mpi.local_size());
  } catch (const coconut::Error& e) {
    // One rank's failure must stop every rank rather than leave them waiting.
    if (world->size() > 1) parallel::abort_all(e.what());
    throw;
  }
  // Every rank of a diverged run exits with kExitDiverged: a job script must not requeue it
  // as it is, and `coconut sweep` records it as diverged.
  if (s.diverged()) {
    if (world->rank() == 0)
      fmt::print(stderr, "training diverged: {}; nothing of that state was saved ({}, exit code {})\n",
                 s.diverged_why, (std::filesystem::path(config.run_dir) / kDivergedFile).string(), kExitDiverged);
    return kExitDiverged;
  }
  // Every rank of a run stopped by a signal exits with kExitStoppedBySignal (mpirun and
  // srun pass it on): the job script can requeue it (cluster/slurm/train.sbatch).
  if (s.stop_signal != 0) {
    if (world->rank() == 0)
      fmt::print("stopped by {}; rerun with --resume auto to continue (exit code {})\n",
                 stop_signal_name(s.stop_signal), kExitStoppedBySignal);
    return kExitStoppedBySignal;
  }
  if (world->rank() != 0) return 0;
  if (s.stopped) {  // checkpoint.stop_after_steps: no final evaluation to report
    fmt::print("stopped after step {} (checkpoint.stop_after_steps); resume with --resume auto\n",
               config.checkpoint.stop_after_steps);
    return 0;
  }
  fmt::print("\n| run | method | c | final stage | final loss | valid accuracy | test accuracy | wall s |\n");
  fmt::print("|---|---|---|---|---|---|---|---|\n");
  auto acc = [](double a) { return a < 0 ? std::string("-") : fmt::format("{:.3f}", a); };
  fmt::print("| {} | {} | {} | {} | {:.4f} | {} | {} | {:.1f} |\n", config.run_dir,
             curriculum::method_name(config.curriculum.method), config.curriculum.c_thought, s.final_stage,
             s.final_loss, acc(s.valid_accuracy), acc(s.test_accuracy), s.seconds);
  if (s.attempts > 1)
    fmt::print("(wall s over {} attempts: this one {:.1f} s, the earlier ones {:.1f} s, each until the checkpoint the "
               "next one started from)\n", s.attempts, s.attempt_seconds, s.seconds - s.attempt_seconds);
  if (s.best_epoch >= 0)
    fmt::print("(eval.keep_best: the best valid accuracy at the final stage, {}, was after epoch {}; test accuracy of "
               "that model {}; {}/{})\n", acc(s.best_valid_accuracy), s.best_epoch, acc(s.best_test_accuracy),
               config.run_dir, kBestModelDir);
  return 0;
}

}  // namespace coconut::launcher
