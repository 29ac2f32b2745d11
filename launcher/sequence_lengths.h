// Sequence lengths against model.max_positions, checked when `coconut train` starts. A
// training micro-batch longer than the model's positions would otherwise stop the run at
// the epoch that first builds it (a later curriculum stage, a rare pairing of a long
// question with a long chain in one latent-aligned batch), and an evaluation prompt with
// no position left to generate would stop it at the first evaluation: hours in.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "curriculum/samples.h"
#include "curriculum/tokenizer.h"
#include "launcher/train_config.h"

namespace coconut::launcher {

struct SequenceLengths {
  // The longest training micro-batch (columns, after latent alignment and
  // train.pad_columns) and where it is: epoch, stage, batch of the epoch, micro-batch of it.
  int longest_batch = 0;
  int batch_epoch = -1, batch_stage = -1;
  int64_t batch_index = -1;
  int micro_index = -1;
  int longest_item = 0;  // the longest training sequence on its own
  // The longest evaluation prompt (question, <bot>, thoughts, <eot>), its split's name,
  // item and stage; how many prompts leave fewer than eval.max_new_tokens positions.
  int longest_prompt = 0;
  std::string prompt_split;
  int64_t prompt_item = -1;
  int prompt_stage = -1;
  int64_t prompts_cut = 0;
};

// Every training micro-batch of epochs [from_epoch, c.epochs) as the trainer builds it
// (the epoch's order, its curriculum stage or uniform_prob draw, train.batch_size,
// train.micro_batch_size and train.pad_columns), and every evaluation prompt of the
// given splits (their first eval.max_items) at each stage those epochs train.
struct NamedSplit {
  std::string name;
  const std::vector<curriculum::Sample>* samples;
};
// max_positions: the model's (model.init_from's when given), for prompts_cut.
SequenceLengths measure_sequence_lengths(const TrainConfig& c, const std::vector<curriculum::TokenizedSample>& train,
                                         const std::vector<NamedSplit>& eval_splits, const curriculum::Tokenizer& tok,
                                         int from_epoch, int max_positions);

// How the micro-batches were measured: as the trainer builds them, or (the dry run
// without train.micro_batch_size) each batch as one micro-batch, which no micro-batch
// of it outgrows: an upper bound.
enum class MicroBatches { exact, whole_batches };

// The "sequence lengths: ..." line of the trainer's log and of the dry run.
std::string describe_sequence_lengths(const SequenceLengths& l, int max_positions, MicroBatches measured);

// The problem that stops the run (a micro-batch or a prompt that does not fit
// max_positions: what, where, and what to change), or "" when it fits. Measured as whole
// batches, only a sequence too long on its own is certain to stop it.
std::string sequence_length_problem(const SequenceLengths& l, int max_positions,
                                    MicroBatches measured = MicroBatches::exact);

}  // namespace coconut::launcher
