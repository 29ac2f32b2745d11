// Sequence lengths against model.max_positions (see sequence_lengths.h).
#include "launcher/sequence_lengths.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "curriculum/batching.h"
#include "launcher/train_loop.h"

namespace coconut::launcher {

SequenceLengths measure_sequence_lengths(const TrainConfig& c, const std::vector<curriculum::TokenizedSample>& train,
                                         const std::vector<NamedSplit>& eval_splits, const curriculum::Tokenizer& tok,
                                         int from_epoch, int max_positions) {
  SequenceLengths l;
  const curriculum::CurriculumConfig& cc = c.curriculum;
  const bool by_epoch = cc.method == curriculum::Method::icot;  // its sequences shrink epoch by epoch
  // Each item's extent at a stage, built once (every epoch of a stage builds the same
  // sequences, only their order and pairing in batches change).
  std::map<int, std::vector<curriculum::SampleExtent>> extents;  // stage -> per item (length 0: not built yet)
  std::vector<int> stages;  // the stages trained, for the prompts
  for (int epoch = from_epoch; epoch < c.epochs; ++epoch) {
    if (by_epoch) extents.clear();
    const int stage = cc.stage_of_epoch(epoch);
    if (std::find(stages.begin(), stages.end(), stage) == stages.end()) stages.push_back(stage);
    const std::vector<size_t> order = epoch_order(train.size(), c.seed, epoch);
    std::vector<curriculum::SampleExtent> micro;
    for (size_t begin = 0; begin < order.size(); begin += static_cast<size_t>(c.batch_size)) {
      const size_t end = std::min(order.size(), begin + static_cast<size_t>(c.batch_size));
      for (size_t m = begin; m < end; m += static_cast<size_t>(c.micro_batch_size)) {
        micro.clear();
        for (size_t i = m; i < std::min(end, m + static_cast<size_t>(c.micro_batch_size)); ++i) {
          const size_t item = order[i];
          const int s = sample_stage(c, epoch, item, train[item].steps.size());
          std::vector<curriculum::SampleExtent>& at = extents[s];
          if (at.empty()) at.resize(train.size());
          if (at[item].length == 0)
            at[item] = curriculum::sample_extent(curriculum::build_training_sample(train[item], cc, s, epoch, tok), tok);
          micro.push_back(at[item]);
          l.longest_item = std::max(l.longest_item, at[item].length);
        }
        const int T = curriculum::aligned_layout(micro, std::max(1, c.pad_columns)).T;
        if (T > l.longest_batch) {
          l.longest_batch = T;
          l.batch_epoch = epoch;
          l.batch_stage = stage;
          l.batch_index = static_cast<int64_t>(begin / static_cast<size_t>(c.batch_size));
          l.micro_index = static_cast<int>((m - begin) / static_cast<size_t>(c.micro_batch_size));
        }
      }
    }
  }
  // The prompts, as evaluation builds them (curriculum/evaluation.cpp): question, <bot>,
  // the stage's thoughts, <eot>; generation continues after them.
  for (const NamedSplit& split : eval_splits) {
    size_t n = split.samples->size();
    if (c.eval_max_items > 0) n = std::min(n, static_cast<size_t>(c.eval_max_items));
    for (size_t i = 0; i < n; ++i) {
      const curriculum::TokenizedSample t = curriculum::tokenize_sample((*split.samples)[i], tok);
      for (int stage : stages) {
        const int P = static_cast<int>(curriculum::build_eval_prompt(t, cc, stage, tok).tokens.size());
        if (P + c.max_new_tokens > max_positions) ++l.prompts_cut;
        if (P > l.longest_prompt) {
          l.longest_prompt = P;
          l.prompt_split = split.name;
          l.prompt_item = static_cast<int64_t>(i);
          l.prompt_stage = stage;
        }
      }
    }
  }
  return l;
}

std::string describe_sequence_lengths(const SequenceLengths& l, int max_positions, MicroBatches measured) {
  return fmt::format("sequence lengths: the longest training micro-batch has {} columns{} (epoch {}, stage {}; the "
                     "longest sequence alone {}), the longest evaluation prompt {} tokens; model.max_positions {}",
                     l.longest_batch,
                     measured == MicroBatches::exact ? ""
                                                     : " as one micro-batch per batch (smaller micro-batches are no longer)",
                     l.batch_epoch, l.batch_stage, l.longest_item, l.longest_prompt, max_positions);
}

std::string sequence_length_problem(const SequenceLengths& l, int max_positions, MicroBatches measured) {
  if (measured == MicroBatches::whole_batches && l.longest_item > max_positions)
    return fmt::format("the training data does not fit model.max_positions {}: a sequence has {} tokens. Raise "
                       "model.max_positions (a pretrained model's is fixed) or leave the longest items out of the data",
                       max_positions, l.longest_item);
  if (measured == MicroBatches::exact && l.longest_batch > max_positions) {
    const std::string why =
        l.longest_item > max_positions
            ? fmt::format("its longest sequence alone has {} tokens", l.longest_item)
            : fmt::format("every sequence fits on its own (the longest has {} tokens), but aligning the first "
                          "<latent> of each sample of a micro-batch at one column makes it longer; a smaller "
                          "train.micro_batch_size pairs fewer of them",
                          l.longest_item);
    return fmt::format("the training data does not fit model.max_positions {}: micro-batch {} of batch {} in epoch {} "
                       "(stage {}) has {} columns; {}. Raise model.max_positions (a pretrained model's is fixed) or "
                       "leave the longest items out of the data",
                       max_positions, l.micro_index, l.batch_index, l.batch_epoch, l.batch_stage, l.longest_batch, why);
  }
  // generate.cpp needs at least one position after the prompt.
  if (l.longest_prompt >= max_positions)
    return fmt::format("the evaluation prompt of {} item {} at stage {} has {} tokens: no position of "
                       "model.max_positions {} is left to generate. Raise model.max_positions or leave the longest "
                       "items out of the data",
                       l.prompt_split, l.prompt_item, l.prompt_stage, l.longest_prompt, max_positions);
  return "";
}

}  // namespace coconut::launcher
