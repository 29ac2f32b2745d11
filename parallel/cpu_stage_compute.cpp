// A pipeline stage on the CPU model (stage_compute.h): the micro-batch buffers of
// micro_buffers.h, the forward and backward of model/gpt2.h over the stage's layers, the
// thoughts routed between the last stage and stage 0 exactly as model/multipass.cpp
// routes them within one process.
#include <algorithm>
#include <cstring>

#include "parallel/stage_compute.h"
#include "runtime/check.h"

namespace coconut::parallel {
namespace {

class CpuStageCompute final : public StageCompute {
 public:
  CpuStageCompute(model::GPT2& model, const StagePlace& place, model::ActivationPolicy activations)
      : model_(model), place_(place), activations_(activations) {}

  const char* name() const override { return "cpu"; }
  double micro_bytes_per_row(int T) const override {
    return parallel::micro_bytes_per_row(model_.config(), T, place_, activations_);
  }
  void set_hidden_loss(HiddenLoss hook) override { hidden_loss_ = std::move(hook); }

  void begin_step(const std::vector<ParamSlice>& ranges, float loss_scale, const StepDropout& dropout) override {
    // Only this stage's gradients: the rest of the buffer is never written here, and
    // stays untouched memory.
    for (const ParamSlice& r : ranges) model_.zero_grads(r.begin, r.end);
    loss_scale_ = loss_scale;
    dropout_ = dropout;
  }
  void end_step(const std::vector<ParamSlice>&) override {}  // the ops wrote the host gradients

  void open_micro(int m, const model::SequenceBatch& b) override {
    const model::GPT2Config& cfg = model_.config();
    const int B = b.B, C = cfg.d_model;
    auto micro = std::make_unique<MicroBuffers>(model_, b, place_, activations_);
    MicroBuffers& x = *micro;
    x.acts.workspace = &workspace_;  // recompute: backward_stage rebuilds each layer there
    x.acts.dropout_enabled = dropout_.enabled;
    if (dropout_.enabled) {
      x.acts.dropout_seed = dropout_.seed;
      x.acts.dropout_step = dropout_.step;
      for (int s = 0; s < B; ++s) x.acts.sample_ids[s] = dropout_.sample_id(m, s);
    }
    size_t max_rows = 0;
    for (const model::Pass& pass : b.passes) max_rows = std::max(max_rows, rows_of(pass, B));
    if (scratch_.dres.size() < max_rows * C) scratch_.resize(cfg, static_cast<int>(max_rows));
    if (micros_.size() <= static_cast<size_t>(m)) micros_.resize(m + 1);
    micros_[m] = std::move(micro);
  }
  void close_micro(int m) override { micros_[m].reset(); }

  std::span<float> message(const Op& op, const model::SequenceBatch& b) override {
    MicroBuffers& x = *micros_[op.micro];
    const model::Pass& pass = b.passes[op.pass];
    const int B = b.B, C = model_.config().d_model;
    const size_t rows = first_row(pass, B) * C, count = rows_of(pass, B) * C;
    switch (op.kind) {
      case OpKind::RecvActivation: return {x.acts.x0 + rows, count};  // the previous stage's output rows
      case OpKind::SendActivation:  // this stage's output rows: the residual stream
        return {x.acts.layers[place_.layers.end - 1].res_out + rows, count};
      case OpKind::RecvGrad: return {x.d_out.data() + rows, count};  // the gradient of this stage's output
      case OpKind::SendGrad: return {x.d_in.data() + rows, count};
      case OpKind::SendFeedback: case OpKind::RecvFeedback:
        return {x.thoughts[op.pass].data(), x.thoughts[op.pass].size()};
      case OpKind::SendFeedbackGrad: case OpKind::RecvFeedbackGrad:
        return {x.thought_grads[op.pass].data(), x.thought_grads[op.pass].size()};
      default: COCONUT_FAIL("pipeline: {} carries no message (internal error)", to_string(op));
    }
  }
  void before_send(const Op&, const model::SequenceBatch&) override {}  // sent from the buffers themselves
  void after_recv(const Op&, const model::SequenceBatch&) override {}

  double forward(int m, int p, const model::SequenceBatch& b) override;
  void backward(int m, int p, const model::SequenceBatch& b) override;

 private:
  double lm_head(int m, const model::SequenceBatch& b);

  model::GPT2& model_;
  StagePlace place_;
  model::ActivationPolicy activations_;
  HiddenLoss hidden_loss_;
  float loss_scale_ = 1;
  StepDropout dropout_;
  std::vector<std::unique_ptr<MicroBuffers>> micros_;
  // Scratch shared by the micro-batches (used within one op): under Recompute also one
  // layer's activations of the op that runs.
  model::ActivationWorkspace workspace_;
  model::BackwardScratch scratch_;
  MeteredVector<float> gathered_, d_gathered_, logits_;
  std::vector<int> target_rows_, target_ids_;
};

double CpuStageCompute::forward(int m, int p, const model::SequenceBatch& b) {
  MicroBuffers& x = *micros_[m];
  const int B = b.B, C = model_.config().d_model, P = static_cast<int>(b.passes.size());
  const model::Pass& pass = b.passes[p];
  const size_t r0 = first_row(pass, B);
  const float* in = nullptr;
  if (place_.first) {
    // The thoughts of this pass replace their token embeddings (position embedding is
    // still added in forward_stage).
    if (p > 0) {
      const std::vector<model::Feedback>& fb = b.passes[p - 1].feedback;
      for (size_t i = 0; i < fb.size(); ++i)
        std::memcpy(x.embeds.data() + (static_cast<size_t>(fb[i].from + 1) * B + fb[i].sample) * C,
                    x.thoughts[p - 1].data() + i * C, sizeof(float) * C);
    }
    in = x.embeds.data() + r0 * C;
  } else {
    in = x.acts.x0 + r0 * C;  // received there
  }
  model_.forward_stage(x.acts, pass.begin, pass.end, place_.layers.begin, place_.layers.end, in, place_.first,
                       place_.last);
  if (!place_.last) return 0;
  if (p + 1 < P) {
    const std::vector<model::Feedback>& fb = pass.feedback;
    for (size_t i = 0; i < fb.size(); ++i)
      model_.feed_thought(x.acts.lnf + (static_cast<size_t>(fb[i].from) * B + fb[i].sample) * C,
                          x.thoughts[p].data() + i * C);
    return 0;
  }
  return lm_head(m, b);
}

double CpuStageCompute::lm_head(int m, const model::SequenceBatch& b) {
  // As MultipassRunner: the loss over the labelled rows only, and their gradient as the
  // starting d_hidden of the backward.
  MicroBuffers& x = *micros_[m];
  const int C = model_.config().d_model, V = model_.config().vocab_size;
  const size_t R = static_cast<size_t>(b.B) * b.T;
  target_rows_.clear();
  target_ids_.clear();
  for (size_t r = 0; r < R; ++r)
    if (b.targets[r] >= 0) target_rows_.push_back(static_cast<int>(r)), target_ids_.push_back(b.targets[r]);
  const int n = static_cast<int>(target_rows_.size());
  gathered_.resize(static_cast<size_t>(n) * C);
  d_gathered_.resize(static_cast<size_t>(n) * C);
  logits_.resize(static_cast<size_t>(n) * V);
  for (int i = 0; i < n; ++i)
    std::memcpy(gathered_.data() + static_cast<size_t>(i) * C, x.acts.lnf + static_cast<size_t>(target_rows_[i]) * C,
                sizeof(float) * C);
  double loss = model_.lm_head_loss(gathered_.data(), target_ids_.data(), n, loss_scale_, d_gathered_.data(),
                                    logits_.data());
  for (int i = 0; i < n; ++i)
    std::memcpy(x.d_out.data() + static_cast<size_t>(target_rows_[i]) * C,
                d_gathered_.data() + static_cast<size_t>(i) * C, sizeof(float) * C);
  if (hidden_loss_) {
    loss += hidden_loss_(m, x.acts, x.d_out);
    COCONUT_CHECK(x.d_out.size() == R * C, "the hidden-state loss hook resized d_hidden ({} floats, expected {})",
                  x.d_out.size(), R * C);
  }
  return loss;
}

void CpuStageCompute::backward(int m, int p, const model::SequenceBatch& b) {
  MicroBuffers& x = *micros_[m];
  const int B = b.B, C = model_.config().d_model, P = static_cast<int>(b.passes.size());
  const model::Pass& pass = b.passes[p];
  const size_t r0 = first_row(pass, B);
  if (place_.last && p + 1 < P) {
    // The gradient of the thoughts this pass fed joins the gradient of their sources.
    const std::vector<model::Feedback>& fb = pass.feedback;
    for (size_t i = 0; i < fb.size(); ++i)
      model_.feed_thought_backward(x.thought_grads[p + 1].data() + i * C,
                                   x.d_out.data() + (static_cast<size_t>(fb[i].from) * B + fb[i].sample) * C);
  }
  model_.backward_stage(x.acts, pass.begin, pass.end, place_.layers.begin, place_.layers.end, x.d_out.data() + r0 * C,
                        x.d_in.data() + r0 * C, scratch_, place_.first, place_.last);
  if (!place_.first) return;
  if (p > 0) {
    const std::vector<model::Feedback>& fb = b.passes[p - 1].feedback;
    for (size_t i = 0; i < fb.size(); ++i)
      std::memcpy(x.thought_grads[p].data() + i * C,
                  x.d_in.data() + (static_cast<size_t>(fb[i].from + 1) * B + fb[i].sample) * C, sizeof(float) * C);
  } else {
    // Token embeddings get their gradient; thought rows are not tokens.
    const size_t R = static_cast<size_t>(B) * b.T;
    for (size_t r = 0; r < R; ++r)
      if (x.is_thought[r]) std::memset(x.d_in.data() + r * C, 0, sizeof(float) * C);
    model_.embed_tokens_backward(b.tokens.data(), static_cast<int>(R), x.d_in.data());
  }
}

}  // namespace

std::unique_ptr<StageCompute> make_cpu_stage_compute(model::GPT2& model, const StagePlace& place,
                                                     model::ActivationPolicy activations) {
  return std::make_unique<CpuStageCompute>(model, place, activations);
}

}  // namespace coconut::parallel
