// Generation with continuous thoughts and answer scoring (DESIGN.md 2.4): the prompt
// question "\n" <bot> <latent>*K <eot> is run through its passes (thoughts fed back),
// then greedy decoding with the KV cache, a whole batch at once, until <eos> or
// max_new_tokens.
#pragma once

#include <string>
#include <vector>

#include "curriculum/samples.h"
#include "model/gpt2.h"

namespace coconut::curriculum {

// Generated ids per prompt (without the final <eos>).
std::vector<std::vector<int>> generate_greedy(const model::GPT2& model, const std::vector<const BuiltSample*>& prompts,
                                              const Tokenizer& tok, bool feed_back, int max_new_tokens);

// The reference's answer extraction: the text after the last '#', commas removed,
// surrounding whitespace stripped.
std::string extract_answer(const std::string& text);

}  // namespace coconut::curriculum
