// A pipeline stage on the CUDA model (cuda_stage_compute.h). The ops mirror
// cpu_stage_compute.cpp step for step, on device buffers: the same rows, the same
// packing of the thoughts, the same order of additions.
#include "parallel/cuda_stage_compute.h"

#include <type_traits>

#include "model/cuda_buffers.h"
#include "runtime/check.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/ops.h"

namespace coconut::parallel {
namespace {

using gpu::bf16;

using model::cuda_buffers::copy;
using model::cuda_buffers::ensure;
using model::cuda_buffers::zero;

template <typename Act>
class CudaStageCompute final : public StageCompute {
 public:
  CudaStageCompute(model::GPT2& host, const StagePlace& place, model::CudaAttention attention)
      : host_(host), place_(place), dev_(host.config()) {
    COCONUT_CHECK(host.config().thought_scale == 1.f,
                  "model.thought_scale {} is not implemented on the GPU (train.device: cpu)",
                  host.config().thought_scale);
    dev_.set_attention(attention);
  }

  const char* name() const override { return std::is_same_v<Act, bf16> ? "cuda bf16" : "cuda fp32"; }

  double micro_bytes_per_row(int T) const override {
    // The words CudaActivationsOf::resize lays out per row for the stage's layers, plus
    // d_out, d_in (and the embeddings on stage 0).
    const model::AttentionStorage a = dev_.attention_storage(T);
    const double C = dev_.config().d_model, nl = place_.layers.end - place_.layers.begin;
    const double act = 2 * C + nl * 16 * C + (2 + (place_.first ? 1 : 0)) * C;
    const double f32 = nl * ((std::is_same_v<Act, bf16> && a.fp32_qkv_copy ? 3 * C : 0) + 4 + double(a.floats_per_row) +
                             3 * C) + 2;
    return act * sizeof(Act) + f32 * sizeof(float);
  }

  void set_hidden_loss(HiddenLoss hook) override {
    COCONUT_CHECK(!hook, "pipeline stages on the GPU: the hidden-state loss (the <eot> classifier) is CPU-only");
  }

  void begin_step(const std::vector<ParamSlice>& ranges, float loss_scale, const StepDropout& dropout) override {
    for (const ParamSlice& r : ranges) dev_.set_params(host_.params(), r.begin, r.end);
    dev_.zero_grads();
    loss_scale_ = loss_scale;
    dropout_ = dropout;
  }
  void end_step(const std::vector<ParamSlice>& ranges) override {
    for (const ParamSlice& r : ranges) dev_.get_grads(host_.grads(), r.begin, r.end);
  }

  void open_micro(int m, const model::SequenceBatch& b) override;
  void close_micro(int m) override {
    free_.push_back(std::move(micros_[m]));  // its buffers serve a later micro-batch
  }

  std::span<float> message(const Op& op, const model::SequenceBatch& b) override {
    const MessageRows at = locate(op, b);
    return {at.host, at.count};
  }
  void before_send(const Op& op, const model::SequenceBatch& b) override {
    const MessageRows at = locate(op, b);
    to_host(at.host, at.device, at.count);
  }
  void after_recv(const Op& op, const model::SequenceBatch& b) override {
    const MessageRows at = locate(op, b);
    from_host(at.device, at.host, at.count);
  }

  double forward(int m, int p, const model::SequenceBatch& b) override;
  void backward(int m, int p, const model::SequenceBatch& b) override;

 private:
  struct Micro {
    model::CudaActivationsOf<Act> acts;  // the stage's layers; x0 holds the stage input
    DeviceBuffer<int> tokens;            // stage 0
    DeviceBuffer<Act> embeds;            // stage 0: token embeddings, thought rows overwritten
    std::vector<uint8_t> is_thought;     // stage 0: rows whose input is a fed-back state
    DeviceBuffer<Act> d_out, d_in;       // [T*B, C] gradients of the stage output / input
    // The thoughts every pass feeds back, packed pass after pass (pass p's from row
    // thought_row[p]), and their gradients in the same places.
    DeviceBuffer<Act> thoughts, thought_grads;
    std::vector<size_t> thought_row;
    DeviceBuffer<int> target_rows, target_ids;  // last stage: the LM head's rows
    DeviceBuffer<Act> gathered, d_gathered;
    // Host memory of the messages: [T*B, C] mirrors of acts.x0 (received), the last
    // layer's output (sent), d_out (received), d_in (sent), and the packed thoughts.
    std::vector<float> host_x0, host_out, host_d_out, host_d_in;
    std::vector<float> host_thoughts, host_thought_grads;
  };
  // Where a message op's data is: its host floats and the device rows they mirror.
  struct MessageRows {
    float* host;
    Act* device;
    size_t count;
  };
  MessageRows locate(const Op& op, const model::SequenceBatch& b) {
    Micro& x = *micros_[op.micro];
    const size_t C = dev_.config().d_model;
    auto pass_rows = [&](std::vector<float>& host, Act* device) -> MessageRows {
      const model::Pass& pass = b.passes[op.pass];
      const size_t at = first_row(pass, b.B) * C;
      return {host.data() + at, device + at, rows_of(pass, b.B) * C};
    };
    auto packed = [&](std::vector<float>& host, DeviceBuffer<Act>& device, int p) -> MessageRows {
      const size_t at = x.thought_row[p] * C;
      return {host.data() + at, device.data() + at, b.passes[p].feedback.size() * C};
    };
    switch (op.kind) {
      case OpKind::RecvActivation: return pass_rows(x.host_x0, x.acts.x0);
      case OpKind::SendActivation: return pass_rows(x.host_out, x.acts.layers[place_.layers.end - 1].res_out);
      case OpKind::RecvGrad: return pass_rows(x.host_d_out, x.d_out.data());
      case OpKind::SendGrad: return pass_rows(x.host_d_in, x.d_in.data());
      case OpKind::SendFeedback: case OpKind::RecvFeedback: return packed(x.host_thoughts, x.thoughts, op.pass);
      case OpKind::SendFeedbackGrad: case OpKind::RecvFeedbackGrad:  // answers the thoughts of pass op.pass - 1
        return packed(x.host_thought_grads, x.thought_grads, op.pass - 1);
      default: COCONUT_FAIL("pipeline: {} carries no message (internal error)", to_string(op));
    }
  }
  // Messages are fp32 on the host: bf16 rows widen exactly and narrow back to the same bits.
  void to_host(float* host, const Act* dev, size_t n) {
    const cudaStream_t s = dev_.stream();
    const float* src = nullptr;
    if constexpr (std::is_same_v<Act, bf16>) {
      ensure(wide_, n);
      gpu::convert(wide_.data(), dev, int64_t(n), s);
      src = wide_.data();
    } else {
      src = dev;
    }
    CUDA_CHECK(cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
  }
  void from_host(Act* dev, const float* host, size_t n) {
    const cudaStream_t s = dev_.stream();
    if constexpr (std::is_same_v<Act, bf16>) {
      ensure(wide_, n);
      CUDA_CHECK(cudaMemcpyAsync(wide_.data(), host, n * sizeof(float), cudaMemcpyHostToDevice, s));
      gpu::convert(dev, wide_.data(), int64_t(n), s);
    } else {
      CUDA_CHECK(cudaMemcpyAsync(dev, host, n * sizeof(float), cudaMemcpyHostToDevice, s));
    }
  }
  double lm_head(Micro& x, const model::SequenceBatch& b);

  model::GPT2& host_;
  StagePlace place_;
  model::CudaGPT2Of<Act> dev_;
  float loss_scale_ = 1;
  StepDropout dropout_;
  std::vector<std::unique_ptr<Micro>> micros_;  // by micro-batch index, while live
  std::vector<std::unique_ptr<Micro>> free_;    // buffers of finished micro-batches
  DeviceBuffer<float> wide_;                    // bf16 messages as fp32
  DeviceBuffer<char> embedding_ws_;
};

template <typename Act>
void CudaStageCompute<Act>::open_micro(int m, const model::SequenceBatch& b) {
  const model::GPT2Config& cfg = dev_.config();
  const int B = b.B, T = b.T, C = cfg.d_model, P = int(b.passes.size());
  const size_t R = size_t(B) * T;
  const cudaStream_t s = dev_.stream();
  std::unique_ptr<Micro> taken;
  if (!free_.empty()) {
    taken = std::move(free_.back());
    free_.pop_back();
  } else {
    taken = std::make_unique<Micro>();
  }
  Micro& x = *taken;
  x.acts.resize(cfg, B, T, dev_.attention_storage(T), s, /*training=*/true, place_.layers.begin, place_.layers.end);
  x.acts.pos_ids.copy_from_host(b.pos_ids);
  x.acts.key_mask.copy_from_host(b.key_mask);
  x.acts.dropout_enabled = false;
  if (dropout_.enabled) {
    std::vector<int64_t> ids(B);
    for (int i = 0; i < B; ++i) ids[i] = dropout_.sample_id(m, i);
    x.acts.set_dropout(dropout_.seed, dropout_.step, b.pos_ids, ids);
  }
  x.acts.zero_grads(s);  // dK/dV that later passes add into
  dev_.ensure_scratch(int(R), B, T);
  ensure(x.d_out, R * C);
  ensure(x.d_in, R * C);
  zero(x.d_out.data(), R * C, s);
  zero(x.d_in.data(), R * C, s);
  if (place_.first) {
    ensure(x.tokens, R);
    x.tokens.copy_from_host(b.tokens);
    ensure(x.embeds, R * C);
    gpu::embed_tokens(x.embeds.data(), dev_.wte(), x.tokens.data(), int(R), C, s);
    ensure(embedding_ws_, gpu::embedding_backward_workspace_bytes(int(R)));
    x.is_thought.assign(R, 0);
    for (const model::Pass& pass : b.passes)
      for (const model::Feedback& f : pass.feedback) x.is_thought[size_t(f.from + 1) * B + f.sample] = 1;
  }
  x.thought_row.assign(P + 1, 0);
  for (int p = 0; p < P; ++p) x.thought_row[p + 1] = x.thought_row[p] + b.passes[p].feedback.size();
  const size_t thought_floats = x.thought_row[P] * C;
  ensure(x.thoughts, thought_floats);
  ensure(x.thought_grads, thought_floats);
  // Host memory for the messages this stage sends or receives.
  if (!place_.first) x.host_x0.resize(R * C), x.host_d_in.resize(R * C);
  if (!place_.last) x.host_out.resize(R * C), x.host_d_out.resize(R * C);
  if (place_.first != place_.last) x.host_thoughts.resize(thought_floats), x.host_thought_grads.resize(thought_floats);
  if (micros_.size() <= size_t(m)) micros_.resize(m + 1);
  micros_[m] = std::move(taken);
}

template <typename Act>
double CudaStageCompute<Act>::forward(int m, int p, const model::SequenceBatch& b) {
  Micro& x = *micros_[m];
  const int B = b.B, C = dev_.config().d_model, P = int(b.passes.size());
  const model::Pass& pass = b.passes[p];
  const size_t r0 = first_row(pass, B);
  const cudaStream_t s = dev_.stream();
  const Act* in = nullptr;
  if (place_.first) {
    // The thoughts of this pass replace their token embeddings.
    if (p > 0) {
      // One copy per run of consecutive samples (model/batch.h), not one per sample.
      for (const model::FeedbackRun& run : model::feedback_runs(b.passes[p - 1], B))
        copy(x.embeds.data() + (run.first_row + B) * C, x.thoughts.data() + (x.thought_row[p - 1] + run.index) * C,
             run.count * C, s);
    }
    in = x.embeds.data() + r0 * C;
  } else {
    in = x.acts.x0 + r0 * C;  // received there
  }
  dev_.forward_stage(x.acts, pass.begin, pass.end, place_.layers.begin, place_.layers.end, in, place_.first,
                     place_.last);
  double loss = 0;
  if (place_.last) {
    if (p + 1 < P) {
      for (const model::FeedbackRun& run : model::feedback_runs(pass, B))
        copy(x.thoughts.data() + (x.thought_row[p] + run.index) * C,
             static_cast<const Act*>(x.acts.lnf + run.first_row * C), run.count * C, s);
    } else {
      loss = lm_head(x, b);
    }
  }
  // The op's time is measured on the host (StepTiming): wait for the GPU.
  CUDA_CHECK(cudaStreamSynchronize(s));
  return loss;
}

template <typename Act>
double CudaStageCompute<Act>::lm_head(Micro& x, const model::SequenceBatch& b) {
  // As MultipassRunner: the loss over the labelled rows only, their gradient the
  // starting d_hidden (x.d_out, zero elsewhere) of the backward.
  const int C = dev_.config().d_model;
  const size_t R = size_t(b.B) * b.T;
  std::vector<int> rows, ids;
  for (size_t r = 0; r < R; ++r)
    if (b.targets[r] >= 0) rows.push_back(int(r)), ids.push_back(b.targets[r]);
  const int n = int(rows.size());
  if (n == 0) return 0;
  const cudaStream_t s = dev_.stream();
  ensure(x.target_rows, rows.size());
  ensure(x.target_ids, ids.size());
  x.target_rows.copy_from_host(rows);
  x.target_ids.copy_from_host(ids);
  ensure(x.gathered, size_t(n) * C);
  ensure(x.d_gathered, size_t(n) * C);
  gpu::embed_tokens(x.gathered.data(), static_cast<const Act*>(x.acts.lnf), x.target_rows.data(), n, C, s);  // gather
  const double loss = dev_.lm_head_loss(x.gathered.data(), x.target_ids.data(), n, loss_scale_, x.d_gathered.data());
  gpu::scatter_rows(x.d_out.data(), x.d_gathered.data(), x.target_rows.data(), n, C, s);
  return loss;
}

template <typename Act>
void CudaStageCompute<Act>::backward(int m, int p, const model::SequenceBatch& b) {
  Micro& x = *micros_[m];
  const int B = b.B, C = dev_.config().d_model, P = int(b.passes.size());
  const model::Pass& pass = b.passes[p];
  const size_t r0 = first_row(pass, B);
  const cudaStream_t s = dev_.stream();
  if (place_.last && p + 1 < P) {
    // The gradient of the thoughts this pass fed joins the gradient of their sources.
    for (const model::FeedbackRun& run : model::feedback_runs(pass, B)) {
      Act* source = x.d_out.data() + run.first_row * C;
      gpu::add_forward(source, source, x.thought_grads.data() + (x.thought_row[p] + run.index) * C,
                       int64_t(run.count * C), s);
    }
  }
  dev_.backward_stage(x.acts, pass.begin, pass.end, place_.layers.begin, place_.layers.end, x.d_out.data() + r0 * C,
                      x.d_in.data() + r0 * C, place_.first, place_.last);
  if (place_.first) {
    if (p > 0) {
      for (const model::FeedbackRun& run : model::feedback_runs(b.passes[p - 1], B))
        copy(x.thought_grads.data() + (x.thought_row[p - 1] + run.index) * C,
             static_cast<const Act*>(x.d_in.data() + (run.first_row + B) * C), run.count * C, s);
    } else {
      // Token embeddings get their gradient; thought rows are not tokens.
      const size_t R = size_t(B) * b.T;
      for (const model::RowRun& run : model::flagged_runs(x.is_thought))
        zero(x.d_in.data() + run.first * C, run.count * C, s);
      gpu::embed_tokens_backward(dev_.wte_grad(), x.d_in.data(), x.tokens.data(), int(R), C,
                                 dev_.config().vocab_size, embedding_ws_.data(), s);
    }
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace

std::unique_ptr<StageCompute> make_cuda_stage_compute(model::GPT2& host, const StagePlace& place, bool bf16,
                                                      model::CudaAttention attention, int local_rank) {
  select_shared_device(local_rank);
  if (bf16) return std::make_unique<CudaStageCompute<gpu::bf16>>(host, place, attention);
  return std::make_unique<CudaStageCompute<float>>(host, place, attention);
}

}  // namespace coconut::parallel
