// Sample layout per stage and method (see samples.h and DESIGN.md 2.1).
#include "curriculum/samples.h"

#include <algorithm>

#include "runtime/check.h"

namespace coconut::curriculum {

namespace {
const std::vector<std::pair<Method, std::string>> kMethods = {
    {Method::coconut, "coconut"},       {Method::cot, "cot"},
    {Method::no_cot, "no_cot"},         {Method::pause, "pause"},
    {Method::pause_as_thought, "pause_as_thought"}, {Method::no_curriculum, "no_curriculum"},
    {Method::no_thought, "no_thought"}, {Method::icot, "icot"}};
}  // namespace

Method parse_method(const std::string& name) {
  std::string valid;
  for (const auto& [m, n] : kMethods) {
    if (n == name) return m;
    valid += (valid.empty() ? "" : ", ") + n;
  }
  COCONUT_FAIL("unknown method '{}' (expected one of: {})", name, valid);
}

std::string method_name(Method m) {
  for (const auto& [mm, n] : kMethods)
    if (mm == m) return n;
  return "?";
}

void CurriculumConfig::validate() const {
  COCONUT_CHECK(c_thought >= 0, "curriculum.c_thought must be >= 0 (got {})", c_thought);
  COCONUT_CHECK(max_latent_stage >= 0, "curriculum.max_latent_stage must be >= 0 (got {})", max_latent_stage);
  COCONUT_CHECK(epochs_per_stage >= 1, "curriculum.epochs_per_stage must be >= 1 (got {})", epochs_per_stage);
  COCONUT_CHECK(uniform_prob >= 0 && uniform_prob <= 1, "curriculum.uniform_prob must be in [0, 1] (got {})",
                uniform_prob);
  COCONUT_CHECK(icot_tokens_per_epoch >= 1, "curriculum.icot_tokens_per_epoch must be >= 1 (got {})",
                icot_tokens_per_epoch);
}

int CurriculumConfig::stage_of_epoch(int epoch) const {
  switch (method) {
    case Method::cot:
    case Method::no_cot:
    case Method::icot: return 0;
    case Method::pause:
    case Method::no_curriculum: return max_latent_stage + 1;
    default: return epoch / epochs_per_stage;
  }
}

bool CurriculumConfig::has_markers() const {
  return method == Method::coconut || method == Method::pause || method == Method::pause_as_thought ||
         method == Method::no_curriculum;
}

TokenizedSample tokenize_sample(const Sample& sample, const Tokenizer& tok) {
  TokenizedSample t;
  t.question = tok.encode(sample.question + "\n");
  for (const std::string& step : sample.steps) t.steps.push_back(tok.encode(step + "\n"));
  t.answer = tok.encode("### " + sample.answer);
  t.answer.push_back(tok.eos_id());
  return t;
}

namespace {

// question [<bot>] <latent>*n [<eot>] then `rest`; labels -100 up to the end of the markers.
BuiltSample assemble(const TokenizedSample& s, bool markers, int n_latents, const std::vector<int>& rest,
                     const Tokenizer& tok, bool question_loss = false) {
  BuiltSample b;
  b.tokens = s.question;
  if (markers) b.tokens.push_back(tok.start_latent_id());
  b.tokens.insert(b.tokens.end(), n_latents, tok.latent_id());
  if (markers) b.tokens.push_back(tok.end_latent_id());
  b.labels.assign(b.tokens.size(), -100);
  if (question_loss) std::copy(s.question.begin(), s.question.end(), b.labels.begin());
  b.tokens.insert(b.tokens.end(), rest.begin(), rest.end());
  b.labels.insert(b.labels.end(), rest.begin(), rest.end());
  b.n_latents = n_latents;
  return b;
}

}  // namespace

BuiltSample build_training_sample(const TokenizedSample& s, const CurriculumConfig& cc, int stage, int epoch,
                                  const Tokenizer& tok) {
  const int n_steps = static_cast<int>(s.steps.size());
  std::vector<int> rest;
  if (cc.method == Method::icot) {
    // Stepwise internalisation: drop CoT tokens from the front, a fixed number per epoch.
    std::vector<int> cot;
    for (const auto& step : s.steps) cot.insert(cot.end(), step.begin(), step.end());
    const size_t drop = std::min(cot.size(), static_cast<size_t>(epoch) * cc.icot_tokens_per_epoch);
    rest.assign(cot.begin() + static_cast<std::ptrdiff_t>(drop), cot.end());
    rest.insert(rest.end(), s.answer.begin(), s.answer.end());
    return assemble(s, false, 0, rest, tok, cc.question_loss);
  }
  int skip = 0, latents = 0;
  if (cc.method == Method::no_cot) {
    skip = n_steps;
  } else if (stage > cc.max_latent_stage) {
    skip = n_steps;
    latents = cc.pad_latent_to_max ? cc.max_latent_stage : std::min(n_steps, cc.max_latent_stage);
  } else {
    // A sample with fewer steps than the stage loses them all and keeps stage * c latents.
    skip = std::min(stage, n_steps);
    latents = stage;
  }
  const int c = cc.method == Method::no_thought ? 0 : cc.c_thought;
  for (int i = skip; i < n_steps; ++i) rest.insert(rest.end(), s.steps[i].begin(), s.steps[i].end());
  rest.insert(rest.end(), s.answer.begin(), s.answer.end());
  return assemble(s, cc.has_markers(), latents * c, rest, tok, cc.question_loss);
}

BuiltSample build_eval_prompt(const TokenizedSample& s, const CurriculumConfig& cc, int stage, const Tokenizer& tok) {
  // The official get_question_latent_dataset: min(stage, max_latent_stage) thoughts of c,
  // and without padding also at most the sample's number of steps (read from the
  // reference, as the official does). So a model is evaluated with the thoughts it was
  // trained with: a stage-2 model with 2 (padding does not give an early stage more), and
  // past the last stage a sample with fewer steps than max_latent_stage with as many as
  // its training sample had. Only at stages <= max_latent_stage without padding does a
  // sample with fewer steps than the stage get fewer thoughts than in training (stage *
  // c there), as in the official code. Batches may then mix counts; the generator caps
  // each sample at its own.
  const int n_steps = static_cast<int>(s.steps.size());
  const int cap = cc.pad_latent_to_max ? cc.max_latent_stage : std::min(cc.max_latent_stage, n_steps);
  const int k = cc.has_markers() ? std::min(stage, cap) * cc.c_thought : 0;
  return assemble(s, cc.has_markers(), k, {}, tok);
}

}  // namespace coconut::curriculum
