// launcher/device_step.h on the CUDA backend: CudaGPT2 (fp32) or CudaGPT2Bf16 (bf16
// mixed precision: fp32 master weights, gradients and moments, a bf16 weight copy that
// AdamW refreshes), the multipass runner, gpu::adamw_step over the host optimizer's
// decay segments, global-norm clipping on the device, and the device decoder for
// evaluation.
#include <cmath>
#include <string>
#include <type_traits>

#include "launcher/device_step.h"
#include "model/cuda_decoder.h"
#include "model/cuda_gpt2.h"
#include "runtime/check.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/ops.h"

namespace coconut::launcher {
namespace {

// train.attention (train_config.h) as the CUDA model's attention kind.
model::CudaAttention attention_kind(const TrainConfig& c) {
  if (c.attention == "fused") return model::CudaAttention::kBf16Flash;
  if (c.attention == "bf16" || (c.attention == "auto" && c.precision == "bf16"))
    return model::CudaAttention::kBf16Batched;
  return model::CudaAttention::kFp32;
}

template <typename Act>
class CudaStep final : public DeviceStep {
 public:
  CudaStep(const TrainConfig& c, const model::GPT2& gpt, const model::AdamW& opt)
      : model_(gpt.config()), m_(model_.num_params()), v_(model_.num_params()), clip_(c.grad_clip), seed_(c.seed) {
    COCONUT_CHECK(opt.begin() == 0 && opt.end() == model_.num_params(),
                  "the device step needs the whole model's optimizer (got elements [{}, {}) of {})", opt.begin(),
                  opt.end(), model_.num_params());
    for (const auto& s : opt.segments()) segments_.push_back({s.begin, s.end, s.decay});
    const model::AdamWConfig& a = opt.config();
    hyper_ = {a.lr, a.beta1, a.beta2, a.eps, a.weight_decay};
    model_.set_attention(attention_kind(c));
    load_from_host(gpt, opt);
  }

  double step(const std::vector<model::SequenceBatch>& micro, const std::vector<std::vector<int64_t>>& micro_ids,
              float loss_scale, int64_t step) override {
    model_.zero_grads();
    double loss = 0;
    for (size_t m = 0; m < micro.size(); ++m) {
      if (model_.config().dropout > 0) runner_.set_dropout(seed_, static_cast<uint64_t>(step), micro_ids.at(m));
      loss += runner_.forward_backward(model_, micro[m], loss_scale);
    }
    const size_t n = model_.num_params();
    if (clip_ > 0) {
      const double norm = std::sqrt(gpu::sum_of_squares_host(model_.grads(), n, model_.stream()));
      gpu::clip_grads(model_.grads(), n, norm, static_cast<float>(clip_), model_.stream());
    }
    ++adam_step_;
    gpu::bf16* copy = nullptr;  // the bf16 weights the forward reads, refreshed by the update
    if constexpr (std::is_same_v<Act, gpu::bf16>) copy = model_.params_for_compute();
    gpu::adamw_step(model_.params(), model_.grads(), m_.data(), v_.data(), 0, segments_, hyper_, adam_step_, copy,
                    model_.stream());
    return loss;
  }

  std::string describe() const override {
    std::string d = std::string("attention ") + model::attention_name(model_.attention());
    const model::CudaAttention runs = model_.pass_attention(false);
    if (runs != model_.attention())
      d += std::string(" (not applicable to this model: ") + model::attention_name(runs) + " runs)";
    const model::CudaAttention with_dropout = model_.pass_attention(true);
    if (model_.config().dropout > 0.f && with_dropout != runs)
      d += std::string(" (") + model::attention_name(with_dropout) + " in steps with attention dropout)";
    return d;
  }

  std::unique_ptr<model::Decoder> decoder() override {
    return std::make_unique<model::CudaDecoderOf<Act>>(model_);
  }

  void reset_optimizer() override {
    CUDA_CHECK(cudaMemsetAsync(m_.data(), 0, m_.bytes(), model_.stream()));
    CUDA_CHECK(cudaMemsetAsync(v_.data(), 0, v_.bytes(), model_.stream()));
    adam_step_ = 0;
  }

  void sync_to_host(model::GPT2& gpt, model::AdamW& opt) override {
    CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
    model_.get_params(gpt.params());
    m_.copy_to_host(opt.m().data(), m_.size());
    v_.copy_to_host(opt.v().data(), v_.size());
    opt.set_step_count(adam_step_);
  }

  void load_from_host(const model::GPT2& gpt, const model::AdamW& opt) override {
    CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
    model_.set_params(gpt.params());
    m_.copy_from_host(opt.m());
    v_.copy_from_host(opt.v());
    adam_step_ = opt.step_count();
  }

 private:
  model::CudaGPT2Of<Act> model_;
  model::CudaMultipassRunnerOf<Act> runner_;
  DeviceBuffer<float> m_, v_;
  std::vector<gpu::DecaySegment> segments_;
  gpu::AdamWHyper hyper_;
  double clip_;
  uint64_t seed_;
  int64_t adam_step_ = 0;
};

// A CUDA model of its own, loaded once from the host weights, and its decoder.
template <typename Act>
class OwningCudaDecoder final : public model::Decoder {
 public:
  OwningCudaDecoder(const TrainConfig& c, const model::GPT2& gpt) : model_(gpt.config()), decoder_(model_) {
    model_.set_attention(attention_kind(c));
    model_.set_params(gpt.params());
  }
  const model::GPT2Config& config() const override { return decoder_.config(); }
  void begin(int B, int T) override { decoder_.begin(B, T); }
  void forward(int a, int b, const int* tokens, const int* pos, const uint8_t* mask, const uint8_t* thought) override {
    decoder_.forward(a, b, tokens, pos, mask, thought);
  }
  void greedy_tokens(int* out) override { decoder_.greedy_tokens(out); }
  const float* hidden() override { return decoder_.hidden(); }

 private:
  model::CudaGPT2Of<Act> model_;
  model::CudaDecoderOf<Act> decoder_;
};

}  // namespace

bool device_available(std::string* why) {
  std::string none;
  if (cuda_device_count(&none) > 0) return true;
  if (why) *why = "no usable GPU (" + none + ")";
  return false;
}

std::unique_ptr<DeviceStep> make_device_step(const TrainConfig& c, const model::GPT2& gpt, const model::AdamW& opt) {
  std::string why;
  COCONUT_CHECK(device_available(&why), "train.device: cuda: {}", why);
  if (c.precision == "bf16") return std::make_unique<CudaStep<gpu::bf16>>(c, gpt, opt);
  return std::make_unique<CudaStep<float>>(c, gpt, opt);
}

std::unique_ptr<model::Decoder> make_device_decoder(const TrainConfig& c, const model::GPT2& gpt) {
  std::string why;
  COCONUT_CHECK(device_available(&why), "decoding on cuda: {}", why);
  if (c.precision == "bf16") return std::make_unique<OwningCudaDecoder<gpu::bf16>>(c, gpt);
  return std::make_unique<OwningCudaDecoder<float>>(c, gpt);
}

}  // namespace coconut::launcher
