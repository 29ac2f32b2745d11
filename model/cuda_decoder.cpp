// CudaDecoderOf (see cuda_decoder.h): CpuDecoder's steps on device buffers.
#include "model/cuda_decoder.h"

#include <type_traits>

#include "model/cuda_buffers.h"
#include "runtime/check.h"

namespace coconut::model {
namespace {

using cuda_buffers::ensure;

// Host to device, done when it returns (the caller may reuse its arrays): a plain copy,
// ordered after the model's queued work since the model's stream is a blocking one.
template <typename T>
void upload(T* device, const T* host, size_t n) {
  CUDA_CHECK(cudaMemcpy(device, host, n * sizeof(T), cudaMemcpyHostToDevice));
}

}  // namespace

template <typename Act>
void CudaDecoderOf<Act>::begin(int B, int T) {
  COCONUT_CHECK(B > 0 && T > 0, "a decoder needs B > 0 and T > 0 (got {} x {})", B, T);
  const GPT2Config& cfg = model_.config();
  acts_.resize(cfg, B, T, model_.attention_storage(T), model_.stream(), /*training=*/false);
  acts_.dropout_enabled = false;
  ensure(greedy_, size_t(B));
  ensure(logits_, size_t(B) * model_.padded_vocab());
  model_.refresh_lm_head();  // the weights stay as they are while this batch decodes
  routing_.begin(B);
  end_ = 0;
}

template <typename Act>
void CudaDecoderOf<Act>::forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
                                 const uint8_t* thought) {
  const GPT2Config& cfg = model_.config();
  const int B = acts_.B, C = cfg.d_model;
  const cudaStream_t s = model_.stream();
  COCONUT_CHECK(a == end_ && a < b && b <= acts_.T, "decoder columns [{}, {}) do not continue [0, {}) within {}", a, b,
                end_, acts_.T);
  COCONUT_CHECK(!thought || a > 0, "a continuous thought needs a column before it");
  const size_t n = size_t(b - a) * B;
  for (size_t r = 0; r < n; ++r)
    COCONUT_CHECK(tokens[r] >= 0 && tokens[r] < cfg.vocab_size && pos_ids[r] >= 0 && pos_ids[r] < cfg.max_positions,
                  "decoder input {} of column {}: token {} or position {} out of range", r % B, a + r / B, tokens[r],
                  pos_ids[r]);
  upload(acts_.pos_ids.data() + size_t(a) * B, pos_ids, n);
  upload(acts_.key_mask.data() + size_t(a) * B, key_mask, n);
  ensure(tokens_, n);
  ensure(in_, n * C);
  upload(tokens_.data(), tokens, n);
  gpu::embed_tokens(in_.data(), model_.wte(), tokens_.data(), int(n), C, s);
  if (thought) {
    COCONUT_CHECK(cfg.thought_scale == 1.f, "model.thought_scale {} is not implemented on the GPU", cfg.thought_scale);
    const Act* previous = acts_.lnf + size_t(a - 1) * B * C;
    const std::vector<int>& from = routing_.route(thought);  // its own state, unless an intervention
    for (int i = 0; i < B; ++i) {
      if (!thought[i]) continue;
      if (from[i] >= 0)
        CUDA_CHECK(cudaMemcpyAsync(in_.data() + size_t(i) * C, previous + size_t(from[i]) * C, C * sizeof(Act),
                                   cudaMemcpyDeviceToDevice, s));
      else  // ThoughtSource::zero
        CUDA_CHECK(cudaMemsetAsync(in_.data() + size_t(i) * C, 0, C * sizeof(Act), s));
    }
  }
  model_.forward_stage(acts_, a, b, 0, cfg.n_layer, in_.data(), /*embed=*/true, /*final_norm=*/true);
  end_ = b;
}

template <typename Act>
const Act* CudaDecoderOf<Act>::last_column() const {
  COCONUT_CHECK(end_ > 0, "the decoder has run no column yet");
  return acts_.lnf + size_t(end_ - 1) * acts_.B * model_.config().d_model;
}

template <typename Act>
void CudaDecoderOf<Act>::greedy_tokens(int* out) {
  const int B = acts_.B;
  model_.lm_head_logits(last_column(), B, logits_.data());
  gpu::argmax_rows(logits_.data(), model_.padded_vocab(), B, model_.config().vocab_size, greedy_.data(),
                   model_.stream());
  greedy_.copy_to_host(out, size_t(B));  // waits: the model's stream is a blocking one
}

template <typename Act>
const float* CudaDecoderOf<Act>::hidden() {
  const size_t n = size_t(acts_.B) * model_.config().d_model;
  hidden_.resize(n);
  if constexpr (std::is_same_v<Act, float>) {
    CUDA_CHECK(cudaMemcpyAsync(hidden_.data(), last_column(), n * sizeof(float), cudaMemcpyDeviceToHost,
                               model_.stream()));
  } else {
    ensure(hidden32_, n);
    gpu::convert(hidden32_.data(), last_column(), int64_t(n), model_.stream());
    CUDA_CHECK(cudaMemcpyAsync(hidden_.data(), hidden32_.data(), n * sizeof(float), cudaMemcpyDeviceToHost,
                               model_.stream()));
  }
  CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
  return hidden_.data();
}

template class CudaDecoderOf<float>;
template class CudaDecoderOf<gpu::bf16>;

}  // namespace coconut::model
