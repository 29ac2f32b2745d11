// The pipeline executor (DESIGN.md sections 4 and 5): one training step of a Coconut
// model whose layers are cut into pipeline stages over the ranks of a ProcessGrid,
// with ZeRO-1 data parallelism across replicas.
//
// Each rank is one stage of one replica. A step takes this replica's micro-batches
// (each a SequenceBatch with its latent pass plan), asks parallel/schedule.h for this
// stage's op list and runs it:
//   Forward(m, p, s)   forward_stage over the pass's columns. Stage 0 embeds the tokens,
//                      with the thought rows of pass p filled from the fed-back states
//                      of pass p-1; later stages take the received residual stream.
//                      The last stage then packs the final-norm states that pass p feeds
//                      back (sent to stage 0), and after the final pass computes the
//                      LM-head loss on the micro-batch's labelled rows.
//   Backward(m, p, s)  backward_stage in reverse pass order. The last stage first adds
//                      the gradient of the thoughts pass p fed (computed by stage 0 in
//                      B(m, p+1, 0)) to the gradient of their source rows; stage 0
//                      packs the gradient of pass p's thought rows for the last stage,
//                      and after pass 0 backpropagates into the token embeddings (thought
//                      rows excluded). KV-cache gradients stay on their stage
//                      (Activations::dqkv), exactly as in model/multipass.cpp.
//   Send* / Recv*      non-blocking sends (kept alive until their micro-batch is done);
//                      receives are posted when a micro-batch becomes live on the stage
//                      and waited for in op-list order. Tags come from (kind, micro, pass).
// The ops that touch tensors run on a StageCompute (parallel/stage_compute.h): the CPU
// model by default, or this rank's GPU (parallel/cuda_stage_compute.h), whose messages
// are staged through host memory; the schedule, the messages and the optimizer are this
// file's either way.
// A micro-batch's buffers live from its first to its last op on the stage, so the
// activation memory follows the schedule's in-flight cap (1F1B, ring). With
// ExecutorConfig::activations = Recompute, Backward(m, p, s) re-runs the forward of
// each layer of its micro-stage into a workspace shared by the stage's micro-batches,
// so that a micro-batch keeps only its layer outputs, KV cache and final-norm states
// (model/gpt2.h ActivationPolicy).
//
// After the op list: the tied embedding's gradient from the LM head (last stage) is
// added to stage 0's, ShardedAdamW steps the stage's parameter slice over the DP group
// with the global gradient norm taken over the pipeline, and stage 0 sends the updated
// wte to the last stage. With one stage and one replica this is exactly
// MultipassRunner over the micro-batches followed by model::AdamW.
//
// Parameters: every rank keeps the model's flat buffers at the same offsets, but a stage
// reads only its layers (plus wte and wpe on stage 0, ln_f and wte on the last stage),
// and updates and differentiates only those (parallel/partition.h held_param_slices).
// The buffers are zero pages until written (model::GPT2), so the rest of the model takes
// no memory on that rank, provided the caller too writes only the held slices (the
// trainer's init and checkpoint load do). Evaluation decodes through the stages
// (launcher/staged_generation.h); the export streams the slices to rank 0.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/adamw.h"
#include "model/batch.h"
#include "model/gpt2.h"
#include "parallel/grid.h"
#include "parallel/micro_buffers.h"
#include "parallel/partition.h"
#include "parallel/schedule.h"
#include "parallel/stage_compute.h"
#include "parallel/zero_adamw.h"

namespace coconut::parallel {

enum class ScheduleKind {
  GPipe,           // gpipe(), micro-batch major
  GPipePassMajor,  // gpipe() with GpipeOrder::PassMajor
  OneFOneB,        // one_f_one_b()
  Ring,            // ring()
};
// "gpipe", "gpipe-pass", "1f1b", "ring"; anything else is an error naming the choices.
ScheduleKind parse_schedule_kind(const std::string& name);
const char* schedule_kind_name(ScheduleKind kind);

struct ExecutorConfig {
  ScheduleKind schedule = ScheduleKind::GPipe;
  int max_in_flight = 0;  // 1F1B / ring: micro-batches in flight per stage; 0 = the number of stages
  model::AdamWConfig adam;
  double clip_norm = 0;   // clip by the global gradient norm (torch's clip_grad_norm_); 0 = off
  // Per micro-stage: keep every activation until the backward, or recompute the
  // forward of B(m,p,s) first (model/gpt2.h ActivationPolicy; the same gradients).
  model::ActivationPolicy activations = model::ActivationPolicy::Keep;
};

// This rank's time in the last forward_backward: busy = inside Forward/Backward ops,
// wall = the whole op list (waits included); the simulator's prediction of this rank's
// bubble for the same schedule and plans, from the default cost model.
struct StepTiming {
  double busy_seconds = 0, wall_seconds = 0;
  double simulated_bubble = 0;
  // The simulator's peak of this rank's per-micro-batch activation bytes (pass p held
  // from F(m,p,s) to B(m,p,s), micro_bytes_per_row x rows), for the same schedule.
  double simulated_peak_bytes = 0;
  double measured_bubble() const { return wall_seconds > 0 ? 1.0 - busy_seconds / wall_seconds : 0.0; }
};

struct StepStats {
  double loss = 0;       // global-batch loss (sum over all micro-batches of all replicas, scaled)
  double grad_norm = 0;  // global gradient norm before clipping (not finite: the update was skipped)
};

class PipelineExecutor {
 public:
  // Collective over the grid. partition: one StageLayers per stage (grid.pp() of them,
  // e.g. from partition_layers); this rank runs partition[grid.stage()]. The model must
  // outlive the executor. Makes the weights consistent first: every DP replica takes
  // the stage slice of DP rank 0, and the last stage takes wte from stage 0.
  // compute: what this stage's ops run on (make_cuda_stage_compute), null: the CPU model.
  PipelineExecutor(model::GPT2& model, ProcessGrid& grid, std::vector<StageLayers> partition,
                   const ExecutorConfig& config, std::unique_ptr<StageCompute> compute = nullptr);
  ~PipelineExecutor();
  PipelineExecutor(const PipelineExecutor&) = delete;
  PipelineExecutor& operator=(const PipelineExecutor&) = delete;

  // The dropout identity of the next forward_backward when model.dropout > 0: seed, the
  // training step and, per micro-batch, the global id of each sequence (empty: 0..B-1
  // in every micro-batch). Used once, like MultipassRunner::set_dropout.
  void set_dropout(uint64_t seed, uint64_t step, std::vector<std::vector<int64_t>> sample_ids = {});

  // An extra loss on the final-norm hidden states of each micro-batch (the <eot>
  // classifier, curriculum/eot_classifier.h), as MultipassRunner::set_hidden_loss: on
  // the last stage, right after micro-batch `micro`'s LM head (all its passes are then
  // done), with its activations (acts.lnf: [T*B, C]) and d_hidden (already holding the
  // LM head's gradient), into which it ADDS its own. It returns its loss (scaled), which
  // joins the step's loss. `micro` indexes the micro-batches given to forward_backward.
  // An empty function (the default) changes nothing; it stays set until replaced.
  // Only on the CPU compute.
  using HiddenLoss = parallel::HiddenLoss;
  void set_hidden_loss(HiddenLoss hook) { compute_->set_hidden_loss(std::move(hook)); }

  // Collective over the grid. Zeroes the gradients and runs forward and backward of
  // this replica's micro-batches through the pipeline. Every stage of a replica must be
  // given the same micro-batches (checked); replicas may have different ones, or none.
  // loss_scale: 1 / labelled tokens of the GLOBAL batch (all micro-batches, all
  // replicas). Afterwards the grads over this stage's slice hold this replica's
  // gradient (stage 0's wte includes the LM head's part). Returns the global loss,
  // the same on every rank.
  double forward_backward(const std::vector<model::SequenceBatch>& micro_batches, float loss_scale);
  // Collective over the grid: ZeRO-1 AdamW step of this stage's slice, then the wte
  // sync. Returns the global gradient norm before clipping.
  double optimizer_step(float lr);
  // forward_backward + optimizer_step.
  StepStats train_step(const std::vector<model::SequenceBatch>& micro_batches, float loss_scale, float lr);

  // Curriculum resets (DESIGN.md 2.3): moments and step count of every shard to zero.
  void reset_optimizer() { optimizer_->reset(); }
  ShardedAdamW& optimizer() { return *optimizer_; }

  const StageLayers& layers() const { return partition_[stage_]; }
  const StageCompute& compute() const { return *compute_; }
  const ParamSlice& slice() const { return slice_; }
  // This stage's op list of the last step (for tests and logging).
  const std::vector<Op>& last_ops() const { return ops_; }
  const StepTiming& last_timing() const { return timing_; }

 private:
  void run_schedule(const std::vector<model::SequenceBatch>& batches);
  void run_op(size_t index, const Op& op, const std::vector<model::SequenceBatch>& batches);
  void open_micro(int m, const model::SequenceBatch& batch);
  void close_micro(int m);
  int tag(OpKind kind, int m, int p) const;
  // What this stage reads and differentiates: its slice, and wte on the last stage.
  std::vector<ParamSlice> grad_ranges() const;
  void check_same_batches(const std::vector<model::SequenceBatch>& batches);
  void sum_tied_embedding_grad();
  void sync_tied_embedding();

  model::GPT2& model_;
  ProcessGrid& grid_;
  std::vector<StageLayers> partition_;
  ExecutorConfig config_;
  int stage_, stages_;
  bool first_, last_;
  ParamSlice slice_;
  std::unique_ptr<ShardedAdamW> optimizer_;
  std::unique_ptr<StageCompute> compute_;

  // One step's state.
  std::vector<Op> ops_;
  StepTiming timing_;
  std::vector<uint8_t> live_;                // per micro-batch: between its first and last op here
  std::vector<std::vector<Request>> sends_;  // per micro-batch: its outstanding sends
  std::vector<Request> recvs_;               // by op index
  std::vector<size_t> last_op_;              // per micro-batch: index of its last op on this stage
  std::vector<double> losses_;               // per micro-batch (last stage)
  int max_passes_ = 0;
  float loss_scale_ = 1;
  bool dropout_pending_ = false;
  StepDropout dropout_;
  std::vector<float> wte_grad_;
};

}  // namespace coconut::parallel
