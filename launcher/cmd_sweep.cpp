// `coconut sweep SWEEP.yaml`: runs a grid of training runs, each its own process (see
// sweep.h for the file, the run names, skipping and resuming), then writes the results
// table and the accuracy-against-c plot.
#include <fmt/format.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>

#include "launcher/commands.h"
#include "launcher/preflight.h"
#include "launcher/sweep.h"
#include "launcher/train_config.h"
#include "launcher/run_output.h"
#include "runtime/check.h"
#include "runtime/process.h"
#include "runtime/stop_signals.h"
#include "runtime/timer.h"

namespace coconut::launcher {

namespace fs = std::filesystem;

namespace {

const char* kHelp =
    "usage: coconut sweep SWEEP.yaml [--dry-run] [--np N] [--out DIR] [--set key=value ...]\n"
    "                                 [--shard I/N | --report]\n"
    "  Trains every point of the sweep file's grid as its own run (its own process: mpirun -np N\n"
    "  coconut train BASE --set key=value ... --set run.dir=OUT/<run>), one after the other, then\n"
    "  writes OUT/results.md, OUT/results.csv and OUT/accuracy_vs_c.png (when c_thought is a grid key).\n"
    "  A run whose OUT/<run>/sweep_done.json exists is skipped; a run directory without it (an\n"
    "  interrupted run) is restarted with --resume auto. Each run's output goes to OUT/<run>/train.log.\n"
    "  A run that diverges (a loss that is not finite: `coconut train` exits with code 3 and leaves\n"
    "  OUT/<run>/diverged.json) is recorded as diverged, not failed, and skipped when the sweep reruns.\n"
    "  --dry-run  check every run's config and print what would run, write nothing\n"
    "  --np N     ranks per run (overrides launch.np)\n"
    "  --out DIR  output folder (overrides out)\n"
    "  --set k=v  one more override for every run (after the sweep file's `set`)\n"
    "  --shard I/N  train only the runs whose grid index is I modulo N: task I of N that run at the\n"
    "             same time (a Slurm job array: cluster/slurm/sweep_array.sbatch); each writes the\n"
    "             results table of every run from what their directories hold\n"
    "  --report   train nothing: write the results table and the plot from what the runs' directories\n"
    "             hold (after the tasks of a sharded sweep)\n"
    "  The sweep file format is in docs/cli.md; example: configs/sweeps/c_thought.yaml.\n"
    "  SIGTERM or SIGUSR1 go to the running run, which saves a checkpoint and stops; the sweep\n"
    "  then stops with exit code 75, and the same command continues it.\n";

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Starts cmd with stdout and stderr appended to log_path, waits; returns its exit code
// (128 + signal when a signal ended it).
int run_logged(const std::vector<std::string>& cmd, const std::string& log_path) {
  {
    std::ofstream log(log_path, std::ios::app);
    log << "# coconut sweep " << utc_now() << ": " << shell_line(cmd) << "\n";
    COCONUT_CHECK(log.good(), "cannot write '{}'", log_path);
  }
  return run_to_log(cmd, log_path, /*forward_stop_signals=*/true);
}

// Every run's configuration is read and checked before the first run starts, so a typo
// in a grid key or a missing data file stops the sweep before anything is trained (a
// dry run, like `train --dry-run`, lets input files be missing).
// A run's configuration: the base file with the run's overrides.
TrainConfig run_config(const SweepSpec& spec, const SweepRun& run) {
  Config yaml = Config::load_file(spec.base_config);
  for (const std::string& kv : run_overrides(spec, run)) yaml.apply_override(kv);
  return read_train_config(yaml);
}

void check_runs(const SweepSpec& spec, const std::vector<SweepRun>& runs, bool require_files) {
  std::vector<std::string> problems;
  for (const SweepRun& run : runs) {
    try {
      const TrainConfig config = run_config(spec, run);
      PreflightOptions options;
      options.world_size = spec.np;
      options.require_files = require_files;
      for (const std::string& p : preflight_problems(config, options)) problems.push_back(run.name + ": " + p);
    } catch (const Error& e) {
      problems.push_back(fmt::format("{}: {}", run.name, e.what()));
    }
  }
  if (!problems.empty())
    throw UsageError(fmt::format("{}: {} problem(s), nothing was run:\n  {}", spec.source, problems.size(),
                                 fmt::join(problems, "\n  ")));
}

}  // namespace

int cmd_sweep(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help") {
    fmt::print("{}", kHelp);
    return args.empty() ? 2 : 0;
  }
  bool dry_run = false, report = false;
  SweepShard shard;
  int np = 0;
  std::string out;
  std::vector<std::string> sets;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--dry-run") dry_run = true;
    else if (args[i] == "--np") np = option_int(args, i, 1, 1 << 20);
    else if (args[i] == "--out") out = option_value(args, i);
    else if (args[i] == "--set") sets.push_back(option_value(args, i));
    else if (args[i] == "--report") report = true;
    else if (args[i] == "--shard") {
      const std::string text = option_value(args, i);
      try {
        shard = parse_shard(text);
      } catch (const Error& e) {
        throw UsageError(fmt::format("{}\n{}", e.what(), kHelp));
      }
    } else throw UsageError(fmt::format("unknown option '{}'\n{}", args[i], kHelp));
  }
  SweepSpec spec;
  std::vector<SweepRun> runs;
  try {
    Config yaml = Config::load_file(args[0]);
    spec = read_sweep(yaml);
    if (np > 0) spec.np = np;
    if (!out.empty()) spec.out_dir = out;
    spec.sets.insert(spec.sets.end(), sets.begin(), sets.end());
    runs = expand_grid(spec);
  } catch (const Error& e) {
    throw UsageError(e.what());  // a bad sweep file is a usage error: exit code 2
  }
  if (report && (dry_run || shard.count > 1))
    throw UsageError(fmt::format("--report trains nothing: not with --dry-run or --shard\n{}", kHelp));
  // A sweep that trains: SIGTERM / SIGUSR1 go on to the running `coconut train`, which
  // saves a checkpoint and exits with kExitStoppedBySignal; the sweep then stops too, so
  // that a job that runs it can be requeued and resume (runtime/stop_signals.h).
  // Installed before the runs' configs are checked, and kept until the process ends, as
  // in `coconut train`: no signal kills it with the default action while it starts or stops.
  std::optional<StopSignals> signals;
  if (!report && !dry_run) signals.emplace(StopSignals::Restore::never);
  if (report) {
    std::vector<RunResult> results;
    int counts[3] = {0, 0, 0};  // finished (or diverged), interrupted (stopped, failed or running), pending
    for (const SweepRun& run : runs) {
      results.push_back(read_run_result(run.dir, status_on_disk(run.dir)));
      const RunState state = run_state(run.dir);
      ++counts[state == RunState::Interrupted ? 1 : state == RunState::New ? 2 : 0];
    }
    fs::create_directories(spec.out_dir);
    write_results(spec, runs, results);
    fmt::print("sweep {}: {} runs: {} finished or diverged, {} interrupted (or still running), {} not started\n",
               spec.source, runs.size(), counts[0], counts[1], counts[2]);
    fmt::print("results: {}, {}\n", (fs::path(spec.out_dir) / "results.md").string(),
               (fs::path(spec.out_dir) / "results.csv").string());
    const std::string plot = plot_accuracy_vs_c(spec, runs, results);
    if (!plot.empty()) fmt::print("plot: {}\n", plot);
    return 0;
  }
  check_runs(spec, runs, /*require_files=*/!dry_run);

  const std::string bin = self_binary();
  fmt::print("sweep {}: {} runs of {} ({} rank{} each) in {}{}\n", spec.source, runs.size(), spec.base_config,
             spec.np, spec.np > 1 ? "s" : "", spec.out_dir,
             shard.count > 1 ? fmt::format("; task {} of {}: runs {} modulo {}", shard.index, shard.count, shard.index,
                                           shard.count)
                             : std::string());
  if (dry_run) {
    std::vector<std::string> problems;
    for (size_t i = 0; i < runs.size(); ++i) {
      const SweepRun& run = runs[i];
      if (!shard.mine(i)) continue;
      const RunState state = run_state(run.dir);
      if (state == RunState::Finished || state == RunState::Diverged) {
        fmt::print("{}: skip ({}): {}\n", run.name, state == RunState::Finished ? "finished" : "diverged", run.dir);
        continue;
      }
      const bool resume = state == RunState::Interrupted;
      const std::string command = shell_line(train_command(spec, run, bin, resume));
      fmt::print("{}: {}: {}\n", run.name, resume ? "resume" : "train", command);
      // What the run would measure at its start (c_thought, the method... change the
      // lengths): a run that would stop there is a problem of the sweep.
      const std::string problem = dry_run_sequence_lengths(run_config(spec, run), spec.np, run.name + ": ");
      if (!problem.empty()) problems.push_back(run.name + ": " + problem);
    }
    for (const std::string& p : problems) fmt::print(stderr, "problem: {}\n", p);
    if (!problems.empty()) {
      fmt::print("dry run: {} run(s) would stop at their start (see the problems above); nothing was run or "
                 "written\n", problems.size());
      return 2;
    }
    fmt::print("dry run: every run's config is valid; nothing was run or written\n");
    return 0;
  }

  fs::create_directories(spec.out_dir);
  std::vector<RunResult> results;
  for (size_t i = 0; i < runs.size(); ++i)
    results.push_back(read_run_result(runs[i].dir, shard.mine(i) ? "pending" : status_on_disk(runs[i].dir)));
  // The other tasks' runs as their directories hold them now (they may be training).
  auto refresh_others = [&] {
    for (size_t j = 0; j < runs.size(); ++j)
      if (!shard.mine(j)) results[j] = read_run_result(runs[j].dir, status_on_disk(runs[j].dir));
  };
  int failed = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    const SweepRun& run = runs[i];
    if (!shard.mine(i)) continue;
    const std::string tag = fmt::format("[{}/{}] {}", i + 1, runs.size(), run.name);
    const RunState state = run_state(run.dir);
    if (state == RunState::Finished) {
      fmt::print("{}: skipped, already finished ({})\n", tag, (fs::path(run.dir) / kSweepDoneFile).string());
      results[i] = read_run_result(run.dir, "skipped");
      continue;
    }
    if (state == RunState::Diverged) {
      fmt::print("{}: skipped, diverged earlier ({})\n", tag, (fs::path(run.dir) / kDivergedFile).string());
      close_open_attempt(run.dir);
      results[i] = read_run_result(run.dir, diverged_status(run.dir));
      continue;
    }
    if (const int signal = StopSignals::received(); signal != 0) {  // before any run was started
      fmt::print(stderr, "sweep stopped by {} before run {} of {}; rerun the same command to continue (exit code {})\n",
                 stop_signal_name(signal), i + 1, runs.size(), kExitStoppedBySignal);
      return kExitStoppedBySignal;
    }
    const bool resume = state == RunState::Interrupted;
    const std::vector<std::string> cmd = train_command(spec, run, bin, resume);
    const std::string log = (fs::path(run.dir) / "train.log").string();
    fmt::print("{}: {} (log {})\n", tag, resume ? "interrupted earlier, resuming with --resume auto" : "training", log);
    std::fflush(stdout);
    fs::create_directories(run.dir);
    note_attempt_start(run.dir);
    Timer timer;
    const int code = run_logged(cmd, log);
    const double seconds = timer.seconds();
    note_attempt_end(run.dir, seconds, code);
    // Exit 0 without the final model means the run stopped early (checkpoint.stop_after_steps).
    const bool complete = code == 0 && fs::exists(fs::path(run.dir) / "model" / "model.safetensors");
    const bool stopped = code == kExitStoppedBySignal;
    if (code == kExitDiverged && run_state(run.dir) == RunState::Diverged) {
      // A result of the grid point (a learning rate too high, say), not a failure of the sweep.
      results[i] = read_run_result(run.dir, diverged_status(run.dir));
      fmt::print(stderr, "{}: {}; see {}\n", tag, results[i].status, log);
    } else if (complete) {
      write_done_marker(run.dir, seconds, resume, cmd);
      results[i] = read_run_result(run.dir, resume ? "resumed" : "trained");
      fmt::print("{}: finished in {:.1f} s, valid accuracy {}\n", tag, seconds,
                 results[i].valid_accuracy < 0 ? std::string("-") : fmt::format("{:.4f}", results[i].valid_accuracy));
    } else if (stopped) {
      results[i] = read_run_result(run.dir, "stopped by a signal");
      fmt::print(stderr, "{}: stopped by a signal after a checkpoint; see {}\n", tag, log);
    } else {
      ++failed;
      const std::string why = code != 0 ? fmt::format("exit {}", code) : "no final model";
      results[i] = read_run_result(run.dir, fmt::format("failed ({})", why));
      fmt::print(stderr, "{}: failed ({}); see {}\n", tag, why, log);
    }
    refresh_others();
    write_results(spec, runs, results);  // the table so far, in case the sweep is interrupted
    if (stopped || StopSignals::received() != 0) {
      fmt::print(stderr, "sweep stopped by {} after run {} of {}; rerun the same command to continue: finished runs "
                 "are skipped, a stopped one resumes from its checkpoint (exit code {})\n",
                 stop_signal_name(StopSignals::received()), i + 1,
                 runs.size(), kExitStoppedBySignal);
      return kExitStoppedBySignal;
    }
  }
  refresh_others();
  write_results(spec, runs, results);
  fmt::print("results: {}, {}\n", (fs::path(spec.out_dir) / "results.md").string(),
             (fs::path(spec.out_dir) / "results.csv").string());
  // Tasks of a sharded sweep may finish together: the plot, which is not written
  // atomically, waits for --report.
  if (shard.count > 1) {
    fmt::print("task {} of {} done: `coconut sweep {} --report` writes the table and the plot of every task's runs\n",
               shard.index, shard.count, spec.source);
  } else {
    const std::string plot = plot_accuracy_vs_c(spec, runs, results);
    if (!plot.empty()) fmt::print("plot: {}\n", plot);
  }
  if (failed > 0) {
    fmt::print(stderr, "{} of {} runs failed\n", failed, runs.size());  // of this task's, with --shard
    return 1;
  }
  return 0;
}

}  // namespace coconut::launcher
