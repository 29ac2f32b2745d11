// Greedy decoding's view of a model, so that one decoding loop (curriculum/generate.h)
// runs on the CPU model (CpuDecoder, here) and on a GPU one (model/cuda_decoder.h).
// A decoder holds B sequences of at most T columns and their KV cache; each forward
// runs the next columns over the cache of the earlier ones and leaves the last column's
// greedy tokens and final hidden states to read. Columns are time-major as everywhere
// (row t*B + s), and every sample advances one column per call after the prefix.
#pragma once

#include <cstdint>
#include <string>
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

// What a sample takes as its continuous thought: its own hidden state (Coconut), or an
// intervention that tests whether the answer depends on it (`coconut eval --thought-source`).
enum class ThoughtSource : uint8_t {
  own,    // its final hidden state of the previous column
  zero,   // a zero vector (the position embedding is still added)
  other,  // the previous column's hidden state of the next sample that also takes a
          // thought there (a rotation among them, in sample order); alone, its own
};
ThoughtSource parse_thought_source(const std::string& name);  // own | zero | other
const char* thought_source_name(ThoughtSource source);

// The rule of ThoughtSource in one place, for the decoders of every backend: at each
// column, which sample's previous hidden state each thought-taking sample is fed, and a
// record of what was done.
class ThoughtRouting {
 public:
  explicit ThoughtRouting(ThoughtSource source = ThoughtSource::own) : source_(source) {}
  ThoughtSource source() const { return source_; }
  void begin(int B);  // a new batch of B samples
  // For one column (thought[s] != 0: sample s takes a thought): from[s] = the sample whose
  // previous final hidden state s is fed (s itself under own), -1 for a zero vector
  // (zero) and for the samples that take no thought.
  const std::vector<int>& route(const uint8_t* thought);
  // Under other: thoughts taken from another sample and thoughts kept because no other
  // sample took one at that column (counted over every batch), and per sample of the
  // current batch the sample each of its thoughts came from (donors() is null under own
  // and zero).
  int64_t swapped() const { return swapped_; }
  int64_t kept_alone() const { return kept_alone_; }
  const std::vector<std::vector<int>>* donors() const {
    return source_ == ThoughtSource::other ? &donors_ : nullptr;
  }

 private:
  ThoughtSource source_;
  std::vector<int> from_, takers_;
  std::vector<std::vector<int>> donors_;
  int64_t swapped_ = 0, kept_alone_ = 0;
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
  // Where its thoughts come from (ThoughtSource) and what that did; null for a decoder
  // that feeds every sample its own.
  virtual const ThoughtRouting* thought_routing() const { return nullptr; }
};

// One stage's part of decoding a batch: layers [first_layer, end_layer) over their own
// KV cache, without communication. The stage with layer 0 embeds tokens (and takes the
// thoughts fed back); the one with the last layer applies the final norm and the tied
// LM head. CpuDecoder is the one-stage case; parallel/pipeline_decoder.h and
// launcher/staged_generation.h move the rows between the stages of a pipeline.
class StageDecoder {
 public:
  // The model must hold this stage's parameters and outlive it.
  StageDecoder(const GPT2& model, int first_layer, int end_layer);
  bool first() const { return first_layer_ == 0; }
  bool last() const { return end_layer_ == model_.config().n_layer; }
  int batch_size() const { return acts_.B; }

  // Starts B empty sequences of at most T columns (this stage's layers only).
  void begin(int B, int T);
  // Runs columns [a, b) (a: where the previous forward ended; tokens, pos_ids and
  // key_mask as in Decoder::forward). The first stage embeds `tokens`, and where
  // thought[s] != 0 takes sample s's input at column a from `thoughts` ([B, C]: the
  // final hidden states of column a - 1); a later stage takes `in`, the (b - a) * B rows
  // the previous stage returned. Returns this stage's output rows of the columns
  // ((b - a) * B rows of C, valid until the next forward): the residual stream for the
  // next stage, or on the last stage the final-norm states.
  const float* forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
                       const uint8_t* thought, const float* thoughts, const float* in);
  // Last stage, after a forward: the final hidden states [B, C] of the last column run
  // (valid until the next forward), and the greedy token of every sample there (the
  // first maximum of its logits).
  const float* last_hidden() const;
  void greedy_tokens(int* out);

 private:
  const GPT2& model_;
  int first_layer_, end_layer_;
  Activations acts_;
  std::vector<float> in_, logits_;
  int end_ = 0;  // columns run so far
};

// The CPU model's decoder: the whole model as one StageDecoder.
class CpuDecoder final : public Decoder {
 public:
  explicit CpuDecoder(const GPT2& model, ThoughtSource source = ThoughtSource::own)
      : model_(model), stage_(model, 0, model.config().n_layer), routing_(source) {}
  const GPT2Config& config() const override { return model_.config(); }
  void begin(int B, int T) override {
    stage_.begin(B, T);
    routing_.begin(B);
  }
  void forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
               const uint8_t* thought) override;
  void greedy_tokens(int* out) override { stage_.greedy_tokens(out); }
  const float* hidden() override { return stage_.last_hidden(); }
  const ThoughtRouting* thought_routing() const override { return &routing_; }

 private:
  const GPT2& model_;
  StageDecoder stage_;
  ThoughtRouting routing_;
  std::vector<float> replaced_;  // [B, C]: the thoughts fed back under an intervention
};

}  // namespace coconut::model
