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
                    const CurriculumConfig& cc, int stage, int batch_size, int max_new_tokens) {
  COCONUT_CHECK(batch_size >= 1, "evaluation batch size must be >= 1 (got {})", batch_size);
  EvalResult result;
  result.items.resize(samples.size());
  std::vector<BuiltSample> prompts(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) prompts[i] = build_eval_prompt(tokenize_sample(samples[i], tok), cc, stage, tok);
  double tokens = 0;
  for (size_t begin = 0; begin < samples.size(); begin += batch_size) {
    const size_t end = std::min(samples.size(), begin + static_cast<size_t>(batch_size));
    std::vector<const BuiltSample*> batch;
    for (size_t i = begin; i < end; ++i) batch.push_back(&prompts[i]);
    const auto generated = generate_greedy(model, batch, tok, cc.feeds_back(), max_new_tokens);
    for (size_t i = begin; i < end; ++i) {
      EvalItem& item = result.items[i];
      item.generated = tok.decode(generated[i - begin]);
      item.generated_tokens = static_cast<int>(generated[i - begin].size());
      item.prediction = extract_answer(item.generated);
      item.reference = extract_answer(tok.decode(tok.encode(samples[i].answer)));
      item.correct = item.prediction == item.reference;
      result.correct += item.correct;
      tokens += item.generated_tokens;
    }
  }
  result.total = static_cast<int>(samples.size());
  result.mean_generated_tokens = samples.empty() ? 0 : tokens / samples.size();
  return result;
}

void write_eval_report(const std::string& path, const EvalResult& r, const std::string& dataset_name) {
  nlohmann::json j;
  j["dataset"] = dataset_name;
  j["accuracy"] = r.accuracy();
  j["correct"] = r.correct;
  j["total"] = r.total;
  j["mean_generated_tokens"] = r.mean_generated_tokens;
  j["items"] = nlohmann::json::array();
  for (size_t i = 0; i < r.items.size(); ++i) {
    const EvalItem& it = r.items[i];
    j["items"].push_back({{"index", i}, {"correct", it.correct}, {"prediction", it.prediction},
                          {"reference", it.reference}, {"generated", it.generated}});
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
