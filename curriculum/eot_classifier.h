// The paper's alternative <eot> strategy (DESIGN.md 2.4; arXiv 2412.06769):
// instead of a fixed number of continuous thoughts, a binary classifier on the
// final-norm hidden state decides after each thought (and at <bot>) whether the next
// input is another thought or <eot>:
//   p(stop | h) = sigmoid(w . h + b)        (logistic regression, C + 1 parameters)
//
// It trains alongside the model. In a Coconut batch, a sample whose <bot> sits at
// column b and is followed by n latents gives n + 1 decision rows: the hidden states at
// columns b .. b+n-1 are labelled "continue" (the next input is a thought) and the one
// at b+n (the last thought, or <bot> itself when n = 0) "stop" (the next input is
// <eot>). The loss is the mean binary cross-entropy over the decision rows of the
// global batch; eot_loss_weight times it is added to the LM loss, and its gradient
// w.r.t. h flows back into the model (through MultipassRunner's hidden-loss hook), so
// that the model learns to make the decision readable.
//
// w and b live here, not in the GPT-2 flat buffer, so that the Hugging Face export of
// the model stays a plain GPT-2; they are saved next to it in the run directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "curriculum/tokenizer.h"
#include "model/adamw.h"
#include "model/batch.h"
#include "model/multipass.h"

namespace coconut::curriculum {

// One decision row: the hidden state at batch row `row` (time-major, t*B+s) is followed
// by another thought (stop = 0) or by <eot> (stop = 1).
struct EotTarget {
  int row = 0;
  uint8_t stop = 0;
};

// The decision rows of a batch (see the top of this file). Samples without <bot>
// contribute none; the latents after a sample's <bot> must be contiguous.
std::vector<EotTarget> eot_targets(const model::SequenceBatch& batch, const Tokenizer& tok);

class EotClassifier {
 public:
  // w = 0, b = 0: p(stop) = 0.5 everywhere, which does not exceed 0.5, so an untrained
  // classifier keeps thinking up to the cap (the fixed count).
  EotClassifier(int d_model, const model::AdamWConfig& adamw);

  int d_model() const { return d_model_; }
  // [w (C floats), b]; gradients in the same layout.
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  float* grads() { return grads_.data(); }
  const float* grads() const { return grads_.data(); }
  size_t num_params() const { return params_.size(); }

  float logit(const float* h) const;  // w . h + b
  float prob_stop(const float* h) const;
  // The generation decision: p(stop) > 0.5.
  bool stops(const float* h) const { return logit(h) > 0.f; }

  // Binary cross-entropy of the targeted rows of hidden ([rows, C]), summed and divided
  // by `count` (the decision rows of the whole global batch, so that micro-batches add
  // up to one mean). Accumulates its gradient into grads() (the classifier always
  // learns at full strength: AdamW is invariant to a constant gradient scale, so a
  // weight only matters for the model, and weight 0 still trains a probe). When
  // d_hidden is non-null and model_weight != 0, adds model_weight times the gradient
  // w.r.t. the hidden rows into it. Returns the unweighted sum / count.
  double loss_and_grad(const float* hidden, const std::vector<EotTarget>& targets, int count, float model_weight,
                       float* d_hidden);

  // The hook for MultipassRunner::set_hidden_loss: loss_and_grad on the runner's
  // activations, returning weight * (sum BCE / count) as the loss to add. The hook
  // refers to this classifier: it must outlive the runner's use of the hook.
  model::MultipassRunner::HiddenLoss hidden_loss(std::vector<EotTarget> targets, int count, float weight);

  void zero_grads();
  // One AdamW update of w and b from grads() (same rule and settings as the model's).
  void step(float lr);
  // Zero the moments and the step count (with the model's optimizer resets).
  void reset_optimizer() { opt_.reset(); }

  // Running totals since the last take_stats(): BCE summed over rows, rows, and rows
  // whose stop decision (p > 0.5) matched the label.
  struct Stats {
    double bce_sum = 0;
    int64_t rows = 0, correct = 0;
  };
  Stats take_stats();
  // For checkpoints: the running statistics and the optimizer of w and b.
  const Stats& stats() const { return stats_; }
  void set_stats(const Stats& s) { stats_ = s; }
  model::AdamW& optimizer() { return opt_; }

  // Text file, exact (hexadecimal floats):
  //   coconut-eot-classifier v1
  //   d_model <C>
  //   <C + 1 lines: w[0] .. w[C-1], then b>
  // load throws coconut::Error naming the file and line on anything else.
  void save(const std::string& path) const;
  static EotClassifier load(const std::string& path, const model::AdamWConfig& adamw);

 private:
  int d_model_;
  std::vector<float> params_, grads_;
  model::AdamW opt_;
  Stats stats_;
};

}  // namespace coconut::curriculum
