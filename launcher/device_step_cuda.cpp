// launcher/device_step.h on the CUDA backend: CudaGPT2 (fp32) or CudaGPT2Bf16 (bf16
// mixed precision: fp32 master weights, gradients and moments, a bf16 weight copy that
// AdamW refreshes), the multipass runner, gpu::adamw_step over the decay segments of
// this rank's optimizer shard, global-norm clipping on the device, the exchange with the
// other data-parallel ranks (parallel/device_exchange.h), and the device decoder for
// evaluation.
#include <fmt/format.h>

#include <cmath>
#include <string>
#include <type_traits>

#include "launcher/device_step.h"
#include "model/cuda_decoder.h"
#include "model/cuda_gpt2.h"
#include "model/cuda_multipass.h"
#include "parallel/cuda_stage_compute.h"
#include "parallel/device_exchange.h"
#include "parallel/partition.h"
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
  // exchange: the other data-parallel ranks, or null in one process.
  CudaStep(const TrainConfig& c, const model::GPT2& gpt, const model::AdamW& opt,
           std::unique_ptr<parallel::DeviceExchange> exchange)
      : model_(gpt.config()),
        exchange_(std::move(exchange)),
        shard_(exchange_ ? parallel::shard_range(0, model_.num_params(), exchange_->size(), exchange_->rank())
                         : parallel::ShardRange{0, model_.num_params()}),
        m_(shard_.end - shard_.begin),
        v_(shard_.end - shard_.begin),
        clip_(c.grad_clip),
        seed_(c.seed),
        buckets_(parallel::layer_gradient_buckets(gpt.layout(), gpt.config().n_layer)) {
    check_covers_shard(opt);
    // The decay segments of this rank's shard: those of the host optimizer over it.
    for (const auto& s : opt.segments()) segments_.push_back({s.begin, s.end, s.decay});
    const model::AdamWConfig& a = opt.config();
    hyper_ = {a.lr, a.beta1, a.beta2, a.eps, a.weight_decay};
    model_.set_attention(attention_kind(c));
    // With data-parallel ranks a captured step holds what the backward queues for the
    // exchange (nccl: each layer's all-reduce); the mpi exchange runs after the runner.
    runner_.set_cuda_graphs(c.cuda_graphs);
    // Padded batches (train.pad_columns) also round their targeted rows, so that their
    // plans repeat; with or without graphs, so that both give the same bits.
    if (c.pad_columns > 0) runner_.set_target_rows_multiple(64);
    load_from_host(gpt, opt);
  }

  parallel::StepStats step(const std::vector<model::SequenceBatch>& micro,
                           const std::vector<std::vector<int64_t>>& micro_ids, float loss_scale, int64_t step,
                           float lr) override {
    model_.zero_grads();
    const int ranks = exchange_ ? exchange_->size() : 1, rank = exchange_ ? exchange_->rank() : 0;
    // With NCCL the last micro-batch's backward hands each finished layer to the
    // exchange (bucket l after layer l, bucket 0 at the end); every rank sums the same
    // buckets in the same order, also a rank without a micro-batch this step.
    const bool overlap = exchange_ && exchange_->overlaps_backward();
    float* grads = model_.grads();
    // Bucket 0 comes last: the compute stream then waits for every sum, inside the step
    // (a captured graph must join the communication stream back before it ends).
    auto sum_bucket = [&](int l) {
      exchange_->sum_gradients(grads, buckets_.at(size_t(l)), model_.stream());
      if (l == 0) exchange_->wait_for_sums(model_.stream());
    };
    double loss = 0;
    for (size_t m = size_t(rank); m < micro.size(); m += size_t(ranks)) {
      if (model_.config().dropout > 0) runner_.set_dropout(seed_, static_cast<uint64_t>(step), micro_ids.at(m));
      // NCCL collectives in CUDA graphs must be captured on every rank or on none, and each
      // rank picks its plans alone: with several ranks that micro-batch runs eagerly.
      if (overlap && m + size_t(ranks) >= micro.size())
        runner_.set_grad_ready(sum_bucket, /*in_graphs=*/ranks == 1);  // the last one
      try {
        loss += runner_.forward_backward(model_, micro[m], loss_scale);
      } catch (...) {
        runner_.set_grad_ready({});  // sum_bucket refers to this frame
        throw;
      }
      runner_.set_grad_ready({});
    }
    const size_t n = model_.num_params();
    if (exchange_) {
      if (!overlap) {
        exchange_->sum_gradients(grads, {0, n}, model_.stream());
        exchange_->wait_for_sums(model_.stream());
      } else if (size_t(rank) >= micro.size()) {  // no micro-batch here: the same buckets, in order
        for (int l = int(buckets_.size()) - 1; l >= 0; --l) sum_bucket(l);
      }
      loss = exchange_->sum(loss);
    }
    if (poisoned_grads_.size() > 0) {  // COCONUT_TRAIN_FAULT=nan_grads (every rank: all hold the sums)
      fill_nan(grads + poisoned_grads_.begin, poisoned_grads_.size() * sizeof(float));
      poisoned_grads_ = {};
    }
    // Every rank holds the summed gradient; each clips and updates its own shard only. A
    // gradient with a NaN or an infinity is not applied (the trainer then stops the run).
    const size_t count = shard_.end - shard_.begin;
    double squares = gpu::sum_of_squares_host(grads + shard_.begin, count, model_.stream());
    if (exchange_) squares = exchange_->sum(squares);
    const parallel::StepStats stats{loss, std::sqrt(squares)};
    if (!std::isfinite(stats.grad_norm)) return stats;
    if (clip_ > 0)
      gpu::clip_grads(grads + shard_.begin, count, stats.grad_norm, static_cast<float>(clip_), model_.stream());
    ++adam_step_;
    hyper_.lr = lr;
    // The bf16 weights the forward reads: the update refreshes them in one process; with
    // several ranks they are converted once all the shards have arrived.
    gpu::bf16* copy = nullptr;
    if constexpr (std::is_same_v<Act, gpu::bf16>) copy = model_.params_for_compute();
    gpu::adamw_step(model_.params(), grads, m_.data(), v_.data(), shard_.begin, segments_, hyper_, adam_step_,
                    exchange_ ? nullptr : copy, model_.stream());
    if (exchange_) {
      exchange_->share_shards(model_.params(), n, model_.stream());
      if (copy) gpu::convert(copy, model_.params(), int64_t(n), model_.stream());
    }
    return stats;
  }

  std::string graph_use() const override {
    if (!runner_.cuda_graphs()) return "";
    return fmt::format("CUDA graphs: {} captured, {} replays", runner_.graph_captures(), runner_.graph_replays());
  }

  std::string describe() const override {
    std::string d = std::string("attention ") + model::attention_name(model_.attention());
    const model::CudaAttention runs = model_.pass_attention(false);
    if (runs != model_.attention())
      d += std::string(" (not applicable to this model: ") + model::attention_name(runs) + " runs)";
    const model::CudaAttention with_dropout = model_.pass_attention(true);
    if (model_.config().dropout > 0.f && with_dropout != runs)
      d += std::string(" (") + model::attention_name(with_dropout) + " in steps with attention dropout)";
    if (runner_.cuda_graphs()) d += "; CUDA graphs (a graph per batch shape, captured on its second step)";
    if (exchange_)
      d += fmt::format("; data-parallel rank {} of {}, gradients summed {}", exchange_->rank(), exchange_->size(),
                       exchange_->overlaps_backward() ? "by NCCL layer by layer during the backward"
                                                      : "over MPI through host memory after the backward");
    return d;
  }

  void poison_weights(parallel::ParamSlice range) override {
    check_range(range);
    fill_nan(model_.params() + range.begin, range.size() * sizeof(float));
    if constexpr (std::is_same_v<Act, gpu::bf16>)
      fill_nan(model_.params_for_compute() + range.begin, range.size() * sizeof(gpu::bf16));
  }

  void poison_next_gradients(parallel::ParamSlice range) override {
    check_range(range);
    poisoned_grads_ = range;
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
    check_covers_shard(opt);
    CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
    model_.get_params(gpt.params());
    m_.copy_to_host(opt.m().data(), m_.size());
    v_.copy_to_host(opt.v().data(), v_.size());
    opt.set_step_count(adam_step_);
  }

  void load_from_host(const model::GPT2& gpt, const model::AdamW& opt) override {
    check_covers_shard(opt);
    CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
    model_.set_params(gpt.params());
    m_.copy_from_host(opt.m().data(), m_.size());
    v_.copy_from_host(opt.v().data(), v_.size());
    adam_step_ = opt.step_count();
  }

  parallel::ShardRange optimizer_shard() const override { return shard_; }
  int64_t optimizer_steps() const override { return adam_step_; }

 private:
  // The host optimizer holds this rank's moments only (device_optimizer_shard).
  void check_covers_shard(const model::AdamW& opt) const {
    COCONUT_CHECK(opt.begin() == shard_.begin && opt.end() == shard_.end,
                  "the device step keeps the moments of elements [{}, {}) of {}; the host optimizer covers [{}, {})",
                  shard_.begin, shard_.end, model_.num_params(), opt.begin(), opt.end());
  }

  void check_range(parallel::ParamSlice range) const {
    COCONUT_CHECK(range.begin <= range.end && range.end <= model_.num_params(),
                  "poisoned elements [{}, {}) outside the model's {}", range.begin, range.end, model_.num_params());
  }
  // All bytes 0xFF: a NaN in fp32 and in bf16 alike.
  void fill_nan(void* device, size_t bytes) { CUDA_CHECK(cudaMemsetAsync(device, 0xFF, bytes, model_.stream())); }

  model::CudaGPT2Of<Act> model_;
  std::unique_ptr<parallel::DeviceExchange> exchange_;
  // After the exchange, so destroyed before it: a graph that holds a collective must go
  // before its NCCL communicator (ncclCommDestroy waits for such graphs).
  model::CudaMultipassRunnerOf<Act> runner_;
  parallel::ShardRange shard_;
  DeviceBuffer<float> m_, v_;  // the shard's moments
  std::vector<gpu::DecaySegment> segments_;
  gpu::AdamWHyper hyper_;
  double clip_;
  uint64_t seed_;
  std::vector<parallel::ParamSlice> buckets_;
  int64_t adam_step_ = 0;
  parallel::ParamSlice poisoned_grads_{};  // poison_next_gradients, until that step
};

// A CUDA model of its own, loaded once from the host weights, and its decoder.
template <typename Act>
class OwningCudaDecoder final : public model::Decoder {
 public:
  OwningCudaDecoder(const TrainConfig& c, const model::GPT2& gpt, model::ThoughtSource source)
      : model_(gpt.config()), decoder_(model_, source) {
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
  const model::ThoughtRouting* thought_routing() const override { return decoder_.thought_routing(); }

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

std::unique_ptr<DeviceStep> make_device_step(const TrainConfig& c, const model::GPT2& gpt, const model::AdamW& opt,
                                             const DevicePlacement& placement) {
  std::string why;
  COCONUT_CHECK(device_available(&why), "train.device: cuda: {}", why);
  // Several ranks: choose each rank's GPU and the exchange before the model is made
  // (its buffers go to the current device).
  std::unique_ptr<parallel::DeviceExchange> exchange;
  if (placement.world) {
    if (c.gpu_comm == "nccl") {
      auto* mpi = dynamic_cast<parallel::MpiCommunicator*>(placement.world);
      COCONUT_CHECK(mpi != nullptr, "parallel.gpu_comm: nccl needs the job's MPI communicator");
      exchange = parallel::make_nccl_exchange(*mpi, placement.local_rank, placement.local_size);
    } else {
      exchange = parallel::make_host_exchange(*placement.world, placement.local_rank);
    }
  }
  if (c.precision == "bf16") return std::make_unique<CudaStep<gpu::bf16>>(c, gpt, opt, std::move(exchange));
  return std::make_unique<CudaStep<float>>(c, gpt, opt, std::move(exchange));
}

std::unique_ptr<parallel::StageCompute> make_device_stage_compute(const TrainConfig& c, model::GPT2& gpt,
                                                                  const parallel::StagePlace& place, int local_rank) {
  std::string why;
  COCONUT_CHECK(device_available(&why), "train.device: cuda: {}", why);
  return parallel::make_cuda_stage_compute(gpt, place, c.precision == "bf16", attention_kind(c), local_rank);
}

std::unique_ptr<model::Decoder> make_device_decoder(const TrainConfig& c, const model::GPT2& gpt,
                                                    model::ThoughtSource source, int local_rank) {
  std::string why;
  COCONUT_CHECK(device_available(&why), "decoding on cuda: {}", why);
  select_shared_device(local_rank);
  if (c.precision == "bf16") return std::make_unique<OwningCudaDecoder<gpu::bf16>>(c, gpt, source);
  return std::make_unique<OwningCudaDecoder<float>>(c, gpt, source);
}

}  // namespace coconut::launcher
