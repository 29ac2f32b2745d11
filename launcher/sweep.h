// Sweeps: a grid of training runs over config keys (`coconut sweep`, docs/cli.md).
//
// A sweep file names a base training config, a grid of keys and values, extra
// overrides and how to launch each run. Each grid point is one run with its own
// directory OUT/<name>/ (run.dir: config copy, metrics, reports, model, checkpoints)
// and its own process (`mpirun -np N coconut train ...`, or coconut directly when
// np = 1). A run that finished (its marker file exists) is skipped; a run whose
// directory exists without the marker was interrupted and is restarted with
// `--resume auto`. The results of all runs go to OUT/results.{md,csv}.
//
// This file holds the logic that does not launch anything (reading the sweep file,
// the grid, run states, command lines, the results table) so that it can be tested
// on its own; cmd_sweep.cpp launches the runs.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "runtime/config.h"

namespace coconut::launcher {

struct SweepAxis {
  std::string key;                  // a training config key, e.g. curriculum.c_thought
  std::vector<std::string> values;  // as written (each becomes --set key=value)
};

struct SweepSpec {
  std::string source;       // the sweep file
  std::string base_config;  // the training config (relative paths: from the sweep file's folder)
  std::string out_dir;      // runs and results go here (relative paths: from the working directory)
  std::vector<SweepAxis> grid;
  std::vector<std::string> sets;  // "key=value" overrides for every run (before the grid's)
  int np = 1;                     // ranks per run; 1 = no mpirun
  std::string mpirun = "mpirun";
  std::vector<std::string> mpirun_args;  // e.g. [--oversubscribe], [--hostfile, hosts.txt]
};

// Reads a sweep file strictly (unknown keys, wrong types, an empty grid, a key listed
// twice are errors naming the file and key).
SweepSpec read_sweep(Config& cfg);

// One grid point.
struct SweepRun {
  std::string name;  // from its keys and values, e.g. "c_thought-2_seed-1"
  std::vector<std::pair<std::string, std::string>> point;  // (key, value), grid order
  std::string dir;   // OUT/<name>
};

// The cartesian product of the grid, the first axis varying slowest. Names use the
// last component of each key (the whole key when two axes share it) and the value,
// with characters other than [A-Za-z0-9.+-] replaced by '_'; two points that map to the
// same name are an error.
std::vector<SweepRun> expand_grid(const SweepSpec& spec);

// The file a run's directory gets once its training finished successfully.
constexpr const char* kSweepDoneFile = "sweep_done.json";

// Diverged: the run stopped on a loss or a state that was not finite (its directory has
// diverged.json, launcher/trainer.h): rerunning it as it is would diverge again, so the
// sweep skips it as it skips a finished one.
enum class RunState { New, Interrupted, Finished, Diverged };
RunState run_state(const std::string& run_dir);
// "diverged (step S, loss L)" from a diverged run's diverged.json.
std::string diverged_status(const std::string& run_dir);

// The status of a run that this process does not start (another task's run in a sharded
// sweep, or every run with --report), from what its directory holds: "trained" or
// "resumed" (its finished marker says which), "diverged (...)"; without the marker,
// "stopped by a signal" or "failed (exit N)" when its last attempt ended so
// (sweep_attempts.jsonl), else "interrupted" (being trained by another task right now,
// or its sweep was killed); "pending" (no directory).
std::string status_on_disk(const std::string& run_dir);

// `--shard I/N` (a Slurm job array's task I of N): the runs whose grid index is I modulo
// N. Tasks of one sweep train disjoint runs, so they may run at the same time.
struct SweepShard {
  int index = 0, count = 1;
  bool mine(size_t run) const { return static_cast<int>(run % static_cast<size_t>(count)) == index; }
};
// Parses "I/N" with 0 <= I < N; anything else throws an Error naming the text.
SweepShard parse_shard(const std::string& text);

// The `coconut train` overrides of a run: the sweep's sets, the grid point, run.dir.
std::vector<std::string> run_overrides(const SweepSpec& spec, const SweepRun& run);

// The command line of a run: [mpirun, -np, N, mpirun_args...] coconut_bin train BASE
// --set ... [--resume auto].
std::vector<std::string> train_command(const SweepSpec& spec, const SweepRun& run, const std::string& coconut_bin,
                                       bool resume);

// RUN_DIR/sweep_attempts.jsonl: a line {"start": unix seconds} when the sweep starts an
// attempt at the run, and {"end": ..., "seconds": ..., "exit": code} when it ends. A sweep
// killed meanwhile writes no end: the next attempt's start closes the open one at the
// last write of the run's train.log (its training stopped writing there), marked
// "estimated". Times are the sweep's view: start-up and evaluation included.
constexpr const char* kSweepAttemptsFile = "sweep_attempts.jsonl";
void note_attempt_start(const std::string& run_dir);
// Closes the run's open attempt as the next start does, without starting one: for a run
// that is not trained again (its training, left running by a sweep killed alone,
// diverged before the rerun).
void close_open_attempt(const std::string& run_dir);
void note_attempt_end(const std::string& run_dir, double seconds, int exit_code);
// The seconds of every closed attempt of the run; -1 when none is recorded.
double attempts_seconds(const std::string& run_dir);

// Writes RUN_DIR/sweep_done.json (atomically): the run's wall time and command.
void write_done_marker(const std::string& run_dir, double wall_seconds, bool resumed,
                       const std::vector<std::string>& command);

// A run's line in the results table.
struct RunResult {
  std::string status;          // trained | resumed | skipped | failed (exit N) | not run
  double valid_accuracy = -1;  // -1: no eval_valid.json
  double mean_generated_tokens = -1;
  // Of all attempts (sweep_attempts.jsonl); a run from before that file: the attempt
  // that finished (the marker).
  double wall_seconds = -1;
  // -1 when absent: the test split's accuracy (eval_test.json); with eval.keep_best the
  // best validation accuracy at the final stage (best_model/best.json) and the test
  // accuracy of that model (eval_test_best.json).
  double test_accuracy = -1, best_valid_accuracy = -1, best_test_accuracy = -1;
  // The validation accuracy at the end of each curriculum stage (metrics.jsonl,
  // stage_end_accuracies; -1 for a stage without one): where the curriculum breaks.
  // Empty without a readable metrics.jsonl.
  std::vector<double> stage_end_accuracy;
};
// Reads what a run left behind: RUN_DIR/eval_valid.json, metrics.jsonl and the marker.
RunResult read_run_result(const std::string& run_dir, const std::string& status);

// OUT/results.md (the table, then accuracy averaged over runs.seed per remaining grid
// point when run.seed is a grid key) and OUT/results.csv (one row per run). Both are
// written to a temporary name and renamed.
void write_results(const SweepSpec& spec, const std::vector<SweepRun>& runs, const std::vector<RunResult>& results);

// When curriculum.c_thought is a grid key: the mean valid accuracy over the runs of
// each c (averaging over seeds), one series per combination of the other grid keys
// except run.seed, as OUT/accuracy_vs_c.png. Returns the file, or "" when there is
// nothing to plot.
std::string plot_accuracy_vs_c(const SweepSpec& spec, const std::vector<SweepRun>& runs,
                               const std::vector<RunResult>& results);

}  // namespace coconut::launcher
