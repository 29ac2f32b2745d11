// Forward, loss and backward of one batch through its pass plan in one process:
// backpropagation through time over the continuous thoughts. Every fed-back hidden
// state and every cached key/value stays in the graph (nothing is detached).
#pragma once

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
  // Forward all passes, cross-entropy over the targeted rows scaled by loss_scale
  // (1 / targets of the global batch), and the backward, accumulating into the model's
  // gradients. Returns sum of per-token losses * loss_scale.
  double forward_backward(GPT2& model, const SequenceBatch& batch, float loss_scale);
  // Forward and loss only (evaluation).
  double forward_loss(GPT2& model, const SequenceBatch& batch, float loss_scale);
  // The final-norm hidden states [T*B, C] of the last forward (for probes and tests).
  const Activations& activations() const { return acts_; }

 private:
  double run(GPT2& model, const SequenceBatch& batch, float loss_scale, bool backward);

  Activations acts_;
  BackwardScratch scratch_;
  std::vector<float> embeds_, d_embeds_, d_hidden_, gathered_, d_gathered_, logits_;
  std::vector<int> target_rows_, target_ids_;
  std::vector<uint8_t> is_thought_;
};

}  // namespace coconut::model
