// AdamW over a contiguous slice [begin, end) of the flat parameter buffer: the whole
// model in one process, or one rank's shard under ZeRO-1. Update rule as
// torch.optim.AdamW (decoupled weight decay, bias-corrected moments).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/gpt2.h"

namespace coconut::model {

struct AdamWConfig {
  float lr = 1e-4f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
  // The reference decays every parameter; true decays only 2-D weights (not biases,
  // layer norms... nor embeddings, which are 2-D: they decay like matrices).
  bool decay_matrices_only = false;
};

class AdamW {
 public:
  AdamW(const AdamWConfig& config, const ParamLayout& layout, size_t begin, size_t end);
  // The same over any flat buffer described by its tensors (offsets from its start):
  // for parameters outside the GPT-2 buffer, such as the <eot> classifier's.
  AdamW(const AdamWConfig& config, const std::vector<TensorSpec>& tensors, size_t begin, size_t end);

  // One update of params[begin, end) from grads[begin, end) (both indexed in the full
  // buffer's coordinates). lr overrides config.lr (schedules).
  void step(float* params, const float* grads, float lr);
  // Zero both moments and the step count; weights are untouched (curriculum resets).
  void reset();

  size_t begin() const { return begin_; }
  size_t end() const { return end_; }
  int64_t step_count() const { return step_; }
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }
  void set_step_count(int64_t s) { step_ = s; }
  const AdamWConfig& config() const { return config_; }

  struct Segment {  // a run of elements that share the weight-decay decision
    size_t begin, end;
    bool decay;
  };
  // The slice cut into runs by decay decision (the CUDA AdamW takes the same runs).
  const std::vector<Segment>& segments() const { return segments_; }

 private:
  AdamWConfig config_;
  size_t begin_, end_;
  std::vector<Segment> segments_;
  std::vector<float> m_, v_;
  int64_t step_ = 0;
};

// Sum of squares of x[0, n) in double, summed in a fixed order (reproducible): element i
// into lane i mod 8 (so that the loop vectorises), the lanes added last.
double sum_of_squares(const float* x, size_t n);
// Whether every element of x[0, n) is finite (no NaN, no infinity).
bool all_finite(const float* x, size_t n);
// torch.nn.utils.clip_grad_norm_: scales grads by min(1, max_norm / (norm + 1e-6)).
// Takes the global norm (all shards, all ranks) so that callers can reduce it first.
void clip_grads(float* grads, size_t n, double global_norm, float max_norm);

}  // namespace coconut::model
