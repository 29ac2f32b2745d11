// Forward, loss and backward of one batch through its pass plan in one process:
// backpropagation through time over the continuous thoughts. Every fed-back hidden
// state and every cached key/value stays in the graph (nothing is detached).
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "model/batch.h"
#include "model/gpt2.h"

namespace coconut::model {

void validate_batch(const SequenceBatch& batch, const GPT2Config& config);

// Forward of every pass of the batch in order, feeding thoughts back between passes.
// embeds holds the batch's [T*B, C] token embeddings on entry; thought rows are
// overwritten with the fed-back hidden states (and marked in is_thought when given).
// acts must be sized for at least batch.T columns; its pos_ids/key_mask rows of the
// batch's columns must be set by the caller.
void forward_passes(const GPT2& model, Activations& acts, const SequenceBatch& batch, float* embeds,
                    std::vector<uint8_t>* is_thought);

class MultipassRunner {
 public:
  // An extra loss on the final-norm hidden states, added to the LM loss by
  // forward_backward (the <eot> classifier, curriculum/eot_classifier.h). Called once per
  // forward_backward, after the LM head and before the backward passes, with the
  // forward's activations (acts.lnf: [T*B, C], row t*B+s) and d_hidden: the gradient
  // w.r.t. those rows, already holding the LM head's part, into which the hook ADDS its
  // own. It returns its loss (already scaled), which is added to the returned loss.
  // Through d_hidden the extra loss reaches every layer, thought and cached key/value.
  // forward_loss never calls it. An empty function (the default) changes nothing.
  using HiddenLoss = std::function<double(const Activations& acts, MeteredVector<float>& d_hidden)>;
  void set_hidden_loss(HiddenLoss hook) { hidden_loss_ = std::move(hook); }

  // Forward all passes, cross-entropy over the targeted rows scaled by loss_scale
  // (1 / targets of the global batch), and the backward, accumulating into the model's
  // gradients. Returns sum of per-token losses * loss_scale.
  double forward_backward(GPT2& model, const SequenceBatch& batch, float loss_scale);
  // Forward and loss only (evaluation: never drops).
  double forward_loss(GPT2& model, const SequenceBatch& batch, float loss_scale);
  // The dropout identity of the next forward_backward when model.dropout > 0: the seed,
  // the training step and the global id of each sequence of the batch (empty: 0..B-1).
  // It is used once: every forward_backward with dropout needs its own call, so that a
  // trainer cannot silently reuse one step's masks.
  void set_dropout(uint64_t seed, uint64_t step, std::vector<int64_t> sample_ids = {});
  // The final-norm hidden states [T*B, C] of the last forward (for probes and tests).
  const Activations& activations() const { return acts_; }
  // Keep (default) or recompute each pass's forward during its backward (gpt2.h):
  // the same bits, less activation memory, about 1/3 more compute.
  void set_activation_policy(ActivationPolicy policy) { policy_ = policy; }
  ActivationPolicy activation_policy() const { return policy_; }

 private:
  double run(GPT2& model, const SequenceBatch& batch, float loss_scale, bool backward);

  ActivationPolicy policy_ = ActivationPolicy::Keep;
  Activations acts_;
  ActivationWorkspace workspace_;  // recompute: one layer's buffers of the pass running
  BackwardScratch scratch_;
  MeteredVector<float> embeds_, d_embeds_, d_hidden_, gathered_, d_gathered_, logits_;
  std::vector<int> target_rows_, target_ids_;
  std::vector<uint8_t> is_thought_;
  bool dropout_pending_ = false;
  uint64_t dropout_seed_ = 0, dropout_step_ = 0;
  std::vector<int64_t> dropout_ids_;
  HiddenLoss hidden_loss_;
};

}  // namespace coconut::model
