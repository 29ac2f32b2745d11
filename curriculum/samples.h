// Token layout of one training or evaluation sample at a curriculum stage, per method
// (DESIGN.md 2.1), as the reference builds it:
//   question "\n" <bot> <latent>*(n*c) <eot> step[n] "\n" ... "### " answer <eos>
// Labels are -100 on the question, the markers and the latents; every later token is
// its own label (the batch builder shifts them into next-token targets).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "curriculum/dataset.h"
#include "curriculum/tokenizer.h"

namespace coconut::curriculum {

enum class Method { coconut, cot, no_cot, pause, pause_as_thought, no_curriculum, no_thought, icot };
Method parse_method(const std::string& name);  // throws coconut::Error listing the valid names
std::string method_name(Method m);

struct CurriculumConfig {
  Method method = Method::coconut;
  int c_thought = 1;            // continuous thoughts per removed step
  int max_latent_stage = 6;     // stages beyond it remove every step
  int epochs_per_stage = 3;
  bool pad_latent_to_max = false;
  double uniform_prob = 0.0;    // probability of a uniformly drawn stage per sample
  int icot_tokens_per_epoch = 8;  // icot: CoT tokens removed from the front per epoch
  // Also train next-token prediction on the question (not the reference's setting, which
  // labels only the steps and the answer): a from-scratch model then learns the
  // question's language too, which a pre-trained one brings (docs/results.md).
  bool question_loss = false;

  void validate() const;
  // The scheduled stage of an epoch: epoch / epochs_per_stage for curriculum methods,
  // 0 for cot/no_cot, past the last stage for no_curriculum and pause.
  int stage_of_epoch(int epoch) const;
  // Stages past max_latent_stage all remove every step: they train and evaluate alike.
  // The stage that stands for its class (min(stage, max_latent_stage + 1)).
  int effective_stage(int stage) const { return stage < max_latent_stage + 1 ? stage : max_latent_stage + 1; }
  // Whether the <latent> slots are continuous thoughts (fed back) or pause tokens.
  bool feeds_back() const { return method == Method::coconut || method == Method::no_curriculum; }
  bool has_markers() const;
};

// A sample's pieces, tokenised once: question + "\n", each step + "\n", "### " answer <eos>.
struct TokenizedSample {
  std::vector<int> question;
  std::vector<std::vector<int>> steps;
  std::vector<int> answer;
};
TokenizedSample tokenize_sample(const Sample& sample, const Tokenizer& tok);

struct BuiltSample {
  std::vector<int> tokens;
  std::vector<int> labels;  // same length; -100 where no loss
  int n_latents = 0;
};

// The training sequence at a given stage (uniform_prob already resolved by the caller;
// icot uses `epoch` instead of the stage).
BuiltSample build_training_sample(const TokenizedSample& s, const CurriculumConfig& cc, int stage, int epoch,
                                  const Tokenizer& tok);
// The evaluation prompt: question "\n" <bot> <latent>*K <eot> with K = min(stage, max) * c,
// with and without pad_latent_to_max (samples.cpp says how this differs from the official
// code without padding).
BuiltSample build_eval_prompt(const TokenizedSample& s, const CurriculumConfig& cc, int stage, const Tokenizer& tok);

}  // namespace coconut::curriculum
