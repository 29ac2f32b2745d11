// Stage partition by a cost model and the parameter slice each stage owns.
#include "parallel/partition.h"

#include <limits>
#include <string>

#include "runtime/check.h"

namespace coconut::parallel {

StageCosts stage_costs(const model::GPT2Config& config, double target_fraction) {
  COCONUT_CHECK(target_fraction >= 0 && target_fraction <= 1, "stage costs: target_fraction must be in [0, 1], got {}",
                target_fraction);
  const double C = config.d_model, V = config.vocab_size, n = config.max_positions / 2.0;
  StageCosts c;
  c.layer = 12 * C * C + 2 * C * n;
  c.embedding = 2 * C;
  c.lm_head = V * C * target_fraction;
  return c;
}

double stage_cost(const StageLayers& layers, int stage, int stages, const StageCosts& costs) {
  double cost = layers.size() * costs.layer;
  if (stage == 0) cost += costs.embedding;
  if (stage == stages - 1) cost += costs.lm_head;
  return cost;
}

std::vector<StageLayers> partition_layers(int n_layer, int stages, const StageCosts& costs) {
  COCONUT_CHECK(stages >= 1, "pipeline: the number of stages must be >= 1, got {}", stages);
  COCONUT_CHECK(stages <= n_layer,
                "pipeline: {} stages for a model of {} layers; every stage needs at least one layer (set "
                "pipeline stages <= model.n_layer)",
                stages, n_layer);
  COCONUT_CHECK(costs.layer > 0 && costs.embedding >= 0 && costs.lm_head >= 0,
                "pipeline: stage costs must be layer > 0, embedding >= 0, lm_head >= 0 (got {}, {}, {})", costs.layer,
                costs.embedding, costs.lm_head);
  // Dynamic programme over (stages used, layers used): the best split of the first l
  // layers into the first s stages, ranked by (most expensive stage, sum of squared
  // stage costs). Strict comparisons keep the first candidate found on ties, and
  // candidates are tried with the longest previous stage first.
  struct Best {
    double max = std::numeric_limits<double>::infinity();
    double sum_sq = std::numeric_limits<double>::infinity();
    int cut = -1;  // where the last of the s stages begins
  };
  std::vector<std::vector<Best>> best(stages + 1, std::vector<Best>(n_layer + 1));
  best[0][0] = {0, 0, 0};
  for (int s = 1; s <= stages; ++s) {
    for (int l = s; l <= n_layer - (stages - s); ++l) {
      for (int cut = l - 1; cut >= s - 1; --cut) {
        const Best& prev = best[s - 1][cut];
        if (prev.cut < 0) continue;
        const double c = stage_cost({cut, l}, s - 1, stages, costs);
        const double mx = std::max(prev.max, c), sq = prev.sum_sq + c * c;
        Best& b = best[s][l];
        if (mx < b.max || (mx == b.max && sq < b.sum_sq)) b = {mx, sq, cut};
      }
    }
  }
  std::vector<StageLayers> out(stages);
  int end = n_layer;
  for (int s = stages; s >= 1; --s) {
    const int begin = best[s][end].cut;
    COCONUT_CHECK(begin >= 0, "pipeline: no partition of {} layers into {} stages (internal error)", n_layer, stages);
    out[s - 1] = {begin, end};
    end = begin;
  }
  validate_partition(out, n_layer);
  return out;
}

void validate_partition(const std::vector<StageLayers>& partition, int n_layer) {
  COCONUT_CHECK(!partition.empty(), "pipeline: empty stage partition");
  int next = 0;
  for (size_t s = 0; s < partition.size(); ++s) {
    const StageLayers& p = partition[s];
    COCONUT_CHECK(p.begin == next && p.end > p.begin,
                  "pipeline: stage {} has layers [{}, {}); expected a non-empty range starting at layer {}", s,
                  p.begin, p.end, next);
    next = p.end;
  }
  COCONUT_CHECK(next == n_layer, "pipeline: the stages cover layers [0, {}) but the model has {} layers", next,
                n_layer);
}

ParamSlice stage_param_slice(const model::ParamLayout& layout, const std::vector<StageLayers>& partition, int stage) {
  const int S = static_cast<int>(partition.size());
  COCONUT_CHECK(stage >= 0 && stage < S, "pipeline: stage {} outside [0, {})", stage, S);
  // The first parameter of layer l (its ln_1.weight) is where that layer's slice starts.
  auto layer_start = [&](int l) { return layout.find("h." + std::to_string(l) + ".ln_1.weight").offset; };
  ParamSlice slice;
  slice.begin = stage == 0 ? 0 : layer_start(partition[stage].begin);
  slice.end = stage == S - 1 ? layout.total() : layer_start(partition[stage].end);
  return slice;
}

ParamSlice wte_slice(const model::ParamLayout& layout) {
  const model::TensorSpec& t = layout.find("wte.weight");
  return {t.offset, t.offset + t.numel};
}

std::vector<ParamSlice> held_param_slices(const model::ParamLayout& layout, const std::vector<StageLayers>& partition,
                                          int stage) {
  const bool tied_head = stage > 0 && stage + 1 == static_cast<int>(partition.size());
  std::vector<ParamSlice> held;
  if (tied_head) held.push_back(wte_slice(layout));  // wte comes first in the buffer
  held.push_back(stage_param_slice(layout, partition, stage));
  return held;
}

std::vector<ParamSlice> layer_gradient_buckets(const model::ParamLayout& layout, int n_layer) {
  std::vector<StageLayers> one_per_stage;
  for (int l = 0; l < n_layer; ++l) one_per_stage.push_back({l, l + 1});
  std::vector<ParamSlice> buckets;
  for (int l = 0; l < n_layer; ++l) buckets.push_back(stage_param_slice(layout, one_per_stage, l));
  return buckets;
}

}  // namespace coconut::parallel
