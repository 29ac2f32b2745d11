// MultipassRunner (model/multipass.h) on the CUDA model (model/cuda_gpt2.h): a batch's
// pass plan executed on the device, thoughts fed back from the final norm's states,
// backpropagation through every pass. It can capture a whole training step into a CUDA
// graph and replay it (set_cuda_graphs): one launch instead of thousands of small ones,
// which is what a step of one-column latent passes is made of. It tells (set_grad_ready)
// when the backward has finished each layer's gradients, so that data parallelism can
// sum them across GPUs on a stream of its own while the backward goes on
// (parallel/device_exchange.h). Not yet: the hidden-state loss hook of MultipassRunner,
// recomputation. Built only with the CUDA backend.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/batch.h"
#include "model/cuda_gpt2.h"
#include "runtime/cuda/device.h"

namespace coconut::model {

// MultipassRunner::forward_backward on the GPU: all passes forward with the thoughts
// fed back, the loss over the targeted rows scaled by loss_scale, and the backward of
// the passes in reverse, accumulating into the model's gradients. Returns the loss.
template <typename Act>
class CudaMultipassRunnerOf {
 public:
  CudaMultipassRunnerOf() = default;
  ~CudaMultipassRunnerOf();
  CudaMultipassRunnerOf(const CudaMultipassRunnerOf&) = delete;
  CudaMultipassRunnerOf& operator=(const CudaMultipassRunnerOf&) = delete;

  double forward_backward(CudaGPT2Of<Act>& model, const SequenceBatch& batch, float loss_scale);
  // Called while the step is queued, once the last backward pass has finished a bucket of
  // gradients (what the data-parallel step sums across ranks while the backward goes on):
  // with layer l >= 1 right after layer l's backward of the first pass (the last one to
  // run), and with 0, the last call, after the embeddings' backward, which ends the step.
  // Nothing of the step writes layer l's parameter gradients after its call (nor, for
  // l = n_layer - 1, ln_f's; for 0, layer 0's and the embeddings'). Work the callback
  // queues runs in the step's order and is part of a captured CUDA graph (work on other
  // streams must be joined back to the model's stream by the call with 0). Empty (the
  // default): no calls. With in_graphs false a step with the callback runs eagerly, never
  // captured nor replayed: what NCCL collectives of several ranks need, which must be
  // captured on every rank or on none, and replayed from one joint capture, while each
  // rank picks its plans (shapes, an idle rank) alone. The plan key records whether a
  // callback is set, not which: a replay runs the work the captured callback queued, so
  // a caller keeps one callback (and the buffers it names) for the runner's life.
  using GradReady = std::function<void(int layer)>;
  void set_grad_ready(GradReady ready, bool in_graphs = true) {
    grad_ready_ = std::move(ready);
    grad_ready_in_graphs_ = in_graphs;
  }
  // With graphs on, the second call with the same plan (model, B, T, passes, feedback,
  // number of targets, dropout on/off, and where every buffer of the step is) captures
  // the step into a CUDA graph and every later one replays it; the batch's data (tokens,
  // targets, positions, mask, dropout keys) and the loss scale are uploaded before each
  // launch. A new plan runs eagerly once, then is captured; so does an old plan after a
  // larger batch moved a buffer. Up to max_graphs plans keep their graphs (the least
  // recently used goes first), so that training, whose batches take a few padded shapes
  // (train.pad_columns), replays instead of capturing. The bits are the eager path's:
  // the same kernels in the same order.
  void set_cuda_graphs(bool on, int max_graphs = 16);
  // Rounds each step's number of targeted rows up to a multiple (with rows that have no
  // target, which add no loss and no gradient), so that padded batches share plans.
  // 1 (the default): the rows as they are.
  void set_target_rows_multiple(int multiple);
  bool cuda_graphs() const { return use_graphs_; }
  int graph_captures() const { return graph_captures_; }
  int graph_replays() const { return graph_replays_; }  // steps run as a launch of a kept graph
  // Diagnostics (bench/gpu_train.cpp --phases): with it on, each step records CUDA events
  // between its phases (each pass's forward, the loss, each pass's backward, the token
  // embeddings' backward), and last_phases() gives their GPU time once forward_backward
  // has returned: where a step's time goes, without a profiler. Not with CUDA graphs.
  struct PhaseTime {
    std::string name;  // "forward 0", ..., "loss", "backward P-1", ..., "token embeddings"
    float ms = 0;
  };
  void set_phase_timing(bool on);
  std::vector<PhaseTime> last_phases() const;
  // As MultipassRunner::set_dropout: needed before each forward_backward when
  // model.dropout > 0 (sample_ids empty: 0..B-1).
  void set_dropout(uint64_t seed, uint64_t step, std::vector<int64_t> sample_ids = {});

 private:
  // The host-side half of a step: checks, uploads, buffer growth. Returns the targets.
  int prepare(CudaGPT2Of<Act>& model, const SequenceBatch& batch);
  // The device-side half: every kernel of the step, queued on the model's stream.
  void queue_step(CudaGPT2Of<Act>& model, const SequenceBatch& batch, int n_targets);
  // queue_step eagerly, through a new capture, or as a replay of the captured graph.
  void queue_graphed_step(CudaGPT2Of<Act>& model, const SequenceBatch& batch, int n_targets);
  std::vector<int64_t> plan_key(const CudaGPT2Of<Act>& model, const SequenceBatch& batch, int n_targets) const;
  void drop_graphs();
  void drop_oldest_graph();  // the least recently used (graphs_ is not empty)

  struct Graph {
    std::vector<int64_t> key;  // plan_key of the captured step
    cudaGraphExec_t exec;
  };
  // Records a phase's end (phase timing on); the event pool grows to the step's phases.
  void mark_phase(const std::string& name, cudaStream_t stream);
  bool use_graphs_ = false;
  bool phase_timing_ = false;
  std::vector<cudaEvent_t> phase_events_;  // [0] the step's start, then one per phase
  std::vector<std::string> phase_names_;   // this step's phases so far
  size_t max_graphs_ = 16, target_rows_multiple_ = 1;
  GradReady grad_ready_;
  bool grad_ready_in_graphs_ = true;
  std::vector<Graph> graphs_;                // least recently used first
  std::vector<std::vector<int64_t>> seen_;   // plans run once eagerly, not yet captured
  int graph_captures_ = 0, graph_replays_ = 0;
  bool dropout_pending_ = false;
  uint64_t dropout_seed_ = 0, dropout_step_ = 0;
  std::vector<int64_t> dropout_ids_;
  CudaActivationsOf<Act> acts_;
  DeviceBuffer<int> tokens_, target_rows_, target_ids_;
  DeviceBuffer<char> embedding_ws_;  // the token embedding backward's sort
  DeviceBuffer<Act> embeds_, d_embeds_, d_hidden_, gathered_, d_gathered_;
};

using CudaMultipassRunner = CudaMultipassRunnerOf<float>;
using CudaMultipassRunnerBf16 = CudaMultipassRunnerOf<gpu::bf16>;

}  // namespace coconut::model
