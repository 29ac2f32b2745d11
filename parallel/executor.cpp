// Runs one stage's op list of a pipeline schedule over real tensors (see executor.h).
#include "parallel/executor.h"

#include <algorithm>
#include <climits>
#include <utility>

#include "model/multipass.h"
#include "parallel/simulator.h"
#include "runtime/check.h"
#include "runtime/timer.h"

namespace coconut::parallel {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "gpipe") return ScheduleKind::GPipe;
  if (name == "gpipe-pass") return ScheduleKind::GPipePassMajor;
  if (name == "1f1b") return ScheduleKind::OneFOneB;
  if (name == "ring") return ScheduleKind::Ring;
  COCONUT_FAIL("pipeline schedule '{}' is not one of gpipe, gpipe-pass, 1f1b, ring", name);
}

const char* schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::GPipe: return "gpipe";
    case ScheduleKind::GPipePassMajor: return "gpipe-pass";
    case ScheduleKind::OneFOneB: return "1f1b";
    case ScheduleKind::Ring: return "ring";
  }
  return "?";
}

namespace {

// An FNV-1a digest of what a stage derives its schedule and messages from.
struct Digest {
  uint64_t h = 1469598103934665603ull;
  void add(int64_t x) {
    for (int i = 0; i < 8; ++i) h = (h ^ static_cast<uint8_t>(x >> (8 * i))) * 1099511628211ull;
  }
};

}  // namespace

PipelineExecutor::PipelineExecutor(model::GPT2& model, ProcessGrid& grid, std::vector<StageLayers> partition,
                                   const ExecutorConfig& config, std::unique_ptr<StageCompute> compute)
    : model_(model),
      grid_(grid),
      partition_(std::move(partition)),
      config_(config),
      stage_(grid.stage()),
      stages_(grid.pp()),
      first_(grid.first_stage()),
      last_(grid.last_stage()) {
  COCONUT_CHECK(static_cast<int>(partition_.size()) == stages_,
                "pipeline: the partition has {} stages but the process grid has {}", partition_.size(), stages_);
  validate_partition(partition_, model.config().n_layer);
  COCONUT_CHECK(config_.max_in_flight >= 0, "pipeline: max_in_flight must be >= 0 (0 = stages), got {}",
                config_.max_in_flight);
  slice_ = stage_param_slice(model.layout(), partition_, stage_);
  // Replicas must start from the same weights (ZeRO assumes it), and the last stage's
  // LM head from stage 0's wte: copy them rather than trust every rank's initialisation.
  grid_.data_parallel().broadcast(model_.params() + slice_.begin, slice_.size(), 0);
  sync_tied_embedding();
  optimizer_ = std::make_unique<ShardedAdamW>(config_.adam, model.layout(), slice_.begin, slice_.end,
                                              grid_.data_parallel());
  compute_ = compute ? std::move(compute)
                     : make_cpu_stage_compute(model_, {partition_[stage_], first_, last_}, config_.activations);
}

PipelineExecutor::~PipelineExecutor() = default;

void PipelineExecutor::set_dropout(uint64_t seed, uint64_t step, std::vector<std::vector<int64_t>> sample_ids) {
  dropout_pending_ = true;
  dropout_.seed = seed;
  dropout_.step = step;
  dropout_.sample_ids = std::move(sample_ids);
}

StepStats PipelineExecutor::train_step(const std::vector<model::SequenceBatch>& micro_batches, float loss_scale,
                                       float lr) {
  StepStats stats;
  stats.loss = forward_backward(micro_batches, loss_scale);
  stats.grad_norm = optimizer_step(lr);
  return stats;
}

// ---------------------------------------------------------------- the step

double PipelineExecutor::forward_backward(const std::vector<model::SequenceBatch>& batches, float loss_scale) {
  const model::GPT2Config& cfg = model_.config();
  const int M = static_cast<int>(batches.size());
  // First, together: a stage that failed alone would leave its partners waiting.
  check_same_batches(batches);
  for (int m = 0; m < M; ++m) {
    try {
      model::validate_batch(batches[m], cfg);
    } catch (const Error& e) {
      COCONUT_FAIL("pipeline: micro-batch {}: {}", m, e.what());
    }
  }
  loss_scale_ = loss_scale;
  const bool dropout = cfg.dropout > 0;
  if (dropout) {
    COCONUT_CHECK(dropout_pending_, "model.dropout is {}: call PipelineExecutor::set_dropout(seed, step, sample ids) "
                  "before each forward_backward", cfg.dropout);
    const std::vector<std::vector<int64_t>>& ids = dropout_.sample_ids;
    COCONUT_CHECK(ids.empty() || ids.size() == batches.size(),
                  "set_dropout got sample ids for {} micro-batches, the step has {}", ids.size(), M);
    for (int m = 0; m < M && !ids.empty(); ++m)
      COCONUT_CHECK(ids[m].size() == static_cast<size_t>(batches[m].B),
                    "set_dropout got {} sample ids for micro-batch {} of {} sequences", ids[m].size(), m,
                    batches[m].B);
    dropout_pending_ = false;
  }
  dropout_.enabled = dropout;
  const std::vector<ParamSlice> ranges = grad_ranges();
  compute_->begin_step(ranges, loss_scale, dropout_);
  losses_.assign(M, 0.0);
  ops_.clear();
  // A replica without data this step (the end of an epoch) still joins the collectives.
  if (M > 0) run_schedule(batches);
  compute_->end_step(ranges);
  sum_tied_embedding_grad();

  // The loss is known on the last stage only; every rank reports the global one.
  double loss = 0;
  for (double l : losses_) loss += l;
  grid_.pipeline().all_reduce_sum(&loss, 1);
  grid_.data_parallel().all_reduce_sum(&loss, 1);
  return loss;
}

void PipelineExecutor::run_schedule(const std::vector<model::SequenceBatch>& batches) {
  const model::GPT2Config& cfg = model_.config();
  const int M = static_cast<int>(batches.size());

  // The scheduler's view: pass costs in rows (columns x sequences), activation bytes
  // of a micro-batch's buffers on this stage (under this policy) per row.
  std::vector<MicroBatchPlan> plans(M);
  max_passes_ = 0;
  for (int m = 0; m < M; ++m) {
    const model::SequenceBatch& b = batches[m];
    const double bytes_per_row = compute_->micro_bytes_per_row(b.T);
    for (const model::Pass& pass : b.passes) {
      const double rows = static_cast<double>(rows_of(pass, b.B));
      plans[m].pass_cost.push_back(rows);
      plans[m].pass_activation_bytes.push_back(rows * bytes_per_row);
    }
    max_passes_ = std::max(max_passes_, plans[m].passes());
  }
  const int cap = config_.max_in_flight > 0 ? config_.max_in_flight : stages_;
  CostModel cost;
  const StageCosts stage_cost_model = stage_costs(cfg);
  for (int s = 0; s < stages_; ++s)
    cost.stage_scale.push_back(stage_cost(partition_[s], s, stages_, stage_cost_model) / stage_cost_model.layer);
  Schedule schedule;
  switch (config_.schedule) {
    case ScheduleKind::GPipe: schedule = gpipe(stages_, plans, GpipeOrder::MicroMajor); break;
    case ScheduleKind::GPipePassMajor: schedule = gpipe(stages_, plans, GpipeOrder::PassMajor); break;
    case ScheduleKind::OneFOneB: schedule = one_f_one_b(stages_, plans, cap, cost); break;
    case ScheduleKind::Ring: schedule = ring(stages_, plans, cap, cost); break;
  }
  timing_ = StepTiming{};
  const SimulationResult predicted = simulate(schedule, plans, cost);
  timing_.simulated_bubble = predicted.bubble_fraction[stage_];
  timing_.simulated_peak_bytes = predicted.peak_activation_bytes[stage_];
  ops_ = std::move(schedule[stage_]);

  // Each micro-batch is live from its first to its last op here.
  last_op_.assign(M, 0);
  std::vector<bool> seen(M, false);
  for (size_t i = 0; i < ops_.size(); ++i) last_op_[ops_[i].micro] = i;
  live_.assign(M, 0);
  sends_.clear();
  sends_.resize(M);
  recvs_.clear();
  recvs_.resize(ops_.size());

  Timer wall;
  for (size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    if (!live_[op.micro]) {
      COCONUT_CHECK(!seen[op.micro], "pipeline: micro-batch {} reopened on stage {} (internal error)", op.micro,
                    stage_);
      seen[op.micro] = true;
      open_micro(op.micro, batches[op.micro]);
    }
    const bool compute = op.kind == OpKind::Forward || op.kind == OpKind::Backward;
    Timer op_timer;
    run_op(i, op, batches);
    if (compute) timing_.busy_seconds += op_timer.seconds();
    if (i == last_op_[op.micro]) close_micro(op.micro);
  }
  timing_.wall_seconds = wall.seconds();
  for (int m = 0; m < M; ++m)
    COCONUT_CHECK(!live_[m] && seen[m], "pipeline: micro-batch {} did not finish on stage {} (internal error)", m,
                  stage_);
}

double PipelineExecutor::optimizer_step(float lr) {
  const double norm = optimizer_->step(model_.params(), model_.grads(), lr, config_.clip_norm,
                                       stages_ > 1 ? &grid_.pipeline() : nullptr);
  sync_tied_embedding();
  return norm;
}

// ---------------------------------------------------------------- micro-batch lifetime

void PipelineExecutor::open_micro(int m, const model::SequenceBatch& b) {
  compute_->open_micro(m, b);
  // Post this micro-batch's receives now, into the buffers they fill; they are waited
  // for in op-list order, which is what keeps the schedule deadlock-free.
  Communicator& pipe = grid_.pipeline();
  for (size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    if (op.micro != m || !is_recv(op.kind)) continue;
    const std::span<float> dst = compute_->message(op, b);
    recvs_[i] = pipe.irecv(dst.data(), dst.size(), op.peer, tag(op.kind, m, op.pass));
  }
  live_[m] = 1;
}

void PipelineExecutor::close_micro(int m) {
  for (Request& r : sends_[m]) r.wait();
  sends_[m].clear();
  compute_->close_micro(m);
  live_[m] = 0;
}

// ---------------------------------------------------------------- ops

int PipelineExecutor::tag(OpKind kind, int m, int p) const {
  // Tags 0 and 1 are the tied-embedding messages; (kind, micro, pass) is unique per
  // pair of ranks within a step, and a step's messages all complete within it.
  int k = 0;
  switch (kind) {
    case OpKind::SendActivation: case OpKind::RecvActivation: k = 0; break;
    case OpKind::SendGrad: case OpKind::RecvGrad: k = 1; break;
    case OpKind::SendFeedback: case OpKind::RecvFeedback: k = 2; break;
    case OpKind::SendFeedbackGrad: case OpKind::RecvFeedbackGrad: k = 3; break;
    default: COCONUT_FAIL("pipeline: {} carries no message (internal error)", op_kind_name(kind));
  }
  const int64_t t = 2 + 4 * (static_cast<int64_t>(m) * max_passes_ + p) + k;
  COCONUT_CHECK(t <= INT_MAX, "pipeline: message tag {} too large ({} micro-batches of {} passes)", t,
                live_.size(), max_passes_);
  return static_cast<int>(t);
}

void PipelineExecutor::run_op(size_t index, const Op& op, const std::vector<model::SequenceBatch>& batches) {
  const model::SequenceBatch& b = batches[op.micro];
  if (is_recv(op.kind)) {
    recvs_[index].wait();
    compute_->after_recv(op, b);
    return;
  }
  switch (op.kind) {
    case OpKind::Forward: losses_[op.micro] += compute_->forward(op.micro, op.pass, b); return;
    case OpKind::Backward: compute_->backward(op.micro, op.pass, b); return;
    case OpKind::SendActivation: case OpKind::SendGrad: case OpKind::SendFeedback: case OpKind::SendFeedbackGrad:
      break;
    default: COCONUT_FAIL("pipeline: unexpected op {} (internal error)", to_string(op));
  }
  compute_->before_send(op, b);
  const std::span<float> src = compute_->message(op, b);
  sends_[op.micro].push_back(grid_.pipeline().isend(src.data(), src.size(), op.peer, tag(op.kind, op.micro, op.pass)));
}

// ---------------------------------------------------------------- checks and the tied embedding

void PipelineExecutor::check_same_batches(const std::vector<model::SequenceBatch>& batches) {
  if (stages_ == 1) return;
  // Stages that disagree on the micro-batches would build different schedules and wait
  // on messages that never come: find out together instead of hanging.
  Digest d;
  d.add(static_cast<int64_t>(batches.size()));
  for (const model::SequenceBatch& b : batches) {
    d.add(b.B), d.add(b.T);
    for (int v : b.tokens) d.add(v);
    for (int v : b.targets) d.add(v);
    for (int v : b.pos_ids) d.add(v);
    for (uint8_t v : b.key_mask) d.add(v);
    for (const model::Pass& pass : b.passes) {
      d.add(pass.begin), d.add(pass.end), d.add(static_cast<int64_t>(pass.feedback.size()));
      for (const model::Feedback& f : pass.feedback) d.add(f.sample), d.add(f.from);
    }
  }
  uint64_t root = d.h;
  grid_.pipeline().broadcast_bytes(&root, sizeof root, 0);
  int64_t mismatches = root != d.h ? 1 : 0;
  grid_.pipeline().all_reduce_sum(&mismatches, 1);
  COCONUT_CHECK(mismatches == 0,
                "pipeline: every stage of a replica must get the same micro-batches; {} stage(s) of replica {} got "
                "other ones than stage 0 (this is stage {})",
                mismatches, grid_.dp_index(), stage_);
}

std::vector<ParamSlice> PipelineExecutor::grad_ranges() const {
  // The tied LM head's wte on a last stage that does not hold it as stage 0.
  if (last_ && stages_ > 1) return {slice_, wte_slice(model_.layout())};
  return {slice_};
}

void PipelineExecutor::sum_tied_embedding_grad() {
  if (stages_ == 1) return;
  const ParamSlice wte = wte_slice(model_.layout());
  float* g = model_.grads() + wte.begin;
  if (last_) {
    grid_.pipeline().send(g, wte.size(), 0, /*tag=*/0);
  } else if (first_) {
    wte_grad_.resize(wte.size());
    grid_.pipeline().recv(wte_grad_.data(), wte.size(), stages_ - 1, /*tag=*/0);
    for (size_t i = 0; i < wte.size(); ++i) g[i] += wte_grad_[i];
  }
}

void PipelineExecutor::sync_tied_embedding() {
  if (stages_ == 1) return;
  const ParamSlice wte = wte_slice(model_.layout());
  float* w = model_.params() + wte.begin;
  if (first_)
    grid_.pipeline().send(w, wte.size(), stages_ - 1, /*tag=*/1);
  else if (last_)
    grid_.pipeline().recv(w, wte.size(), 0, /*tag=*/1);
}

}  // namespace coconut::parallel
