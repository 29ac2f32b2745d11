// Cutting the model into pipeline stages (DESIGN.md section 4): which contiguous
// layers each stage runs, and which slice of the flat parameter buffer it owns (the
// slice its ZeRO-1 optimizer updates and its checkpoint shard holds).
//
// Ownership: stage 0 owns wte, wpe and its layers; a middle stage its layers; the last
// stage its layers and ln_f. Slices are contiguous because the flat buffer is ordered
// wte, wpe, h.0, ..., h.{L-1}, ln_f, and together they cover the buffer exactly once.
// The LM head is tied to wte, so the last stage also READS wte (and computes a gradient
// for it) without owning it: the executor sums that gradient into stage 0's before the
// optimizer step and sends the updated wte back afterwards. With one stage, stage 0
// owns everything.
#pragma once

#include <cstddef>
#include <vector>

#include "model/gpt2.h"

namespace coconut::parallel {

// Layers [begin, end) of one stage.
struct StageLayers {
  int begin = 0, end = 0;
  int size() const { return end - begin; }
  bool operator==(const StageLayers&) const = default;
};

// Relative forward cost per token of a layer, of the embedding (paid by stage 0) and
// of the LM head (paid by the last stage). Only ratios matter.
struct StageCosts {
  double layer = 1;
  double embedding = 0;
  double lm_head = 0;
};

// Costs from the model's shape, counting multiply-adds per token: a layer does
// 12 C^2 in its four products plus 2 C n for attention over a context of n columns
// (taken as max_positions / 2, the average of a causal sequence); the embedding is a
// lookup plus an add (2 C); the tied LM head does V C per labelled token, and
// target_fraction is the share of tokens that carry a label.
StageCosts stage_costs(const model::GPT2Config& config, double target_fraction = 1.0);

// The cost of stage `stage` of `stages` running `layers` under `costs`.
double stage_cost(const StageLayers& layers, int stage, int stages, const StageCosts& costs);

// Splits n_layer layers into `stages` contiguous, non-empty stages that minimise the
// most expensive stage's cost (ties: the most even split, then the one with more
// layers in earlier stages). Error when stages < 1 or stages > n_layer.
std::vector<StageLayers> partition_layers(int n_layer, int stages, const StageCosts& costs);

// Throws unless the partition is non-empty, contiguous, covers [0, n_layer) and has no
// empty stage.
void validate_partition(const std::vector<StageLayers>& partition, int n_layer);

// [begin, end) in the flat buffer's coordinates (floats).
struct ParamSlice {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
};

// The slice stage `stage` of `partition` owns (see the file comment).
ParamSlice stage_param_slice(const model::ParamLayout& layout, const std::vector<StageLayers>& partition, int stage);

// The tied token embedding wte in the flat buffer (owned by stage 0, read by the last).
ParamSlice wte_slice(const model::ParamLayout& layout);

// The parameters stage `stage` holds in memory: its own slice, and on the last of
// several stages wte as well (the tied LM head), in buffer order. The rest of the
// buffer stays untouched on that rank (model::GPT2's zero pages take no memory).
std::vector<ParamSlice> held_param_slices(const model::ParamLayout& layout, const std::vector<StageLayers>& partition,
                                          int stage);

// The buckets in which data-parallel GPU ranks sum their gradients while the backward
// runs (parallel/device_exchange.h): bucket l holds layer l's parameters, bucket 0 also
// wte and wpe, bucket n_layer - 1 also ln_f: the slices of a one-layer-per-stage
// partition. A bucket's gradient is final once the backward is done with its layer
// (bucket 0: with the embeddings). They cover the buffer exactly once, in order.
std::vector<ParamSlice> layer_gradient_buckets(const model::ParamLayout& layout, int n_layer);

}  // namespace coconut::parallel
