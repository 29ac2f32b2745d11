// Checkpoints of a training run (issue #5) on top of the sharded checkpoint library
// (parallel/checkpoint.h): what each rank saves, when, and how a run resumes.
//
// Tensors (flat floats, global size in brackets):
//   params, adam.m, adam.v [num_params]   each rank its ZeRO shard (shard_begin..end of
//                                         its stage's ShardedAdamW); one process: all
//   eot.params, eot.adam.m, eot.adam.v    the <eot> classifier (one process only)
// meta.trainer_state (JSON): the optimizer step counts, the epoch's accumulators, the
// per-epoch results so far, the <eot> classifier's step and statistics, the seed, batch
// size and data-order digest of the epoch in progress, and
// "model": {n_layer, n_head, d_model, vocab_size, max_positions}.
// meta.model_digest (model shape, vocabulary, tokenizer identity) must match to load;
// the topology (pp, dp) may differ: every rank reads the whole "params" (each rank keeps
// the whole buffer, parallel/executor.h) and the moments of ITS shard.
//
// Randomness needs no saved generator state: data order, uniform_prob draws and dropout
// are counter-based, keyed by (seed, epoch, step, sample).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <nlohmann/json.hpp>

#include "curriculum/tokenizer.h"
#include "launcher/train_loop.h"
#include "model/gpt2.h"
#include "parallel/checkpoint.h"

namespace coconut::launcher {

// checkpoint.dir, or RUN_DIR/checkpoints.
std::string checkpoint_root(const TrainConfig& c);

// What must match for a checkpoint to load into this model: shape, vocabulary size and
// the tokenizer's identity (a hash of its vocabulary), as 16 hex digits.
std::string model_digest(const model::GPT2Config& mc, const curriculum::Tokenizer& tok);

// The checkpoint directory checkpoint.resume names: "" for `never`, or for `auto` when
// nothing committed is under the checkpoint root; the newest committed checkpoint for
// `auto`; for a PATH, that checkpoint (it must hold manifest.pb), or the newest committed
// one under it when PATH is a checkpoint root. Collective: rank 0 decides, every rank
// gets its answer. Throws naming the path when PATH holds nothing committed.
std::string find_resume_checkpoint(const TrainConfig& c, parallel::Communicator* world);

// Loads checkpoint `dir` into the context (weights, this rank's optimizer shard and
// step counts, the <eot> classifier) and returns the state to continue from. Checks the
// model digest, and for a resume inside an epoch the batch size and the data order.
// Collective-free: every rank reads what it needs.
TrainState restore_checkpoint(TrainContext& ctx, const std::string& dir);

// Reading a checkpoint without the run's context (`coconut ckpt`, `coconut eval
// --checkpoint`): its trainer state as JSON, and the model shape recorded there
// ("model"), which lays out "params". Both throw naming dir/manifest.pb.
nlohmann::json checkpoint_trainer_state(const std::string& dir, const parallel::Manifest& m);
model::GPT2Config checkpoint_model_shape(const std::string& dir, const nlohmann::json& state);

// The checkpoint of a run that `which` names (`coconut eval --checkpoint`): "latest", the
// newest committed one under the run's checkpoint root; a step number N, ROOT/step-N
// (eight digits); anything else a path (a committed checkpoint, or a root holding some).
// Throws naming what it looked for.
std::string find_run_checkpoint(const TrainConfig& c, const std::string& which);

// The weights of checkpoint `dir` for evaluation: "params" into `params` (the model
// `mc` lays out; any writer topology) and, when `eot` is given, the <eot> classifier's.
// Checks that the checkpoint holds this model (shape, vocabulary, tokenizer: the model
// digest). Returns the step and the stage the weights last trained at (the stage of
// the last started epoch).
struct CheckpointWeights {
  int64_t step = 0;
  int stage = 0;
};
CheckpointWeights read_checkpoint_weights(const std::string& dir, const model::GPT2Config& mc,
                                          const curriculum::Tokenizer& tok, float* params,
                                          curriculum::EotClassifier* eot);

// Resume: keeps the rows of RUN_DIR/metrics.jsonl of the epochs reported before the
// checkpoint (those before st.epoch, or before its unreported epoch) and the
// rows of RUN_DIR/steps.jsonl up to st.step (a run killed after its last checkpoint may
// have written more), so that the resumed run continues both files.
void trim_run_logs(const std::filesystem::path& run_dir, const TrainState& st);

// Saving, per the checkpoint.* keys: synchronously, or with checkpoint.async as a
// snapshot whose write overlaps the next steps (committed at the next save or finish()).
class RunCheckpointer {
 public:
  explicit RunCheckpointer(TrainContext& ctx);
  ~RunCheckpointer();

  // Saving at all (checkpoint.every_steps > 0 or checkpoint.at_epoch_end).
  bool enabled() const;
  // Whether the state after this step is an every_steps point.
  bool step_due(const TrainState& st) const;
  // Whether the end of `epoch` is saved: every epoch with at_epoch_end, and the end of
  // every curriculum stage (a milestone, kept by retention) and of the run when saving
  // at all.
  bool epoch_end_due(int epoch) const;
  bool stage_ends(int epoch) const;  // epoch is the last of its stage (or of the run)

  // Collective: saves st (milestone: never deleted by retention). A second save of the
  // step already saved is skipped (unless that save held the step's epoch unreported
  // and this one does not: TrainState::unreported).
  void save(const TrainState& st, bool milestone);
  // After a resume from `dir` with state st: a save of it into the same root is skipped.
  void note_resumed(const std::string& dir, const TrainState& st);
  // Collective: commits a pending asynchronous save. Returns the last committed directory.
  std::string finish();

 private:
  TrainContext& ctx_;
  std::string root_;
  std::unique_ptr<parallel::AsyncCheckpointer> async_;
  int64_t last_saved_step_ = -1;
  bool last_saved_unreported_ = false;
  std::string last_dir_;
};

}  // namespace coconut::launcher
