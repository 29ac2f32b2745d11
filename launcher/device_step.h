// Training steps on a GPU for the one-process trainer (train.device: cuda). The model,
// its gradients and AdamW's moments live on the device (model/cuda_gpt2.h); the host
// GPT2 and AdamW, which evaluation, checkpoints and the export read, are brought up to
// date by sync_to_host only where those read them (trainer.cpp, train_checkpoint.cpp).
// Built with the CUDA backend only; without it make_device_step says so.
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

namespace coconut::launcher {

class DeviceStep {
 public:
  virtual ~DeviceStep() = default;
  // One optimizer step over the micro-batches, as the CPU's local step: gradients summed
  // over them (each scaled by loss_scale), global-norm clipping, AdamW. Dropout draws the
  // CPU's masks for (seed, step, sample ids). Returns the summed loss.
  virtual double step(const std::vector<model::SequenceBatch>& micro,
                      const std::vector<std::vector<int64_t>>& micro_ids, float loss_scale, int64_t step) = 0;
  // Zero both moments and the step count (the curriculum's optimizer resets).
  virtual void reset_optimizer() = 0;
  // Weights, both moments and the step count into the host model and optimizer.
  virtual void sync_to_host(model::GPT2& gpt, model::AdamW& opt) = 0;
  // The reverse: after a resume has loaded them on the host.
  virtual void load_from_host(const model::GPT2& gpt, const model::AdamW& opt) = 0;
  // What runs, for the log (the attention kernels).
  virtual std::string describe() const = 0;
  // Greedy decoding on the device model's current weights: evaluation runs where the
  // weights are (valid while this DeviceStep lives).
  virtual std::unique_ptr<model::Decoder> decoder() = 0;
};

// Whether this build has the CUDA backend and a usable GPU; *why says why not.
bool device_available(std::string* why);

// The device trainer for c.device == "cuda" (c.precision fp32 or bf16), starting from the
// host model's weights and the optimizer's state.
std::unique_ptr<DeviceStep> make_device_step(const TrainConfig& c, const model::GPT2& gpt, const model::AdamW& opt);

// Greedy decoding on the GPU (c.precision, c.attention) on a copy of the host model's
// weights: `coconut eval --device cuda`.
std::unique_ptr<model::Decoder> make_device_decoder(const TrainConfig& c, const model::GPT2& gpt);

}  // namespace coconut::launcher
