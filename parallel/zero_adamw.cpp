// ZeRO-1 sharded AdamW: reduce-scatter, global-norm clipping, shard update, all-gather.
#include "parallel/zero_adamw.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace coconut::parallel {

namespace {

size_t block_size(size_t n, int dp) { return (n + static_cast<size_t>(dp) - 1) / static_cast<size_t>(dp); }

}  // namespace

ShardRange shard_range(size_t begin, size_t end, int dp, int r) {
  COCONUT_CHECK(begin <= end, "shard_range: reversed slice [{}, {})", begin, end);
  COCONUT_CHECK(dp >= 1 && r >= 0 && r < dp, "shard_range: rank {} outside a DP group of {}", r, dp);
  const size_t n = end - begin, block = block_size(n, dp);
  const size_t b = std::min(n, static_cast<size_t>(r) * block), e = std::min(n, (static_cast<size_t>(r) + 1) * block);
  return {begin + b, begin + e};
}

ShardedAdamW::ShardedAdamW(const model::AdamWConfig& config, const model::ParamLayout& layout, size_t begin,
                           size_t end, Communicator& dp_group)
    : dp_(dp_group),
      begin_(begin),
      end_(end),
      block_(block_size(end >= begin ? end - begin : 0, dp_group.size())),
      shard_(shard_range(begin, end, dp_group.size(), dp_group.rank())),
      adam_(config, layout, shard_.begin, shard_.end),
      reduced_(block_) {
  COCONUT_CHECK(end <= layout.total(), "ZeRO slice [{}, {}) outside the {} parameters", begin, end, layout.total());
  // Ranks that disagree on the slice would exchange misaligned blocks: find out
  // together, so that every rank stops with the same message instead of some hanging.
  uint64_t root_slice[2] = {begin, end};
  dp_.broadcast_bytes(root_slice, sizeof root_slice, 0);
  int64_t mismatches = (root_slice[0] != begin || root_slice[1] != end) ? 1 : 0;
  dp_.all_reduce_sum(&mismatches, 1);
  COCONUT_CHECK(mismatches == 0,
                "ZeRO: the ranks of a DP group must shard the same slice; DP rank 0 has [{}, {}), this rank (DP "
                "rank {}) has [{}, {}), {} rank(s) disagree",
                root_slice[0], root_slice[1], dp_.rank(), begin, end, mismatches);
  if (block_ * static_cast<size_t>(dp_.size()) != end - begin) padded_.resize(block_ * static_cast<size_t>(dp_.size()));
}

double ShardedAdamW::step(float* params, float* grads, float lr, double clip_norm, Communicator* norm_group) {
  const size_t n = end_ - begin_, shard_len = shard_.end - shard_.begin;
  const bool padded = !padded_.empty();

  // 1. Reduce-scatter: this rank receives the DP sum of its block.
  const float* send = grads + begin_;
  if (padded) {
    std::memcpy(padded_.data(), grads + begin_, n * sizeof(float));
    std::fill(padded_.begin() + static_cast<std::ptrdiff_t>(n), padded_.end(), 0.f);
    send = padded_.data();
  }
  dp_.reduce_scatter_sum(send, reduced_.data(), block_);
  std::memcpy(grads + shard_.begin, reduced_.data(), shard_len * sizeof(float));

  // 2. Global norm from the shards: over the stage (DP group), then over the stages.
  double sum_sq = model::sum_of_squares(grads + shard_.begin, shard_len);
  dp_.all_reduce_sum(&sum_sq, 1);
  if (norm_group != nullptr) norm_group->all_reduce_sum(&sum_sq, 1);
  const double norm = std::sqrt(sum_sq);
  // A gradient with a NaN or an infinity is not applied (every rank sees the same norm):
  // the weights and moments stay as they were, and the trainer stops the run.
  if (!std::isfinite(norm)) return norm;
  if (clip_norm > 0) model::clip_grads(grads + shard_.begin, shard_len, norm, static_cast<float>(clip_norm));

  // 3. AdamW on the owned shard only.
  adam_.step(params, grads, lr);

  // 4. All-gather the updated weights (in place when no padding is needed).
  if (!padded) {
    dp_.all_gather(params + shard_.begin, params + begin_, block_);
  } else {
    std::memcpy(reduced_.data(), params + shard_.begin, shard_len * sizeof(float));
    std::fill(reduced_.begin() + static_cast<std::ptrdiff_t>(shard_len), reduced_.end(), 0.f);
    dp_.all_gather(reduced_.data(), padded_.data(), block_);
    std::memcpy(params + begin_, padded_.data(), n * sizeof(float));
  }
  return norm;
}

}  // namespace coconut::parallel
