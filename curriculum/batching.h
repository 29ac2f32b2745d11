// Batches of built samples: latent-aligned left padding, right padding, time-major
// layout and the pass plan (DESIGN.md 2.2), as a model::SequenceBatch.
#pragma once

#include <vector>

#include "curriculum/samples.h"
#include "model/batch.h"

namespace coconut::curriculum {

// Samples with latents are left-padded so that their first <latent> sits at the same
// column f; samples without latents are not shifted; all are right-padded to the
// longest. Pads: key mask 0, position 0, no target. Targets are the next token's label.
// With feed_back, the pass plan is [0, f), one pass per further latent column, then the
// rest, each latent filled from the hidden state one column before it; otherwise (plain
// models, pause tokens) one pass over everything.
// align_ends (generation prompts): every sample is left-padded so that all end at the
// last column, where decoding continues; their latents must then line up as well.
// pad_to > 1 (training, train.pad_columns; not with align_ends): f and T are rounded up
// to multiples of pad_to by more left padding of the samples with latents and more right
// padding of all, so that batches of similar lengths share one pass plan (what a
// captured CUDA graph needs); the extra columns are pads like the others.
model::SequenceBatch make_batch(const std::vector<const BuiltSample*>& samples, const Tokenizer& tok,
                                bool feed_back, bool align_ends = false, int pad_to = 1);

// Where a sample lies in a latent-aligned batch: the column of its first <latent> (-1:
// none) and its length. The columns of a training batch depend on nothing else.
struct SampleExtent {
  int first_latent = -1;
  int length = 0;
};
SampleExtent sample_extent(const BuiltSample& s, const Tokenizer& tok);

// The latent-aligned layout make_batch gives samples of these extents (align_ends false):
// the aligned column f of the first latents (-1: no sample has one), the columns T, and
// each sample's left padding.
struct AlignedLayout {
  int f = -1;
  int T = 0;
  std::vector<int> pad_left;
};
AlignedLayout aligned_layout(const std::vector<SampleExtent>& samples, int pad_to = 1);

}  // namespace coconut::curriculum
