// Runs one stage's op list of a pipeline schedule over real tensors (see executor.h).
#include "parallel/executor.h"

#include <algorithm>
#include <climits>
#include <cstring>
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

size_t rows_of(const model::Pass& pass, int B) { return static_cast<size_t>(pass.end - pass.begin) * B; }
size_t first_row(const model::Pass& pass, int B) { return static_cast<size_t>(pass.begin) * B; }

// An FNV-1a digest of what a stage derives its schedule and messages from.
struct Digest {
  uint64_t h = 1469598103934665603ull;
  void add(int64_t x) {
    for (int i = 0; i < 8; ++i) h = (h ^ static_cast<uint8_t>(x >> (8 * i))) * 1099511628211ull;
  }
};

}  // namespace

PipelineExecutor::PipelineExecutor(model::GPT2& model, ProcessGrid& grid, std::vector<StageLayers> partition,
                                   const ExecutorConfig& config)
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
}

PipelineExecutor::~PipelineExecutor() = default;

void PipelineExecutor::set_dropout(uint64_t seed, uint64_t step, std::vector<std::vector<int64_t>> sample_ids) {
  dropout_pending_ = true;
  dropout_seed_ = seed;
  dropout_step_ = step;
  dropout_ids_ = std::move(sample_ids);
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
    COCONUT_CHECK(dropout_ids_.empty() || dropout_ids_.size() == batches.size(),
                  "set_dropout got sample ids for {} micro-batches, the step has {}", dropout_ids_.size(), M);
    for (int m = 0; m < M && !dropout_ids_.empty(); ++m)
      COCONUT_CHECK(dropout_ids_[m].size() == static_cast<size_t>(batches[m].B),
                    "set_dropout got {} sample ids for micro-batch {} of {} sequences", dropout_ids_[m].size(), m,
                    batches[m].B);
    dropout_pending_ = false;
  }
  // Only this stage's gradients (and the tied LM head's wte on the last stage): the
  // rest of the buffer is never written here, and stays untouched memory.
  model_.zero_grads(slice_.begin, slice_.end);
  if (last_ && stages_ > 1) {
    const ParamSlice wte = wte_slice(model_.layout());
    model_.zero_grads(wte.begin, wte.end);
  }
  losses_.assign(M, 0.0);
  ops_.clear();
  // A replica without data this step (the end of an epoch) still joins the collectives.
  if (M > 0) run_schedule(batches);
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
    const double bytes_per_row = micro_bytes_per_row(cfg, b.T, place(), config_.activations);
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
  micros_.clear();
  micros_.resize(M);
  recvs_.clear();
  recvs_.resize(ops_.size());

  Timer wall;
  for (size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    if (!micros_[op.micro]) {
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
    COCONUT_CHECK(!micros_[m] && seen[m], "pipeline: micro-batch {} did not finish on stage {} (internal error)", m,
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
  const model::GPT2Config& cfg = model_.config();
  const int B = b.B, C = cfg.d_model;
  auto micro = std::make_unique<MicroBuffers>(model_, b, place(), config_.activations);
  MicroBuffers& x = *micro;
  x.acts.workspace = &workspace_;  // recompute: backward_stage rebuilds each layer there
  x.acts.dropout_enabled = cfg.dropout > 0;
  if (x.acts.dropout_enabled) {
    x.acts.dropout_seed = dropout_seed_;
    x.acts.dropout_step = dropout_step_;
    for (int s = 0; s < B; ++s) x.acts.sample_ids[s] = dropout_ids_.empty() ? s : dropout_ids_[m][s];
  }
  size_t max_rows = 0;
  for (const model::Pass& pass : b.passes) max_rows = std::max(max_rows, rows_of(pass, B));
  if (scratch_.dres.size() < max_rows * C) scratch_.resize(cfg, static_cast<int>(max_rows));

  // Post this micro-batch's receives now, into the buffers they fill; they are waited
  // for in op-list order, which is what keeps the schedule deadlock-free.
  Communicator& pipe = grid_.pipeline();
  for (size_t i = 0; i < ops_.size(); ++i) {
    const Op& op = ops_[i];
    if (op.micro != m || !is_recv(op.kind)) continue;
    const model::Pass& pass = b.passes[op.pass];
    float* dst = nullptr;
    size_t count = 0;
    switch (op.kind) {
      case OpKind::RecvActivation:  // the previous stage's output rows of pass p
        dst = x.acts.x0 + first_row(pass, B) * C, count = rows_of(pass, B) * C;
        break;
      case OpKind::RecvGrad:  // the gradient of this stage's output rows of pass p
        dst = x.d_out.data() + first_row(pass, B) * C, count = rows_of(pass, B) * C;
        break;
      case OpKind::RecvFeedback:
        dst = x.thoughts[op.pass].data(), count = x.thoughts[op.pass].size();
        break;
      case OpKind::RecvFeedbackGrad:
        dst = x.thought_grads[op.pass].data(), count = x.thought_grads[op.pass].size();
        break;
      default: COCONUT_FAIL("pipeline: {} is not a receive (internal error)", to_string(op));
    }
    recvs_[i] = pipe.irecv(dst, count, op.peer, tag(op.kind, m, op.pass));
  }
  micros_[m] = std::move(micro);
}

void PipelineExecutor::close_micro(int m) {
  for (Request& r : micros_[m]->sends) r.wait();
  micros_[m].reset();
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
                micros_.size(), max_passes_);
  return static_cast<int>(t);
}

void PipelineExecutor::run_op(size_t index, const Op& op, const std::vector<model::SequenceBatch>& batches) {
  const model::SequenceBatch& b = batches[op.micro];
  MicroBuffers& x = *micros_[op.micro];
  const int B = b.B, C = model_.config().d_model;
  Communicator& pipe = grid_.pipeline();
  if (is_recv(op.kind)) {
    recvs_[index].wait();
    return;
  }
  const model::Pass& pass = b.passes[op.pass];
  const float* src = nullptr;
  size_t count = 0;
  switch (op.kind) {
    case OpKind::Forward: forward(op.micro, op.pass, b); return;
    case OpKind::Backward: backward(op.micro, op.pass, b); return;
    case OpKind::SendActivation:  // this stage's output rows of the pass: the residual stream
      src = x.acts.layers[partition_[stage_].end - 1].res_out + first_row(pass, B) * C, count = rows_of(pass, B) * C;
      break;
    case OpKind::SendGrad:
      src = x.d_in.data() + first_row(pass, B) * C, count = rows_of(pass, B) * C;
      break;
    case OpKind::SendFeedback:
      src = x.thoughts[op.pass].data(), count = x.thoughts[op.pass].size();
      break;
    case OpKind::SendFeedbackGrad:
      src = x.thought_grads[op.pass].data(), count = x.thought_grads[op.pass].size();
      break;
    default: COCONUT_FAIL("pipeline: unexpected op {} (internal error)", to_string(op));
  }
  x.sends.push_back(pipe.isend(src, count, op.peer, tag(op.kind, op.micro, op.pass)));
}

void PipelineExecutor::forward(int m, int p, const model::SequenceBatch& b) {
  MicroBuffers& x = *micros_[m];
  const int B = b.B, C = model_.config().d_model, P = static_cast<int>(b.passes.size());
  const model::Pass& pass = b.passes[p];
  const StageLayers& mine = partition_[stage_];
  const size_t r0 = first_row(pass, B);
  const float* in = nullptr;
  if (first_) {
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
  model_.forward_stage(x.acts, pass.begin, pass.end, mine.begin, mine.end, in, first_, last_);
  if (!last_) return;
  if (p + 1 < P) {
    const std::vector<model::Feedback>& fb = pass.feedback;
    for (size_t i = 0; i < fb.size(); ++i)
      model_.feed_thought(x.acts.lnf + (static_cast<size_t>(fb[i].from) * B + fb[i].sample) * C,
                          x.thoughts[p].data() + i * C);
  } else {
    lm_head(m, b);
  }
}

void PipelineExecutor::lm_head(int m, const model::SequenceBatch& b) {
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
  losses_[m] = model_.lm_head_loss(gathered_.data(), target_ids_.data(), n, loss_scale_, d_gathered_.data(),
                                   logits_.data());
  for (int i = 0; i < n; ++i)
    std::memcpy(x.d_out.data() + static_cast<size_t>(target_rows_[i]) * C,
                d_gathered_.data() + static_cast<size_t>(i) * C, sizeof(float) * C);
  if (hidden_loss_) {
    losses_[m] += hidden_loss_(m, x.acts, x.d_out);
    COCONUT_CHECK(x.d_out.size() == R * C, "the hidden-state loss hook resized d_hidden ({} floats, expected {})",
                  x.d_out.size(), R * C);
  }
}

void PipelineExecutor::backward(int m, int p, const model::SequenceBatch& b) {
  MicroBuffers& x = *micros_[m];
  const int B = b.B, C = model_.config().d_model, P = static_cast<int>(b.passes.size());
  const model::Pass& pass = b.passes[p];
  const StageLayers& mine = partition_[stage_];
  const size_t r0 = first_row(pass, B);
  if (last_ && p + 1 < P) {
    // The gradient of the thoughts this pass fed joins the gradient of their sources.
    const std::vector<model::Feedback>& fb = pass.feedback;
    for (size_t i = 0; i < fb.size(); ++i)
      model_.feed_thought_backward(x.thought_grads[p + 1].data() + i * C,
                                   x.d_out.data() + (static_cast<size_t>(fb[i].from) * B + fb[i].sample) * C);
  }
  model_.backward_stage(x.acts, pass.begin, pass.end, mine.begin, mine.end, x.d_out.data() + r0 * C,
                        x.d_in.data() + r0 * C, scratch_, first_, last_);
  if (!first_) return;
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
