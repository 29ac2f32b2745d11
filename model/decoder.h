// Greedy decoding's view of a model, so that one decoding loop (curriculum/generate.h)
// runs on the CPU model (CpuDecoder, here) and on a GPU one (model/cuda_decoder.h).
// A decoder holds B sequences of at most T columns and their KV cache; each forward
// runs the next columns over the cache of the earlier ones and leaves the last column's
// greedy tokens and final hidden states to read. Columns are time-major as everywhere
// (row t*B + s), and every sample advances one column per call after the prefix.
#pragma once

#include <cstdint>
#include <vector>

#include "model/gpt2.h"

namespace coconut::model {

// What a forward leaves for the decoding loop to read about the last column run.
class ColumnOutput {
 public:
  virtual ~ColumnOutput() = default;
  // The greedy token of every sample at the last column run: the first maximum of its
  // logits (out: B entries).
  virtual void greedy_tokens(int* out) = 0;
  // The final-norm hidden states [B, C] of the last column run, on the host; valid
  // until the next call.
  virtual const float* hidden() = 0;
};

class Decoder : public ColumnOutput {
 public:
  virtual const GPT2Config& config() const = 0;
  // Starts B empty sequences of at most T columns (the previous ones are forgotten).
  virtual void begin(int B, int T) = 0;
  // Runs the columns [a, b), a being where the previous forward ended (0 after begin).
  // tokens, pos_ids and key_mask hold (b - a) * B entries, column by column. Where
  // thought is not null and thought[s] != 0, sample s's input at column a is the final
  // hidden state of its column a - 1 (a continuous thought) instead of its token.
  virtual void forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
                       const uint8_t* thought) = 0;
  // greedy_tokens() and hidden() (ColumnOutput) read the last forward's column.
};

// For Decoder implementations: checks that columns [a, b) continue the `end` columns run
// so far within acts.T (and that a thought has a column before it), then copies their
// position ids and key mask into acts.
void take_decoder_columns(Activations& acts, int end, int a, int b, const int* pos_ids, const uint8_t* key_mask,
                          bool thought);

// The CPU model's decoder: the model's forward_range over inference activations.
class CpuDecoder final : public Decoder {
 public:
  explicit CpuDecoder(const GPT2& model) : model_(model) {}
  const GPT2Config& config() const override { return model_.config(); }
  void begin(int B, int T) override;
  void forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
               const uint8_t* thought) override;
  void greedy_tokens(int* out) override;
  const float* hidden() override;

 private:
  const GPT2& model_;
  Activations acts_;
  std::vector<float> in_, logits_;
  int end_ = 0;  // columns run so far
};

}  // namespace coconut::model
