// Accuracy of a model on a dataset: builds each item's evaluation prompt for the
// method and stage, generates greedily in batches (thoughts fed back where the method
// does), and compares the extracted answer with the reference by exact match
// (DESIGN.md 2.4).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "curriculum/dataset.h"
#include "curriculum/eot_classifier.h"
#include "curriculum/generate.h"
#include "curriculum/samples.h"
#include "model/decoder.h"
#include "model/gpt2.h"

namespace coconut::curriculum {

// One of the most probable tokens of a continuous thought read through the LM head
// (the paper's decoding of thoughts into language, section 5).
struct ThoughtToken {
  std::string token;
  float prob = 0;
};
// A continuous thought's most probable tokens, most probable first.
using ThoughtDecoder = std::function<std::vector<ThoughtToken>(const float* hidden)>;
// The k most probable tokens of softmax(h wte^T) (the model's tied LM head); k >= 1,
// at most the vocabulary.
ThoughtDecoder top_thought_tokens(const model::GPT2& model, const Tokenizer& tok, int k);

struct EvalItem {
  std::string prediction;  // extracted answer
  std::string reference;   // normalised reference answer
  std::string generated;   // full generated text (steps and answer)
  int generated_tokens = 0;
  int thoughts = 0;        // continuous thoughts used before <eot>
  bool correct = false;
  // With a thought decoder: each continuous thought's most probable tokens, in order.
  std::vector<std::vector<ThoughtToken>> thought_tokens;
  // Under `coconut eval --thought-source other`: the item each thought came from (its own
  // index where it kept its own).
  std::vector<int> thought_donors;
};

struct EvalResult {
  int correct = 0, total = 0;
  double mean_generated_tokens = 0;
  std::string eot_strategy = "fixed";  // fixed | classifier
  double mean_thoughts = 0;            // per item (the fixed K unless the classifier decides)
  std::vector<EvalItem> items;
  // Ended early by GenerateOptions::stop_requested: the counts and items are incomplete
  // and mean nothing.
  bool interrupted = false;
  double accuracy() const { return total ? static_cast<double>(correct) / total : 0.0; }
};

// One of `count` workers of an evaluation (ranks under mpirun): it generates the batches
// k with k % count == index, batches of the same items as one worker would form, so
// the workers' items together are one worker's result bit for bit.
struct EvalShard {
  int index = 0, count = 1;
};

// eot_classifier: nullptr for the fixed count of thoughts (the reference); otherwise the
// classifier decides when to leave latent mode, capped at the stage's count (only for
// methods whose thoughts are fed back: an error otherwise). With a shard of several,
// the result holds this shard's items only (the others stay default, generated_tokens
// -1) and its counts and means over them; merge_eval_shards joins the shards.
// The first form evaluates the CPU model; the second any model through its decoder
// (model/decoder.h), e.g. a GPU model's. stop_requested (optional) is asked before each
// batch; once it answers true no batch starts and the result is `interrupted`.
EvalResult evaluate(const model::GPT2& model, const Tokenizer& tok, const std::vector<Sample>& samples,
                    const CurriculumConfig& cc, int stage, int batch_size, int max_new_tokens,
                    const EotClassifier* eot_classifier = nullptr, EvalShard shard = {},
                    const ThoughtDecoder& decode_thought = {}, const std::function<bool()>& stop_requested = {});
// decode_thought (optional): each item's continuous thoughts through it into
// EvalItem::thought_tokens (written by write_eval_report).
EvalResult evaluate(model::Decoder& decoder, const Tokenizer& tok, const std::vector<Sample>& samples,
                    const CurriculumConfig& cc, int stage, int batch_size, int max_new_tokens,
                    const EotClassifier* eot_classifier = nullptr, EvalShard shard = {},
                    const ThoughtDecoder& decode_thought = {}, const std::function<bool()>& stop_requested = {});

// The third form hands this shard's batches to `generate` all at once (each batch the
// prompts of its items, in order) and scores what it returns, one list of generations
// per batch (only the first ones once GenerateOptions::stop_requested said stop): a
// driver that decodes several batches at a time (the stages of a pipeline,
// launcher/staged_generation.h). The second form is the third with one decoder
// generating the batches one after another.
using BatchGenerator = std::function<std::vector<std::vector<Generation>>(
    const std::vector<std::vector<const BuiltSample*>>& batches, const GenerateOptions& options)>;
EvalResult evaluate(const BatchGenerator& generate, const Tokenizer& tok, const std::vector<Sample>& samples,
                    const CurriculumConfig& cc, int stage, int batch_size, int max_new_tokens,
                    const EotClassifier* eot_classifier = nullptr, EvalShard shard = {},
                    const ThoughtDecoder& decode_thought = {}, const std::function<bool()>& stop_requested = {});

// Every shard's result (same samples, same batch size) joined into one worker's result:
// each item from the shard that generated it, counts and means over all items.
EvalResult merge_eval_shards(const std::vector<EvalResult>& shards);

// An EvalResult as JSON and back (every field, every item), to send a shard's result
// between processes.
std::string eval_result_to_json(const EvalResult& r);
EvalResult eval_result_from_json(const std::string& text);

// Writes the result as JSON: accuracy, counts and every item's prediction, and where the
// continuous thoughts came from (thought_source: own, or an intervention of
// model::ThoughtSource).
void write_eval_report(const std::string& path, const EvalResult& result, const std::string& dataset_name,
                       const std::string& thought_source = "own");

}  // namespace coconut::curriculum
