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
};

struct Generation {
  std::vector<int> ids;  // generated tokens after <eot>, without the final <eos>
  int thoughts = 0;      // continuous thoughts used before <eot>
  // With keep_thought_states: each thought in order, d_model floats each.
  std::vector<std::vector<float>> thought_states;
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
