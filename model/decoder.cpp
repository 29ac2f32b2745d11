// CpuDecoder (see decoder.h): the CPU model's forward over a KV cache, one decoding
// column at a time.
#include "model/decoder.h"

#include <algorithm>
#include <cstring>

#include "runtime/check.h"

namespace coconut::model {

void CpuDecoder::begin(int B, int T) {
  COCONUT_CHECK(B > 0 && T > 0, "a decoder needs B > 0 and T > 0 (got {} x {})", B, T);
  acts_.resize(model_.config(), B, T, /*training=*/false);
  end_ = 0;
}

void take_decoder_columns(Activations& acts, int end, int a, int b, const int* pos_ids, const uint8_t* key_mask,
                          bool thought) {
  COCONUT_CHECK(a == end && a < b && b <= acts.T, "decoder columns [{}, {}) do not continue [0, {}) within {}", a, b,
                end, acts.T);
  COCONUT_CHECK(!thought || a > 0, "a continuous thought needs a column before it");
  const size_t n = static_cast<size_t>(b - a) * acts.B;
  std::copy_n(pos_ids, n, acts.pos_ids.begin() + static_cast<std::ptrdiff_t>(a) * acts.B);
  std::copy_n(key_mask, n, acts.key_mask.begin() + static_cast<std::ptrdiff_t>(a) * acts.B);
}

void CpuDecoder::forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
                         const uint8_t* thought) {
  const int B = acts_.B, C = model_.config().d_model;
  take_decoder_columns(acts_, end_, a, b, pos_ids, key_mask, thought != nullptr);
  const size_t n = static_cast<size_t>(b - a) * B;
  in_.resize(n * C);
  model_.embed_tokens(tokens, static_cast<int>(n), in_.data());
  if (thought) {
    const float* previous = acts_.lnf + static_cast<size_t>(a - 1) * B * C;
    for (int s = 0; s < B; ++s)
      if (thought[s])
        std::memcpy(in_.data() + static_cast<size_t>(s) * C, previous + static_cast<size_t>(s) * C, sizeof(float) * C);
  }
  model_.forward_range(acts_, a, b, in_.data());
  end_ = b;
}

void CpuDecoder::greedy_tokens(int* out) {
  const int B = acts_.B, V = model_.config().vocab_size;
  COCONUT_CHECK(end_ > 0, "greedy_tokens before any forward");
  logits_.resize(static_cast<size_t>(B) * V);
  model_.lm_head_logits(hidden(), B, logits_.data());
  for (int s = 0; s < B; ++s) {
    const float* z = logits_.data() + static_cast<size_t>(s) * V;
    out[s] = static_cast<int>(std::max_element(z, z + V) - z);
  }
}

const float* CpuDecoder::hidden() {
  COCONUT_CHECK(end_ > 0, "hidden states before any forward");
  return acts_.lnf + static_cast<size_t>(end_ - 1) * acts_.B * model_.config().d_model;
}

}  // namespace coconut::model
