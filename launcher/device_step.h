// Training steps on a GPU for the one-process trainer (train.device: cuda). The model,
// its gradients and AdamW's moments live on the device (model/cuda_gpt2.h); the host
// GPT2 and AdamW, which evaluation, checkpoints and the export read, are brought up to
// date by sync_to_host only where those read them (trainer.cpp, train_checkpoint.cpp).
// Under mpirun with parallel.pp 1 the ranks are data-parallel replicas, one model per
// GPU: each runs its share of the micro-batches, the gradients are summed across the
// ranks (parallel/device_exchange.h: NCCL overlapping the backward, or MPI through host
// memory), and each rank updates its ZeRO-1 shard. Built with the CUDA backend only;
// without it make_device_step says so.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "launcher/train_config.h"
#include "model/adamw.h"
#include "model/batch.h"
#include "model/decoder.h"
#include "model/gpt2.h"
#include "parallel/comm.h"
#include "parallel/executor.h"
#include "parallel/stage_compute.h"
#include "parallel/zero_adamw.h"

namespace coconut::launcher {

class DeviceStep {
 public:
  virtual ~DeviceStep() = default;
  // One optimizer step over the micro-batches, as the CPU's local step: gradients summed
  // over them (each scaled by loss_scale), global-norm clipping, AdamW at rate lr.
  // Dropout draws the CPU's masks for (seed, step, sample ids). Returns the summed loss
  // and the global gradient norm before clipping; a norm that is not finite skips the
  // update. Data-parallel: every rank passes the whole batch's micro-batches and runs
  // micro-batch m when m modulo the ranks is its rank (as the CPU executor); the loss
  // and the norm are the whole batch's.
  virtual parallel::StepStats step(const std::vector<model::SequenceBatch>& micro,
                      const std::vector<std::vector<int64_t>>& micro_ids, float loss_scale, int64_t step,
                      float lr) = 0;
  // Zero both moments and the step count (the curriculum's optimizer resets).
  virtual void reset_optimizer() = 0;
  // AdamW steps since the last reset (or the resumed count).
  virtual int64_t optimizer_steps() const = 0;
  // Weights, both moments and the step count into the host model and optimizer. `opt`
  // covers optimizer_shard() (the whole model in one process): a data-parallel rank
  // keeps host moments for its shard only.
  virtual void sync_to_host(model::GPT2& gpt, model::AdamW& opt) = 0;
  // The reverse: after a resume has loaded them on the host.
  virtual void load_from_host(const model::GPT2& gpt, const model::AdamW& opt) = 0;
  // The elements of the flat buffer whose AdamW moments this rank keeps: all of them in
  // one process, shard_range(0, n, ranks, rank) when data-parallel.
  virtual parallel::ShardRange optimizer_shard() const = 0;
  // What runs, for the log (the attention kernels).
  virtual std::string describe() const = 0;
  // With train.cuda_graphs, how the run used them ("CUDA graphs: C captured, R replays",
  // logged at the end of training: a run whose graphs were never replayed says so);
  // "" without graphs.
  virtual std::string graph_use() const = 0;
  // For tests (COCONUT_TRAIN_FAULT, launcher/train_loop.cpp): the device weights of
  // elements [range.begin, range.end) become NaN now, in the master weights and the
  // copy the forward reads (nan_weights); or the gradients of those elements become NaN
  // in the next step, once they are summed and before the norm (nan_grads).
  virtual void poison_weights(parallel::ParamSlice range) = 0;
  virtual void poison_next_gradients(parallel::ParamSlice range) = 0;
  // Greedy decoding on the device model's current weights: evaluation runs where the
  // weights are (valid while this DeviceStep lives).
  virtual std::unique_ptr<model::Decoder> decoder() = 0;
};

// Whether this build has the CUDA backend and a usable GPU; *why says why not.
bool device_available(std::string* why);

// Where the device step runs: one process, or data-parallel ranks.
struct DevicePlacement {
  parallel::Communicator* world = nullptr;  // the job's ranks, all replicas (pp 1); null or 1 rank: one process
  int local_rank = 0, local_size = 1;       // this rank's place on its node: which GPU it takes
};

// The elements whose AdamW moments a device step over `placement` keeps: the whole
// model in one process, this rank's ZeRO-1 shard when data-parallel (the host optimizer
// given to make_device_step covers exactly these).
inline parallel::ShardRange device_optimizer_shard(size_t num_params, const DevicePlacement& placement) {
  if (!placement.world) return {0, num_params};
  return parallel::shard_range(0, num_params, placement.world->size(), placement.world->rank());
}

// The device trainer for c.device == "cuda" (c.precision fp32 or bf16), starting from the
// host model's weights and the state of `opt`, an optimizer over
// device_optimizer_shard(gpt.num_params(), placement). Data-parallel over placement.world
// when given (collective; c.gpu_comm says how the ranks exchange; the trainer gives it
// only to jobs of several ranks, a test may give a 1-rank world: the exchange then runs
// and the result equals the one-process step's bit for bit).
std::unique_ptr<DeviceStep> make_device_step(const TrainConfig& c, const model::GPT2& gpt, const model::AdamW& opt,
                                             const DevicePlacement& placement = {});

// A pipeline stage on this rank's GPU (train.device: cuda with parallel.pp > 1;
// parallel/cuda_stage_compute.h) in c.precision with c.attention's kernels, for the
// PipelineExecutor that owns `gpt`'s weights: GPU local_rank % (visible GPUs).
std::unique_ptr<parallel::StageCompute> make_device_stage_compute(const TrainConfig& c, model::GPT2& gpt,
                                                                  const parallel::StagePlace& place, int local_rank);

// Greedy decoding on the GPU (c.precision, c.attention) on a copy of the host model's
// weights, its thoughts from `source`: `coconut eval --device cuda [--thought-source S]`,
// on GPU local_rank % (visible GPUs) (the ranks of a node under mpirun share them out).
std::unique_ptr<model::Decoder> make_device_decoder(const TrainConfig& c, const model::GPT2& gpt,
                                                    model::ThoughtSource source = model::ThoughtSource::own,
                                                    int local_rank = 0);

}  // namespace coconut::launcher
