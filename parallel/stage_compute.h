// What one pipeline stage computes on: the CPU model (make_cpu_stage_compute, in
// parallel/cpu_stage_compute.cpp) or the CUDA model (parallel/cuda_stage_compute.h).
// PipelineExecutor (parallel/executor.h) owns the schedule, the messages between the
// stages, the tied embedding and the ZeRO-1 optimizer on the host model's flat buffers;
// a StageCompute owns the micro-batches' buffers and runs the ops that touch them:
//   Forward(m, p)   the stage's layers over pass p's columns (stage 0: token embeddings
//                   with the thoughts of pass p-1; last stage: the thoughts pass p feeds
//                   back, or after the final pass the LM-head loss);
//   Backward(m, p)  the reverse, with the thoughts' gradients routed back;
//   messages        the host memory a send goes from and a receive lands in (message()),
//                   with hooks to fill it from the device before a send and to move it to
//                   the device after a receive.
// Both computes give the host model's gradient buffer the stage's gradients at the end
// of the op list (end_step), so that everything after it is the same code.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "model/batch.h"
#include "model/gpt2.h"
#include "parallel/micro_buffers.h"
#include "parallel/partition.h"
#include "parallel/schedule.h"
#include "runtime/memory_meter.h"

namespace coconut::parallel {

inline size_t rows_of(const model::Pass& pass, int B) { return static_cast<size_t>(pass.end - pass.begin) * B; }
inline size_t first_row(const model::Pass& pass, int B) { return static_cast<size_t>(pass.begin) * B; }

// The dropout identity of a step (PipelineExecutor::set_dropout): per micro-batch the
// global id of each sequence (empty: 0..B-1 in every micro-batch).
struct StepDropout {
  bool enabled = false;
  uint64_t seed = 0, step = 0;
  std::vector<std::vector<int64_t>> sample_ids;
  int64_t sample_id(int micro, int s) const { return sample_ids.empty() ? s : sample_ids[micro][s]; }
};

// The extra loss on the final-norm states of a micro-batch (PipelineExecutor::HiddenLoss).
using HiddenLoss = std::function<double(int micro, const model::Activations& acts, MeteredVector<float>& d_hidden)>;

class StageCompute {
 public:
  virtual ~StageCompute() = default;
  virtual const char* name() const = 0;
  // Bytes a micro-batch of T columns holds on this stage per row (the scheduler's and the
  // simulator's memory model).
  virtual double micro_bytes_per_row(int T) const = 0;
  // The CPU compute calls it after the LM head of each micro-batch; the CUDA one refuses
  // a non-empty hook.
  virtual void set_hidden_loss(HiddenLoss hook) = 0;

  // Before a step's op list. ranges: the parts of the flat buffers this stage reads and
  // differentiates (its slice, and wte on a last stage that is not also the first): their
  // gradients are zeroed, and the CUDA compute uploads their weights from the host model.
  virtual void begin_step(const std::vector<ParamSlice>& ranges, float loss_scale, const StepDropout& dropout) = 0;
  // After the op list: the host model's gradients over `ranges` hold this stage's.
  virtual void end_step(const std::vector<ParamSlice>& ranges) = 0;

  // A micro-batch's buffers live from its first op on the stage to its last.
  virtual void open_micro(int m, const model::SequenceBatch& b) = 0;
  virtual void close_micro(int m) = 0;
  // The host floats a message op of micro-batch op.micro carries (a send or a receive:
  // the pass's activation or gradient rows, or the packed thoughts or their gradients).
  // The memory stays valid until close_micro.
  virtual std::span<float> message(const Op& op, const model::SequenceBatch& b) = 0;
  virtual void before_send(const Op& op, const model::SequenceBatch& b) = 0;  // message(op) gets the data
  virtual void after_recv(const Op& op, const model::SequenceBatch& b) = 0;   // message(op) holds the data
  // Returns the micro-batch's loss (scaled, with the hidden-state loss) when this op
  // computed it (the last stage's final pass), else 0.
  virtual double forward(int m, int p, const model::SequenceBatch& b) = 0;
  virtual void backward(int m, int p, const model::SequenceBatch& b) = 0;
};

// The CPU model: the buffers of parallel/micro_buffers.h, the ops of model/gpt2.h on the
// host model's weights; messages go from and to the buffers themselves.
std::unique_ptr<StageCompute> make_cpu_stage_compute(model::GPT2& model, const StagePlace& place,
                                                     model::ActivationPolicy activations);

}  // namespace coconut::parallel
