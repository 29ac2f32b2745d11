// The outputs a training run writes while it runs, owned by rank 0: metrics.jsonl rows,
// TensorBoard scalars (runtime/tensorboard.h) and the progress line for the log.
//
// Typical use in the trainer (rank 0 only; the other ranks construct nothing):
//   RunOutput out(run_dir, /*fresh=*/!resuming);
//   ... after each optimizer step:
//   out.log_step({epoch, stage, step, loss, lr, tokens_per_s});
//   if (step % log_every == 0) spdlog::info("{}", format_progress({...}));
//   ... after each epoch (and its evaluation):
//   out.log_epoch(row);   // {"epoch":..,"stage":..,"step":..,"loss":..,"valid_accuracy":..}
//
// TensorBoard tags: per step "train/loss", "train/learning_rate", "train/tokens_per_s",
// "train/grad_norm", "train/stage", "train/epoch"; per epoch "epoch/<key>" for every numeric field of the
// row except "epoch" and "step" (arrays of numbers as "epoch/<key>/<i>"), all at x = the
// row's "step" (the global step count, else the epoch) so both curves share the x axis.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/tensorboard.h"

namespace coconut::launcher {

// A diverged run (a loss or a state that is not finite; launcher/trainer.h): `coconut
// train` exits with this code on every rank, and rank 0 leaves RUN_DIR/diverged.json
// (why, the step, the loss, the last committed checkpoint). A later run in the same
// directory removes the file when it starts; `coconut sweep` skips a run that has it.
inline constexpr int kExitDiverged = 3;
inline constexpr const char* kDivergedFile = "diverged.json";

// eval.keep_best: RUN_DIR/best_model/ holds the model of the best validation accuracy at
// the run's final curriculum stage (Hugging Face safetensors, as RUN_DIR/model/), with
// best.json saying where it came from ({"valid_accuracy", "epoch", "stage", "step"}); the
// test split evaluated on it is RUN_DIR/eval_test_best.json.
inline constexpr const char* kBestModelDir = "best_model";
inline constexpr const char* kBestModelFile = "best.json";

// RUN_DIR/train.lock: rank 0 of `coconut train` holds a lock on it (runtime/files.h,
// FileLock) for as long as the run lives, so that a second training in the same
// directory (a job submitted twice, two sweep tasks given the same shard) stops at once
// instead of interleaving its checkpoints and logs with the first's. The file says who
// holds it; the lock goes with the process, however it ends.
inline constexpr const char* kRunLockFile = "train.lock";

// RUN_DIR/metrics.jsonl: a JSON object a line, one per epoch ({"epoch", "stage", "step",
// "loss", "valid_accuracy", ...}) and, with log_steps, one per step ({"kind": "step", ...}).
inline constexpr const char* kMetricsFile = "metrics.jsonl";

// A line of metrics.jsonl as read back.
struct MetricsRow {
  bool is_step = false;  // a "kind": "step" row, else an epoch row
  int line = 0;          // 1-based, for messages
  nlohmann::json json;
};
// The epoch and step rows of a metrics.jsonl, in file order (rows of other kinds are
// skipped); a line that is not a JSON object is an error naming file and line.
std::vector<MetricsRow> read_metrics(const std::string& file);
// The validation accuracy at the end of each curriculum stage: element k is the last
// epoch row of stage k that has a valid_accuracy, -1 where stage k has none (up to the
// last stage that has one). Where the curriculum breaks, for sweep tables.
std::vector<double> stage_end_accuracies(const std::vector<MetricsRow>& rows);
// Such accuracies (fractions) as one line or table cell, in percent: "100.0 / - / 25.0"
// ("-" for a stage without one; "" for none).
std::string format_stage_end_accuracies(const std::vector<double>& at_end);

// One optimizer step, as logged.
struct StepMetrics {
  int epoch = 0, stage = 0;
  int64_t step = 0;  // global optimizer steps done, this one included
  double loss = 0, learning_rate = 0, tokens_per_s = 0;
  double grad_norm = 0;  // the model's global gradient norm before clipping
};

struct RunOutputOptions {
  bool tensorboard = true;  // event files in the run directory (tensorboard --logdir RUN_DIR)
  // Also append every step as a {"kind": "step", ...} row to metrics.jsonl. Off by
  // default: readers that expect one row per epoch (eval's final stage, the MPI
  // tests) need not filter; `coconut report` handles both.
  bool step_rows = false;
};

class RunOutput {
 public:
  // Creates run_dir when missing. fresh: a new run, so a metrics.jsonl and
  // events.out.tfevents.* files left by an earlier run in run_dir are removed; false
  // when resuming, so rows and curves continue (TensorBoard merges the event files).
  RunOutput(const std::string& run_dir, bool fresh, RunOutputOptions options = {});

  // TensorBoard scalars of one step (and a step row when options.step_rows), flushed.
  void log_step(const StepMetrics& m);
  // Appends the epoch's row to metrics.jsonl and writes its numeric fields to TensorBoard.
  void log_epoch(const nlohmann::json& row);

  const std::string& metrics_path() const { return metrics_path_; }
  // The event file ("" when options.tensorboard is off).
  std::string tensorboard_path() const { return tb_ ? tb_->path() : std::string(); }

 private:
  void append_row(const nlohmann::json& row);

  std::string metrics_path_;
  RunOutputOptions options_;
  std::unique_ptr<TensorBoardWriter> tb_;
};

// ---- the progress line ----

// Seconds until the run ends, extrapolating the time per step of this process:
// elapsed / (steps_done - first_step) * (total_steps - steps_done). first_step: the
// steps already done when this process started (a resumed run), so restored steps do
// not count as instantly done. Negative when unknown (no step done yet).
double eta_seconds(int64_t steps_done, int64_t total_steps, double elapsed_seconds, int64_t first_step = 0);

// "hh:mm:ss" (hours keep growing past 99, rounded to whole seconds); "--:--:--" when
// seconds is negative or not finite.
std::string format_duration(double seconds);

struct Progress {
  int epoch = 0, epochs = 1, stage = 0;   // epoch: 0-based, like every other log line and metrics.jsonl
  int64_t step = 0, total_steps = 0;      // global steps done / planned for the whole run
  int64_t first_step = 0;                 // steps done before this process started
  double loss = 0, tokens_per_s = 0;
  double grad_norm = 0;                   // the step's global gradient norm before clipping
  double elapsed_seconds = 0;             // wall time of this process's training so far
};

// "epoch 1 (3 epochs) stage 1 step 40/90 loss 1.2346 grad norm 0.812  5321 tok/s ETA 00:01:02"
// (a norm that is not finite prints as nan or inf: the step was not applied)
std::string format_progress(const Progress& p);

}  // namespace coconut::launcher
