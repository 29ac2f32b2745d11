// Single-process training through the curriculum: data, tokenizer, model, the epoch
// loop with stage switches and optimizer resets, evaluation after epochs, and the run
// directory (config copy, tokenizer, metrics.jsonl, evaluation reports, final model).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "curriculum/dataset.h"
#include "curriculum/eot_classifier.h"
#include "curriculum/tokenizer.h"
#include "launcher/train_config.h"
#include "model/gpt2.h"
#include "parallel/comm.h"

namespace coconut::launcher {

struct TrainSummary {
  double final_loss = 0;
  double valid_accuracy = -1, test_accuracy = -1;  // -1: not evaluated
  int final_stage = 0;
  // Wall seconds of the run: this process's, plus those of the earlier attempts that a
  // resumed run continues (each up to the checkpoint resumed from); attempts counts them all.
  double seconds = 0, attempt_seconds = 0;
  int attempts = 1;
  std::vector<double> epoch_losses;  // mean training loss per epoch
  bool stopped = false;  // checkpoint.stop_after_steps or a stop signal ended the run early (no final evaluation)
  int stop_signal = 0;   // the signal that stopped it (runtime/stop_signals.h), or 0
  // Set when the run diverged: a step's loss or gradient, or the state a checkpoint was
  // about to save, was not finite; says what. The run stopped there without saving it
  // (stopped is also set). (kExitDiverged, kDivergedFile: launcher/run_output.h.)
  std::string diverged_why;
  bool diverged() const { return !diverged_why.empty(); }
  // eval.keep_best: the best validation accuracy at the final stage, its epoch, and the
  // test accuracy of that model (-1: none).
  double best_valid_accuracy = -1, best_test_accuracy = -1;
  int best_epoch = -1;
};


// The datasets of a run: loaded from files or generated, per DataConfig.
struct RunData {
  std::vector<curriculum::Sample> train, valid, test;
  std::string valid_name = "valid", test_name = "test";
};
RunData load_run_data(const DataConfig& d);

// Word tokenizer built from the data (or GPT-2 BPE from bpe_dir). With init_from (a
// model directory), the word vocabulary extends the one the model was trained with, read
// from INIT_FROM/tokenizer.txt (kWordVocabularyFile), so that every pretrained
// embedding row keeps its word.
inline constexpr const char* kWordVocabularyFile = "tokenizer.txt";
std::unique_ptr<curriculum::Tokenizer> make_tokenizer(const DataConfig& d, const RunData& data,
                                                      const std::string& init_from = "");

// world: the job's communicator under mpirun/srun (nullptr or size 1: one process).
// With several ranks the unrolled recurrence runs on parallel.pp pipeline stages x
// parallel.dp replicas (parallel/executor.h), or with train.device: cuda on parallel.dp
// data-parallel GPUs (launcher/device_step.h); rank 0 evaluates and writes the run dir.
// local_rank / local_size: this rank's place on its node (MpiRuntime), which picks its GPU.
TrainSummary run_training(const TrainConfig& config, parallel::Communicator* world = nullptr, int local_rank = 0,
                          int local_size = 1);

// Which weights of a run to read: its final model, its best validation model
// (RUN_DIR/best_model, eval.keep_best), or one of its checkpoints, which a run still
// training or stopped before its end has too (`checkpoint`: find_run_checkpoint's
// latest, a step number or a path; "" = not a checkpoint).
struct RunWeights {
  bool best = false;
  std::string checkpoint;
};

// A run read back from its directory: its configuration (config.yaml, with run.dir
// pointing at the directory), its tokenizer and the model `RunWeights` names.
struct LoadedRun {
  TrainConfig config;
  std::unique_ptr<curriculum::Tokenizer> tokenizer;
  std::unique_ptr<model::GPT2> model;
  std::unique_ptr<curriculum::EotClassifier> eot;  // when the run trained one
  // The stage of the last training epoch; of the best model's epoch; of the epoch the
  // checkpoint was taken in.
  int final_stage = 0;
  bool best = false;           // the model is RUN_DIR/best_model (eval.keep_best), not RUN_DIR/model
  std::string checkpoint_dir;  // the model is this checkpoint's
  int64_t checkpoint_step = -1;
};
LoadedRun load_run(const std::string& run_dir, const RunWeights& weights = {});

}  // namespace coconut::launcher
