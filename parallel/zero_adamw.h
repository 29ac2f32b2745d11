// ZeRO-1 AdamW (DESIGN.md section 5): the ranks of one DP group share the optimizer
// state of their pipeline stage. Each rank owns an equal block of the stage's slice of
// the flat parameter buffer and keeps AdamW moments for that block only.
//
// One step: reduce-scatter the gradients (sum over the DP group: the loss is already
// scaled by 1 / global labelled tokens, so the sum is the global-batch gradient), clip
// by the global norm (squared norms of the shards summed over the DP group, then over
// the pipeline), run model::AdamW on the owned block, all-gather the updated weights so
// every replica holds the whole stage again. With the same inputs the result equals a
// single-process model::AdamW on the summed gradients up to float reassociation of the
// sum, and it is bitwise reproducible for a fixed topology.
//
// Sharding works for any parameter count: the slice [begin, end) of n elements is
// padded to dp * block with block = ceil(n / dp); rank r owns
// [begin + r*block, begin + (r+1)*block) clipped to end (the last shards may be short
// or empty). Padding lives only in scratch buffers and never reaches the weights.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/adamw.h"
#include "parallel/comm.h"

namespace coconut::parallel {

struct ShardRange {
  size_t begin, end;  // in the flat buffer's coordinates; begin == end for an empty shard
};
// The shard of [begin, end) that DP rank r of dp owns (also for checkpoint resharding).
ShardRange shard_range(size_t begin, size_t end, int dp, int r);

class ShardedAdamW {
 public:
  // [begin, end): the slice of the flat buffer this pipeline stage owns; the same on
  // every rank of dp_group (checked, collectively). dp_group must outlive this object.
  ShardedAdamW(const model::AdamWConfig& config, const model::ParamLayout& layout, size_t begin, size_t end,
               Communicator& dp_group);

  // Collective over dp_group (and norm_group). params[begin, end) must be identical on
  // every DP rank; afterwards it holds the updated weights, identical on every rank.
  // grads[begin, end) is this rank's local gradient; afterwards grads over the owned
  // shard hold the reduced (and clipped) gradient and the rest of the slice is left as
  // it was. clip_norm > 0 clips by the global norm (torch's clip_grad_norm_); 0 turns
  // clipping off. norm_group: the ranks holding the other stages of this replica (the
  // grid's pipeline), so the norm covers the whole model; nullptr when this stage is
  // the whole model. Returns the global gradient norm before clipping. A norm that is
  // not finite skips the update (weights, moments and step count stay as they were).
  double step(float* params, float* grads, float lr, double clip_norm, Communicator* norm_group);

  // Zero the moments and the step count of this rank's shard (every rank calls it, so
  // every shard is reset); the weights are untouched.
  void reset() { adam_.reset(); }

  size_t begin() const { return begin_; }
  size_t end() const { return end_; }
  size_t shard_begin() const { return shard_.begin; }
  size_t shard_end() const { return shard_.end; }
  size_t block() const { return block_; }  // padded shard length, the same on every rank
  // Moments of the owned shard: element i belongs to parameter shard_begin() + i.
  std::vector<float>& m() { return adam_.m(); }
  std::vector<float>& v() { return adam_.v(); }
  int64_t step_count() const { return adam_.step_count(); }
  void set_step_count(int64_t s) { adam_.set_step_count(s); }

 private:
  Communicator& dp_;
  size_t begin_, end_, block_;
  ShardRange shard_;
  model::AdamW adam_;                // over [shard_.begin, shard_.end) only
  std::vector<float> reduced_;       // block_: this rank's block after the reduce-scatter
  std::vector<float> padded_;        // dp * block_ when that exceeds end - begin, else empty
};

}  // namespace coconut::parallel
