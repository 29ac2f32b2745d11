// The pieces run_training (trainer.cpp) is made of, split so that a run can start from
// a saved state (launcher/train_checkpoint.h):
//   TrainContext  the run's live objects (model, optimizers, executor, tokenizer, data)
//   TrainState    where the run is (epoch, batch in the epoch, step, the epoch's loss
//                 accumulators, the previous stage): what a checkpoint saves and a
//                 resume restores
//   EpochPlan     the epoch's samples in order, built deterministically from (seed, epoch)
//   start_epoch / run_batch / finish_epoch / report_epoch   the loop's steps
// Progress is reported in exactly two places: emit_step() (per optimizer step: the
// progress line every log_every steps, RUN_DIR/steps.jsonl and TensorBoard scalars) and
// emit_epoch_row() (RUN_DIR/metrics.jsonl and TensorBoard), both through RunOutput.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "curriculum/eot_classifier.h"
#include "curriculum/evaluation.h"
#include "curriculum/samples.h"
#include "launcher/device_step.h"
#include "launcher/run_output.h"
#include "launcher/trainer.h"
#include "model/adamw.h"
#include "model/gpt2.h"
#include "model/multipass.h"
#include "parallel/executor.h"
#include "parallel/grid.h"
#include "parallel/partition.h"
#include "runtime/check.h"
#include "runtime/timer.h"

namespace coconut::launcher {

// The distributed side of a run: process grid, layer partition and the executor.
struct Distributed {
  parallel::Communicator* world = nullptr;
  std::unique_ptr<parallel::ProcessGrid> grid;
  std::vector<parallel::StageLayers> partition;
  std::unique_ptr<parallel::PipelineExecutor> executor;

  // A pipeline rank holds only its stage's slices of the model (held_param_slices); the
  // rest of its buffer stays untouched. These are what it holds, in buffer order (the
  // whole buffer without a partition: one process, data-parallel GPUs).
  std::vector<parallel::ParamSlice> held_slices(const model::GPT2& gpt) const;
  // Writes the model as Hugging Face safetensors to out_dir (model/hf_weights.h) from
  // world rank 0, stage 0 of replica 0. Collective over the grid: replica 0's other
  // stages send rank 0 their tensors one at a time, as the file is written, so that no
  // rank ever holds the whole model.
  void export_model(const std::string& out_dir, const model::GPT2& gpt) const;
};

// What a run trains with; the objects are owned by run_training.
struct TrainContext {
  const TrainConfig& config;
  const RunData& data;
  const curriculum::Tokenizer& tok;
  const model::GPT2Config& mc;  // the model's shape (vocabulary from the tokenizer)
  model::GPT2& gpt;
  const std::vector<curriculum::TokenizedSample>& train_tok;
  model::AdamW& opt;                // this rank's moments: the whole model in one process, none
                                    // beside an executor, the device step's shard on DP GPUs
  model::MultipassRunner& runner;
  Distributed& dist;                // executor == nullptr in one process
  curriculum::EotClassifier* eot;   // nullptr unless curriculum.eot_classifier
  DeviceStep* device;               // train.device: cuda (one process), else nullptr
  parallel::Communicator* world;    // nullptr or size 1: one process
  std::filesystem::path dir;        // the run directory
  bool writer;                      // rank 0: evaluates and writes the run directory
  RunOutput* output = nullptr;      // rank 0: metrics.jsonl and TensorBoard scalars
  // For the progress line: optimizer steps of the whole run (planned), the steps already
  // done when this process started (a resumed run), and this process's training clock.
  int64_t total_steps = 0, first_step = 0;
  Timer clock;
  // This attempt's wall clock, from the start of run_training: a checkpoint saves the
  // run's wall time so far (TrainState::earlier_seconds + this).
  Timer attempt;
};

struct TrainState {
  int epoch = 0;               // the epoch in progress (or next, between epochs)
  int64_t batch_in_epoch = 0;  // batches of `epoch` already taken; 0: the epoch has not started
  int64_t step = 0;            // optimizer steps taken in the whole run
  int prev_stage = -1;         // stage of the last started epoch (-1: none yet)
  // The epoch's accumulators (saved, so that a resumed epoch reports the same mean).
  double loss_sum = 0, tokens = 0;
  int64_t batches = 0;         // batches that took a step
  double seconds_before = 0;   // time spent in this epoch before a resume
  // The wall time of the earlier attempts of this run (processes that stopped, were
  // killed or requeued), each up to the checkpoint the next one resumed from, and their
  // number: a resumed run reports its wall time over every attempt.
  double earlier_seconds = 0;
  int earlier_attempts = 0;
  double run_seconds(const TrainContext& ctx) const { return earlier_seconds + ctx.attempt.seconds(); }
  // The same for the training clock (TrainContext::clock), which train.max_minutes reads:
  // a resumed run's limit counts the training of its earlier attempts.
  double earlier_training_seconds = 0;
  double training_seconds(const TrainContext& ctx) const { return earlier_training_seconds + ctx.clock.seconds(); }
  int attempts() const { return earlier_attempts + 1; }  // this process's included
  double step_loss = 0;        // the loss of the last step taken (global: the same on every rank)
  int skipped_in_a_row = 0;    // steps just before whose gradient was not finite (train.skip_nonfinite_steps)
  // eval.keep_best: the best validation accuracy so far among the evaluations at the run's
  // final stage and where it was (epoch -1: none yet); RUN_DIR/best_model/ holds that model.
  struct Best {
    double valid_accuracy = -1;
    int epoch = -1, stage = -1;
    int64_t step = 0;
  } best;
  TrainSummary summary;        // per-epoch results so far
  // An epoch finished (finish_epoch) whose evaluation and report (report_epoch) are still
  // to come: between the two, or saved so when a stop signal interrupted the evaluation
  // (the resumed run evaluates and reports it first).
  struct UnreportedEpoch {
    int epoch = 0, stage = 0;
    bool evaluate = false;  // eval.every_epochs or the run's last epoch
    bool last = false;      // the run's last epoch (train.epochs, or train.max_minutes)
    nlohmann::json row;     // its metrics.jsonl row so far (loss, throughput, bubble)
  };
  std::optional<UnreportedEpoch> unreported;
  // train.max_minutes: the epoch being finished (or the last finished) is the run's last.
  // Saved with the limit that decided it, so that a run resumed after that point ends
  // there too unless the limit has been raised or removed since.
  bool out_of_time = false;
  double out_of_time_limit = 0;  // the train.max_minutes that ended the run
  // This process only, not saved: pipeline time this epoch (measured bubble), the
  // simulator's largest per-micro-batch activation bytes of a step, and the clock.
  double busy = 0, op_wall = 0, simulated_bubble = 0, simulated_peak_bytes = 0;
  Timer epoch_timer;

  double epoch_seconds() const { return seconds_before + epoch_timer.seconds(); }
};

// Fisher-Yates with a counter-based stream per epoch: the dataset indices in the order
// epoch `epoch` visits them.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, int epoch);

// FNV-1a over epoch `epoch`'s order and the token ids of its samples in that order: a
// resume checks that it would see the same data in the same order.
std::string data_order_digest(const TrainContext& ctx, int epoch);

// Thrown on every rank alike when a step's loss, or the state about to be saved, is not
// finite: the trainer stops before any checkpoint of that state (TrainSummary::diverged).
class TrainingDiverged : public Error {
 public:
  using Error::Error;
};

struct EpochPlan {
  int epoch = 0, stage = 0;
  std::vector<size_t> order;                   // dataset index of each built sample
  std::vector<curriculum::BuiltSample> built;  // at the scheduled stage, or a uniform_prob draw
  int64_t num_batches(int batch_size) const {
    return static_cast<int64_t>((built.size() + batch_size - 1) / batch_size);
  }
};
EpochPlan plan_epoch(const TrainContext& ctx, int epoch);
// The stage whose sequence dataset item `item` (with n_steps steps) trains on in `epoch`:
// the epoch's scheduled stage, or with curriculum.uniform_prob a draw among 0..n_steps.
int sample_stage(const TrainConfig& c, int epoch, size_t item, size_t n_steps);

// At the start of an epoch (batch_in_epoch == 0): the optimizer resets of the
// reset_optimizer policy, then the epoch's accumulators start from zero.
void start_epoch(TrainContext& ctx, TrainState& st, const EpochPlan& plan);

// Batch st.batch_in_epoch of the plan: one optimizer step (forward, backward, AdamW)
// unless the batch has no labelled token. Advances batch_in_epoch, and step when a step
// was taken. Collective under mpirun.
void run_batch(TrainContext& ctx, TrainState& st, const EpochPlan& plan);

// train.max_minutes: whether the run should end after the epoch just trained, because
// the training time so far (over every attempt) plus one more epoch as long would pass
// the limit. Rank 0
// decides for every rank (collective under mpirun), so they all stop together.
bool out_of_time(const TrainContext& ctx, const TrainState& st);

// After TrainingDiverged: logs why and where to resume from (the last committed
// checkpoint, or none), and rank 0 writes RUN_DIR/diverged.json.
void report_divergence(const TrainContext& ctx, const TrainState& st, const std::string& why,
                       const std::string& last_checkpoint);

// The stop signal (runtime/stop_signals.h) that any rank has received, the same on every
// rank (the lowest rank's that has one), or 0: a signal reaches the ranks at different
// moments, so they agree after each step on whether to stop there. Collective under mpirun.
int agreed_stop_signal(const TrainContext& ctx);

// The epoch's row (mean loss, throughput, <eot> statistics, bubble) into st.unreported,
// then the state moves to the next epoch. Collective under mpirun.
void finish_epoch(TrainContext& ctx, TrainState& st, const EpochPlan& plan);

// The unreported epoch's evaluation when due (eval.keep_best's model with it), then its
// row to metrics.jsonl and the log (eval_valid.json after the run's last). Returns false
// when a stop signal interrupted the evaluation: the epoch stays unreported. Collective
// under mpirun.
bool report_epoch(TrainContext& ctx, TrainState& st);

// Accuracy on a split (its first eval.max_items items when set) at `stage`, on the
// device model when there is one (train.device: cuda), else on the host model. With
// `dist` (under mpirun; collective) the ranks share the evaluation batches and every
// rank returns the joined result: the same items, bit for bit, as one process
// evaluating alone. Ranks that hold the whole model (data parallelism) each take a
// share; pipeline stages hold only their layers, so each replica takes a share and
// decodes it through its stages, a batch in flight on every stage
// (launcher/staged_generation.h).
// Interruptible: a stop signal (runtime/stop_signals.h) that reaches any rank ends the
// evaluation before its next batch, and every rank returns an `interrupted` result.
enum class Interruptible { no, by_stop_signal };
curriculum::EvalResult evaluate_split(const model::GPT2& gpt, DeviceStep* device, const curriculum::Tokenizer& tok,
                                      const std::vector<curriculum::Sample>& split, const TrainConfig& c, int stage,
                                      const curriculum::EotClassifier* eot, Distributed* dist = nullptr,
                                      Interruptible interruptible = Interruptible::no);

// The evaluation shards of the ranks `speakers` (shard k from world rank speakers[k]; this
// rank's is `mine` when it is one of them) joined on every rank: one worker's result, bit
// for bit (curriculum::merge_eval_shards). Collective over `world`.
curriculum::EvalResult join_eval_shares(parallel::Communicator& world, const std::vector<int>& speakers,
                                        curriculum::EvalResult mine);

// train.device: cuda: the host model and optimizer brought up to date from the GPU
// before the host reads them (evaluation, checkpoints, the export). No-op on the CPU.
void sync_host(TrainContext& ctx);

// The model as Hugging Face safetensors in out_dir (rank 0 writes; pipeline stages stream
// it their tensors), with the word vocabulary when the run has one (a run can start from
// it: model.init_from). Collective; every rank returns once the files are written.
void export_run_model(const TrainContext& ctx, const std::filesystem::path& out_dir);
// The run's final model into RUN_DIR/model: exported into RUN_DIR/model.tmp, then moved
// over it, so that a run killed meanwhile leaves no half-written model/ nor a stray
// temporary file in it (its rerun exports again). Collective.
void export_final_model(const TrainContext& ctx);

// The two reporting points (rank 0 writes; see the top of this file).
void emit_step(const TrainContext& ctx, const TrainState& st, int stage, const parallel::StepStats& stats, float lr);
void emit_epoch_row(const TrainContext& ctx, const nlohmann::json& row);

}  // namespace coconut::launcher
