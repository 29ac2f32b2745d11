// Dataset accuracy by batched greedy generation (see evaluation.h).
#include "curriculum/evaluation.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "curriculum/generate.h"
#include "runtime/check.h"

namespace coconut::curriculum {

EvalResult evaluate(const model::GPT2& model, const Tokenizer& tok, const std::vector<Sample>& samples,
                    const CurriculumConfig& cc, int stage, int batch_size, int max_new_tokens,
                    const EotClassifier* eot_classifier) {
  COCONUT_CHECK(batch_size >= 1, "evaluation batch size must be >= 1 (got {})", batch_size);
  COCONUT_CHECK(!eot_classifier || cc.feeds_back(),
                "the <eot> classifier decides when continuous thoughts end: method '{}' has none",
                method_name(cc.method));
  const bool classifier = eot_classifier != nullptr;
  EvalResult result;
  result.eot_strategy = classifier ? "classifier" : "fixed";
  GenerateOptions options;
  options.feed_back = cc.feeds_back();
  options.max_new_tokens = max_new_tokens;
  options.eot_classifier = eot_classifier;
  result.items.resize(samples.size());
  std::vector<BuiltSample> prompts(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) prompts[i] = build_eval_prompt(tokenize_sample(samples[i], tok), cc, stage, tok);
  double tokens = 0, thoughts = 0;
  for (size_t begin = 0; begin < samples.size(); begin += batch_size) {
    const size_t end = std::min(samples.size(), begin + static_cast<size_t>(batch_size));
    std::vector<const BuiltSample*> batch;
    for (size_t i = begin; i < end; ++i) batch.push_back(&prompts[i]);
    const std::vector<Generation> generated = generate_greedy(model, batch, tok, options);
    for (size_t i = begin; i < end; ++i) {
      EvalItem& item = result.items[i];
      const Generation& g = generated[i - begin];
      item.generated = tok.decode(g.ids);
      item.generated_tokens = static_cast<int>(g.ids.size());
      item.thoughts = g.thoughts;
      item.prediction = extract_answer(item.generated);
      item.reference = extract_answer(tok.decode(tok.encode(samples[i].answer)));
      item.correct = item.prediction == item.reference;
      result.correct += item.correct;
      tokens += item.generated_tokens;
      thoughts += item.thoughts;
    }
  }
  result.total = static_cast<int>(samples.size());
  result.mean_generated_tokens = samples.empty() ? 0 : tokens / samples.size();
  result.mean_thoughts = samples.empty() ? 0 : thoughts / samples.size();
  return result;
}

void write_eval_report(const std::string& path, const EvalResult& r, const std::string& dataset_name) {
  nlohmann::json j;
  j["dataset"] = dataset_name;
  j["accuracy"] = r.accuracy();
  j["correct"] = r.correct;
  j["total"] = r.total;
  j["mean_generated_tokens"] = r.mean_generated_tokens;
  j["eot_strategy"] = r.eot_strategy;
  j["mean_thoughts"] = r.mean_thoughts;
  j["items"] = nlohmann::json::array();
  for (size_t i = 0; i < r.items.size(); ++i) {
    const EvalItem& it = r.items[i];
    j["items"].push_back({{"index", i}, {"correct", it.correct}, {"prediction", it.prediction},
                          {"reference", it.reference}, {"generated", it.generated},
                          {"thoughts", it.thoughts}});
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    COCONUT_CHECK(out.good(), "cannot write evaluation report '{}'", tmp);
    out << j.dump(1) << "\n";
    COCONUT_CHECK(out.good(), "writing evaluation report '{}' failed", tmp);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace coconut::curriculum
