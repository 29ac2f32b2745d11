// The learned <eot> classifier: decision rows of a batch, logistic-regression loss and
// its gradients, its own AdamW, and its file (see eot_classifier.h).
#include "curriculum/eot_classifier.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "runtime/check.h"

namespace coconut::curriculum {

std::vector<EotTarget> eot_targets(const model::SequenceBatch& batch, const Tokenizer& tok) {
  const int B = batch.B, T = batch.T;
  std::vector<EotTarget> out;
  for (int s = 0; s < B; ++s) {
    auto token = [&](int t) { return batch.tokens[static_cast<size_t>(t) * B + s]; };
    auto real = [&](int t) { return batch.key_mask[static_cast<size_t>(t) * B + s] != 0; };
    int bot = -1;
    for (int t = 0; t < T && bot < 0; ++t)
      if (real(t) && token(t) == tok.start_latent_id()) bot = t;
    if (bot < 0) continue;
    int n = 0;
    while (bot + 1 + n < T && real(bot + 1 + n) && token(bot + 1 + n) == tok.latent_id()) ++n;
    for (int t = bot + 1 + n; t < T; ++t)
      COCONUT_CHECK(!real(t) || token(t) != tok.latent_id(),
                    "sample {} of the batch has a <latent> at column {} after its thoughts ended: latents must be "
                    "contiguous after <bot>", s, t);
    // The hidden state at column bot + i decides the input of column bot + i + 1.
    for (int i = 0; i <= n; ++i)
      out.push_back({(bot + i) * B + s, static_cast<uint8_t>(i == n ? 1 : 0)});
  }
  return out;
}

namespace {

std::vector<model::TensorSpec> classifier_tensors(int C) {
  COCONUT_CHECK(C >= 1, "the <eot> classifier needs d_model >= 1 (got {})", C);
  // As a torch nn.Linear(C, 1): a matrix (decayed under decay_matrices_only) and a bias.
  return {{"eot.weight", {1, C}, 0, static_cast<size_t>(C), true},
          {"eot.bias", {1}, static_cast<size_t>(C), 1, false}};
}

}  // namespace

EotClassifier::EotClassifier(int d_model, const model::AdamWConfig& adamw)
    : d_model_(d_model),
      params_(static_cast<size_t>(d_model) + 1, 0.f),
      grads_(static_cast<size_t>(d_model) + 1, 0.f),
      opt_(adamw, classifier_tensors(d_model), 0, static_cast<size_t>(d_model) + 1) {}

float EotClassifier::logit(const float* h) const {
  float z = params_[d_model_];
  for (int c = 0; c < d_model_; ++c) z += params_[c] * h[c];
  return z;
}

float EotClassifier::prob_stop(const float* h) const { return 1.f / (1.f + std::exp(-logit(h))); }

double EotClassifier::loss_and_grad(const float* hidden, const std::vector<EotTarget>& targets, int count,
                                    float model_weight, float* d_hidden) {
  COCONUT_CHECK(count >= static_cast<int>(targets.size()) && count > 0,
                "the <eot> loss is averaged over {} rows but this batch alone has {}", count, targets.size());
  const int C = d_model_;
  const double inv = 1.0 / count;
  double sum = 0;
  for (const EotTarget& t : targets) {
    const float* h = hidden + static_cast<size_t>(t.row) * C;
    const double z = logit(h), y = t.stop;
    // -[y log s(z) + (1-y) log(1 - s(z))], written to stay finite for any z.
    const double bce = std::max(z, 0.0) - z * y + std::log1p(std::exp(-std::abs(z)));
    sum += bce;
    stats_.bce_sum += bce;
    stats_.rows += 1;
    stats_.correct += (z > 0) == (t.stop != 0);
    const float dz = static_cast<float>((1.0 / (1.0 + std::exp(-z)) - y) * inv);
    for (int c = 0; c < C; ++c) grads_[c] += dz * h[c];
    grads_[C] += dz;
    if (d_hidden && model_weight != 0.f) {
      float* dh = d_hidden + static_cast<size_t>(t.row) * C;
      const float g = model_weight * dz;
      for (int c = 0; c < C; ++c) dh[c] += g * params_[c];
    }
  }
  return sum * inv;
}

model::MultipassRunner::HiddenLoss EotClassifier::hidden_loss(std::vector<EotTarget> targets, int count,
                                                              float weight) {
  return [this, targets = std::move(targets), count, weight](const model::Activations& acts,
                                                            MeteredVector<float>& d_hidden) {
    COCONUT_CHECK(acts.C == d_model_, "the <eot> classifier has d_model {} but the model {}", d_model_, acts.C);
    for (const EotTarget& t : targets)
      COCONUT_CHECK(t.row >= 0 && t.row < acts.B * acts.T, "<eot> decision row {} outside the batch's {} rows",
                    t.row, acts.B * acts.T);
    if (targets.empty()) return 0.0;
    return weight * loss_and_grad(acts.lnf, targets, count, weight, d_hidden.data());
  };
}

void EotClassifier::zero_grads() { std::fill(grads_.begin(), grads_.end(), 0.f); }

void EotClassifier::step(float lr) { opt_.step(params_.data(), grads_.data(), lr); }

EotClassifier::Stats EotClassifier::take_stats() {
  const Stats s = stats_;
  stats_ = {};
  return s;
}

void EotClassifier::save(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    COCONUT_CHECK(out.good(), "cannot write the <eot> classifier '{}'", tmp);
    out << "coconut-eot-classifier v1\nd_model " << d_model_ << "\n" << std::hexfloat;
    for (float v : params_) out << v << "\n";
    COCONUT_CHECK(out.good(), "writing the <eot> classifier '{}' failed", tmp);
  }
  std::filesystem::rename(tmp, path);
}

EotClassifier EotClassifier::load(const std::string& path, const model::AdamWConfig& adamw) {
  std::ifstream in(path);
  COCONUT_CHECK(in.good(), "cannot open the <eot> classifier '{}'", path);
  std::string line;
  COCONUT_CHECK(std::getline(in, line) && line == "coconut-eot-classifier v1",
                "{}:1: expected 'coconut-eot-classifier v1', got '{}'", path, line);
  COCONUT_CHECK(std::getline(in, line) && line.rfind("d_model ", 0) == 0, "{}:2: expected 'd_model <C>', got '{}'",
                path, line);
  char* end = nullptr;
  const long C = std::strtol(line.c_str() + 8, &end, 10);
  COCONUT_CHECK(*end == '\0' && C >= 1 && C <= (1 << 20), "{}:2: bad d_model '{}'", path, line.substr(8));
  EotClassifier clf(static_cast<int>(C), adamw);
  for (size_t i = 0; i < clf.params_.size(); ++i) {
    const size_t lineno = i + 3;
    COCONUT_CHECK(std::getline(in, line), "{}: ends at line {}, expected {} values after the header", path, lineno,
                  clf.params_.size());
    const float v = std::strtof(line.c_str(), &end);
    COCONUT_CHECK(!line.empty() && *end == '\0' && std::isfinite(v), "{}:{}: expected a finite number, got '{}'",
                  path, lineno, line);
    clf.params_[i] = v;
  }
  COCONUT_CHECK(!std::getline(in, line) || line.empty(), "{}:{}: unexpected text after the {} values", path,
                clf.params_.size() + 3, clf.params_.size());
  return clf;
}

}  // namespace coconut::curriculum
