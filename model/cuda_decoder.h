// model/decoder.h's Decoder on the CUDA model (fp32 or bf16), so that evaluation and
// generation of a model trained with train.device: cuda run where its weights are.
// The forward runs on activations laid out for decoding (CudaActivationsOf::resize with
// training false: each layer keeps its KV cache, the other buffers are one set shared by
// the layers); the model's scratch still grows to the decoding batch's B x T rows. The
// greedy tokens come from an argmax on the device (B ints back per column); the hidden
// states are copied back only when asked (the <eot> classifier reads them). Built only with
// the CUDA backend; tests/gpu compares its generations with the CPU decoder's.
#pragma once

#include <vector>

#include "model/cuda_gpt2.h"
#include "model/decoder.h"

namespace coconut::model {

template <typename Act>
class CudaDecoderOf final : public Decoder {
 public:
  // Reads the model's current weights at every forward; the model must outlive it.
  // source: where thoughts come from (model/decoder.h: own, or an intervention).
  explicit CudaDecoderOf(CudaGPT2Of<Act>& model, ThoughtSource source = ThoughtSource::own)
      : model_(model), routing_(source) {}
  const GPT2Config& config() const override { return model_.config(); }
  void begin(int B, int T) override;
  void forward(int a, int b, const int* tokens, const int* pos_ids, const uint8_t* key_mask,
               const uint8_t* thought) override;
  void greedy_tokens(int* out) override;
  const float* hidden() override;
  const ThoughtRouting* thought_routing() const override { return &routing_; }

 private:
  const Act* last_column() const;  // device [B, C]: the final hidden states of column end_ - 1

  CudaGPT2Of<Act>& model_;
  CudaActivationsOf<Act> acts_;
  DeviceBuffer<int> tokens_, greedy_;
  DeviceBuffer<Act> in_;
  DeviceBuffer<float> logits_, hidden32_;
  std::vector<float> hidden_;
  ThoughtRouting routing_;
  int end_ = 0;
};

using CudaDecoder = CudaDecoderOf<float>;
using CudaDecoderBf16 = CudaDecoderOf<gpu::bf16>;

}  // namespace coconut::model
