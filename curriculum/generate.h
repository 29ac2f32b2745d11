// Generation with continuous thoughts and answer scoring (DESIGN.md 2.4), a whole batch
// at once. The prompt prefix question "\n" <bot> is run in one pass (prefixes of
// different lengths left-padded to end at the same column), then decoding goes column
// by column, every sample advancing one column per step in its own mode:
//   latent: the next input is the hidden state of the previous column (a thought);
//   leaving latent mode, the next input is the <eot> token;
//   text:   greedy tokens with the KV cache until <eos> or max_new_tokens.
// When a sample leaves latent mode is the <eot> strategy: a fixed count (the
// reference, the default: exactly the prompt's K thoughts) or the learned classifier
// (curriculum/eot_classifier.h: at <bot> and after each thought, leave when
// p(stop) > 0.5, after at most the prompt's K thoughts).
// Methods without feedback (cot, pause, ...) run their whole prompt as the prefix and
// decode text straight away.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "curriculum/eot_classifier.h"
#include "curriculum/samples.h"
#include "model/decoder.h"
#include "model/gpt2.h"

namespace coconut::curriculum {

struct GenerateOptions {
  bool feed_back = false;  // the <latent> slots are continuous thoughts (coconut)
  int max_new_tokens = 64;
  // nullptr: the fixed count. Otherwise the classifier decides when to emit <eot>; the
  // prompt's K latents are then the cap.
  const EotClassifier* eot_classifier = nullptr;
  // Keep every continuous thought (the final hidden state fed back) in the result.
  bool keep_thought_states = false;
  // For a driver of many batches (curriculum::BatchGenerator): asked before each batch
  // starts; true ends the generation there, with the batches already started finished
  // (a stop signal during a training run's evaluation). Empty: never.
  std::function<bool()> stop_requested;
};

struct Generation {
  std::vector<int> ids;  // generated tokens after <eot>, without the final <eos>
  int thoughts = 0;      // continuous thoughts used before <eot>
  // With keep_thought_states: each thought in order, d_model floats each.
  std::vector<std::vector<float>> thought_states;
  // Under ThoughtSource::other (model/decoder.h): the batch sample each thought came from.
  std::vector<int> thought_donors;
};

// One batch's greedy decoding as a sequence of forwards, so that a driver can interleave
// several batches, each on its own decoder (launcher/staged_generation.h: the stages of
// a pipeline each working on another batch). generate_greedy is
//   decoder.begin(d.batch_size(), d.max_columns());
//   do { f = d.next_forward(); decoder.forward(f...); } while (d.take(decoder));
class BatchDecoding {
 public:
  // prompts and tok must outlive it; see generate_greedy for the prompts' form.
  BatchDecoding(const std::vector<const BuiltSample*>& prompts, const Tokenizer& tok, const GenerateOptions& options,
                const model::GPT2Config& config);
  int batch_size() const { return B_; }
  int max_columns() const { return T_; }  // the T of the decoder's begin

  // The next forward's columns [a, b) and their inputs ((b - a) * B entries, column by
  // column; thought: per sample, or null when no input is a thought), valid until take().
  struct Forward {
    int a = 0, b = 0;
    const int* tokens = nullptr;
    const int* pos_ids = nullptr;
    const uint8_t* key_mask = nullptr;
    const uint8_t* thought = nullptr;
    // Whether take() will read this forward's greedy tokens: some sample writes text.
    // A forward of thoughts only needs no LM head (the staged decoding skips it there).
    bool needs_tokens = true;
  };
  Forward next_forward();
  // After that forward ran: reads its last column's greedy tokens and hidden states
  // where it needs them and decides every sample's next input. False when the batch is
  // done (then generations() holds the result).
  bool take(model::ColumnOutput& out);
  std::vector<Generation>& generations() { return out_; }

 private:
  void open_column(int t);
  bool any_text() const;
  enum class Mode : uint8_t;
  const Tokenizer& tok_;
  GenerateOptions opt_;
  int B_ = 0, C_ = 0, T_ = 0;
  std::vector<int> cap_;
  std::vector<Mode> mode_;
  std::vector<int> pos_ids_, tokens_, next_;
  std::vector<uint8_t> key_mask_, thought_;
  bool thoughts_in_ = false;  // some sample's input at column a is a thought
  int a_ = 0, b_ = 0;
  std::vector<Generation> out_;
};

// prompts: evaluation prompts as build_eval_prompt makes them; with feed_back each
// one's part after <bot> must be <latent>*K <eot>. On any model through its decoder
// (model/decoder.h: the CPU model's, or a GPU model's); the first form is the CPU's.
std::vector<Generation> generate_greedy(const model::GPT2& model, const std::vector<const BuiltSample*>& prompts,
                                        const Tokenizer& tok, const GenerateOptions& options);
std::vector<Generation> generate_greedy(model::Decoder& decoder, const std::vector<const BuiltSample*>& prompts,
                                        const Tokenizer& tok, const GenerateOptions& options);

// The reference's answer extraction: the text after the last '#', commas removed,
// surrounding whitespace stripped.
std::string extract_answer(const std::string& text);

}  // namespace coconut::curriculum
