// The training loop's pieces (see train_loop.h). The data order, the uniform_prob stage
// draws and dropout all come from counter-based generators keyed by (seed, epoch,
// step, sample), so any epoch's batches can be rebuilt exactly, also after a resume.
#include "launcher/train_loop.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <numeric>

#include "curriculum/batching.h"
#include "curriculum/word_tokenizer.h"
#include "launcher/staged_generation.h"
#include "model/hf_weights.h"
#include "parallel/comm.h"
#include "runtime/check.h"
#include "runtime/files.h"
#include "runtime/hash.h"
#include "runtime/memory_meter.h"
#include "runtime/rng.h"
#include "runtime/stop_signals.h"

namespace coconut::launcher {

namespace fs = std::filesystem;
using curriculum::Sample;

namespace {

// A NaN of either sign prints as "nan": fmt writes "-nan" for one with its sign bit set
// (COCONUT_TRAIN_FAULT's poison bytes 0xFF, and what arithmetic on them gives).
double unsigned_nan(double x) { return std::isnan(x) ? std::numeric_limits<double>::quiet_NaN() : x; }

void append_jsonl(const fs::path& path, const nlohmann::json& j) {
  std::ofstream out(path, std::ios::app);
  COCONUT_CHECK(out.good(), "cannot append to '{}'", path.string());
  out << j.dump() << "\n";
  COCONUT_CHECK(out.good(), "cannot write to '{}'", path.string());
}

// One optimizer step's batch, split into micro-batches. The loss is the mean over every
// target of the whole batch, however it is split.
struct StepBatch {
  std::vector<model::SequenceBatch> micro;
  std::vector<std::vector<int64_t>> micro_ids;                // dataset indices: dropout masks follow the sample
  std::vector<std::vector<curriculum::EotTarget>> micro_eot;  // <eot> decision rows
  int targets = 0, eot_rows = 0;
  double tokens = 0;
};

StepBatch make_step_batch(const TrainContext& ctx, const EpochPlan& plan, size_t begin, size_t end) {
  const TrainConfig& c = ctx.config;
  StepBatch b;
  for (size_t m = begin; m < end; m += c.micro_batch_size) {
    std::vector<const curriculum::BuiltSample*> ptrs;
    b.micro_ids.emplace_back();
    for (size_t i = m; i < std::min(end, m + static_cast<size_t>(c.micro_batch_size)); ++i) {
      ptrs.push_back(&plan.built[i]);
      b.micro_ids.back().push_back(static_cast<int64_t>(plan.order[i]));
    }
    b.micro.push_back(curriculum::make_batch(ptrs, ctx.tok, c.curriculum.feeds_back(), false,
                                             std::max(1, c.pad_columns)));
    b.targets += b.micro.back().num_targets();
    if (ctx.eot) {
      b.micro_eot.push_back(curriculum::eot_targets(b.micro.back(), ctx.tok));
      b.eot_rows += static_cast<int>(b.micro_eot.back().size());
    }
    b.tokens += b.micro.back().B * b.micro.back().T;
  }
  return b;
}

// The <eot> classifier's gradient and the statistics of this step, summed over every
// rank: only the last pipeline stage of each replica computes them (the other ranks
// add zeros). Every rank then takes the same AdamW step, so all hold the same
// classifier: rank 0 evaluates with it and saves it.
void sum_eot_over_ranks(parallel::Communicator& world, curriculum::EotClassifier& eot,
                        const curriculum::EotClassifier::Stats& before) {
  const size_t n = eot.num_params();
  const curriculum::EotClassifier::Stats& now = eot.stats();
  std::vector<double> sums(n + 3);
  std::copy_n(eot.grads(), n, sums.begin());
  sums[n] = now.bce_sum - before.bce_sum;
  sums[n + 1] = static_cast<double>(now.rows - before.rows);
  sums[n + 2] = static_cast<double>(now.correct - before.correct);
  world.all_reduce_sum(sums.data(), sums.size());
  for (size_t i = 0; i < n; ++i) eot.grads()[i] = static_cast<float>(sums[i]);
  eot.set_stats({before.bce_sum + sums[n], before.rows + std::llround(sums[n + 1]),
                 before.correct + std::llround(sums[n + 2])});
}

// COCONUT_TRAIN_FAULT=POINT@S, for tests: the embedding of position 0 (wpe row 0, which
// every sequence reads) becomes NaN on the ranks that hold it: its weights after step S's
// update (POINT nan_weights, as an overflowing update would leave them), or its gradient
// of step S before the optimizer sees it (nan_grads). `buffer` is the host model's; with
// a device step (train.device: cuda, pp 1) the device model's are poisoned instead, the
// gradient armed before the step (the device step runs backward and update in one call).
void maybe_fault(TrainContext& ctx, const char* point, int64_t step, float* buffer) {
  const char* spec = std::getenv("COCONUT_TRAIN_FAULT");
  if (spec == nullptr || *spec == '\0') return;
  const std::string s = spec;
  const size_t at = s.find('@');
  const std::string name = s.substr(0, at);
  int64_t fault_step = -1;
  try {
    if (at != std::string::npos) fault_step = std::stoll(s.substr(at + 1));
  } catch (const std::exception&) {
  }
  COCONUT_CHECK((name == "nan_weights" || name == "nan_grads") && fault_step > 0,
                "COCONUT_TRAIN_FAULT: expected nan_weights@STEP or nan_grads@STEP (STEP > 0), got '{}'", s);
  if (name != point || fault_step != step) return;
  const model::TensorSpec& wpe = ctx.gpt.layout().find("wpe.weight");
  if (ctx.device) {
    const parallel::ParamSlice row{wpe.offset, wpe.offset + static_cast<size_t>(ctx.mc.d_model)};
    if (name == "nan_weights") ctx.device->poison_weights(row);
    else ctx.device->poison_next_gradients(row);
    spdlog::warn("COCONUT_TRAIN_FAULT: {} of wpe row 0 set to NaN at step {} on the device", point, step);
    return;
  }
  for (const parallel::ParamSlice& held : ctx.dist.held_slices(ctx.gpt)) {
    if (wpe.offset < held.begin || wpe.offset >= held.end) continue;
    std::fill_n(buffer + wpe.offset, ctx.mc.d_model, std::numeric_limits<float>::quiet_NaN());
    spdlog::warn("COCONUT_TRAIN_FAULT: {} of wpe row 0 set to NaN at step {}", point, step);
  }
}

// Under mpirun: micro-batches go round-robin to the replicas; every stage of a replica
// runs the same ones. Returns the global loss and gradient norm (not finite: the update
// was skipped).
parallel::StepStats distributed_step(TrainContext& ctx, TrainState& st, StepBatch& b, float lr) {
  const TrainConfig& c = ctx.config;
  Distributed& dist = ctx.dist;
  std::vector<model::SequenceBatch> mine;
  std::vector<std::vector<int64_t>> mine_ids;
  std::vector<model::MultipassRunner::HiddenLoss> eot_losses;  // per micro-batch of this replica
  curriculum::EotClassifier* eot = ctx.eot;
  for (size_t m = dist.grid->dp_index(); m < b.micro.size(); m += dist.grid->dp()) {
    mine.push_back(std::move(b.micro[m]));
    mine_ids.push_back(b.micro_ids[m]);
    if (eot && b.eot_rows > 0)
      eot_losses.push_back(eot->hidden_loss(b.micro_eot[m], b.eot_rows, static_cast<float>(c.eot_loss_weight)));
  }
  if (ctx.mc.dropout > 0) dist.executor->set_dropout(c.seed, static_cast<uint64_t>(st.step), mine_ids);
  curriculum::EotClassifier::Stats eot_before;
  if (eot) {
    eot->zero_grads();
    eot_before = eot->stats();
    dist.executor->set_hidden_loss(
        eot_losses.empty() ? parallel::PipelineExecutor::HiddenLoss{}
                           : [&eot_losses](int m, const model::Activations& acts, MeteredVector<float>& d_hidden) {
                               return eot_losses[m](acts, d_hidden);
                             });
  }
  parallel::StepStats stats;
  stats.loss = dist.executor->forward_backward(mine, 1.f / b.targets);
  maybe_fault(ctx, "nan_grads", st.step + 1, ctx.gpt.grads());
  stats.grad_norm = dist.executor->optimizer_step(lr);
  if (eot) {
    dist.executor->set_hidden_loss({});  // it refers to this step's targets
    sum_eot_over_ranks(*ctx.world, *eot, eot_before);
    if (b.eot_rows > 0 && std::isfinite(stats.grad_norm)) eot->step(lr);  // skipped with the model's step
  }
  const parallel::StepTiming& t = dist.executor->last_timing();
  st.busy += t.busy_seconds;
  st.op_wall += t.wall_seconds;
  st.simulated_bubble += t.simulated_bubble * t.wall_seconds;  // wall-weighted mean
  st.simulated_peak_bytes = std::max(st.simulated_peak_bytes, t.simulated_peak_bytes);
  return stats;
}

// One process: MultipassRunner over the micro-batches, clipping, AdamW; on the GPU
// with train.device: cuda. A gradient with a NaN or an infinity is not applied.
parallel::StepStats local_step(TrainContext& ctx, const TrainState& st, const StepBatch& b, float lr) {
  const TrainConfig& c = ctx.config;
  if (ctx.device) {
    maybe_fault(ctx, "nan_grads", st.step + 1, nullptr);  // arms the device step's gradients
    return ctx.device->step(b.micro, b.micro_ids, 1.f / b.targets, st.step, lr);
  }
  model::GPT2& gpt = ctx.gpt;
  curriculum::EotClassifier* eot = ctx.eot;
  double loss = 0;
  gpt.zero_grads();
  if (eot) eot->zero_grads();
  for (size_t m = 0; m < b.micro.size(); ++m) {
    if (ctx.mc.dropout > 0) ctx.runner.set_dropout(c.seed, static_cast<uint64_t>(st.step), b.micro_ids[m]);
    if (eot)
      ctx.runner.set_hidden_loss(b.eot_rows > 0 ? eot->hidden_loss(b.micro_eot[m], b.eot_rows,
                                                                    static_cast<float>(c.eot_loss_weight))
                                                : model::MultipassRunner::HiddenLoss{});
    loss += ctx.runner.forward_backward(gpt, b.micro[m], 1.f / b.targets);
  }
  maybe_fault(ctx, "nan_grads", st.step + 1, gpt.grads());
  const parallel::StepStats stats{loss, std::sqrt(model::sum_of_squares(gpt.grads(), gpt.num_params()))};
  if (!std::isfinite(stats.grad_norm)) return stats;
  if (c.grad_clip > 0)
    model::clip_grads(gpt.grads(), gpt.num_params(), stats.grad_norm, static_cast<float>(c.grad_clip));
  ctx.opt.step(gpt.params(), gpt.grads(), lr);
  if (eot && b.eot_rows > 0) eot->step(lr);
  return stats;
}

// This step's learning rate (launcher/lr_schedule.h): from the run's step count and the
// model optimizer's own, which a reset zeroes and a checkpoint keeps.
float step_lr(const TrainContext& ctx, const TrainState& st) {
  const int64_t since_reset = ctx.dist.executor ? ctx.dist.executor->optimizer().step_count()
                              : ctx.device      ? ctx.device->optimizer_steps()
                                                : ctx.opt.step_count();
  return scheduled_lr(ctx.config.lr_schedule, ctx.config.adamw.lr, st.step, std::max<int64_t>(1, ctx.total_steps),
                      since_reset);
}

}  // namespace

std::vector<parallel::ParamSlice> Distributed::held_slices(const model::GPT2& gpt) const {
  if (partition.empty()) return {{0, gpt.num_params()}};
  return parallel::held_param_slices(gpt.layout(), partition, grid->stage());
}

void Distributed::export_model(const std::string& out_dir, const model::GPT2& gpt) const {
  if (grid->dp_index() != 0) return;
  COCONUT_CHECK(grid->rank_of(0, 0) == 0, "the writer (world rank 0) is not stage 0 of replica 0");
  constexpr int kExportTag = 0x6A7;
  // Each tensor lies in one stage's slice: that stage sends it (wte: stage 0, its owner).
  std::vector<parallel::ParamSlice> slices;
  for (int s = 0; s < grid->pp(); ++s) slices.push_back(parallel::stage_param_slice(gpt.layout(), partition, s));
  auto owner = [&](const model::TensorSpec& t) {
    int s = 0;
    while (t.offset >= slices[s].end) ++s;
    return s;
  };
  parallel::Communicator& pipe = grid->pipeline();
  if (!grid->first_stage()) {
    for (const model::TensorSpec& t : gpt.layout().tensors())
      if (owner(t) == grid->stage()) pipe.send(gpt.params() + t.offset, t.numel, 0, kExportTag);
    return;
  }
  std::vector<float> received;  // one tensor of another stage
  model::export_hf_gpt2(out_dir, gpt.config(), [&](const model::TensorSpec& t) -> const float* {
    const int from = owner(t);
    if (from == 0) return gpt.params() + t.offset;
    received.resize(t.numel);
    pipe.recv(received.data(), t.numel, from, kExportTag);
    return received.data();
  });
}

std::vector<size_t> epoch_order(size_t n, uint64_t seed, int epoch) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  CounterRng rng(seed, {0x5348u, static_cast<uint64_t>(epoch)});
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  return order;
}

std::string data_order_digest(const TrainContext& ctx, int epoch) {
  uint64_t h = kFnv1a64Basis;
  auto add_ids = [&](const std::vector<int>& ids) {
    const uint64_t n = ids.size();
    h = fnv1a64(&n, sizeof n, h);
    h = fnv1a64(ids.data(), ids.size() * sizeof(int), h);
  };
  for (size_t i : epoch_order(ctx.train_tok.size(), ctx.config.seed, epoch)) {
    const uint64_t index = i;
    h = fnv1a64(&index, sizeof index, h);
    const curriculum::TokenizedSample& s = ctx.train_tok[i];
    add_ids(s.question);
    for (const auto& step : s.steps) add_ids(step);
    add_ids(s.answer);
  }
  return hex_digest(h);
}

EpochPlan plan_epoch(const TrainContext& ctx, int epoch) {
  const TrainConfig& c = ctx.config;
  EpochPlan plan;
  plan.epoch = epoch;
  plan.stage = c.curriculum.stage_of_epoch(epoch);
  // This epoch's samples: the scheduled stage, or with uniform_prob a uniform draw.
  plan.order = epoch_order(ctx.train_tok.size(), c.seed, epoch);
  plan.built.resize(plan.order.size());
  for (size_t i = 0; i < plan.order.size(); ++i) {
    const auto& ts = ctx.train_tok[plan.order[i]];
    const int s = sample_stage(c, epoch, plan.order[i], ts.steps.size());
    plan.built[i] = curriculum::build_training_sample(ts, c.curriculum, s, epoch, ctx.tok);
  }
  return plan;
}

int sample_stage(const TrainConfig& c, int epoch, size_t item, size_t n_steps) {
  if (c.curriculum.uniform_prob > 0) {
    CounterRng rng(c.seed, {0x554eu, static_cast<uint64_t>(epoch), item});
    if (rng.uniform() < c.curriculum.uniform_prob) return static_cast<int>(rng.below(n_steps + 1));
  }
  return c.curriculum.stage_of_epoch(epoch);
}

void start_epoch(TrainContext& ctx, TrainState& st, const EpochPlan& plan) {
  const TrainConfig& c = ctx.config;
  COCONUT_CHECK(st.batch_in_epoch == 0, "start_epoch: epoch {} is already {} batches in", st.epoch,
                st.batch_in_epoch);
  const bool reset = (c.reset_optimizer == "epoch" && plan.epoch > 0) ||
                     (c.reset_optimizer == "stage" && st.prev_stage >= 0 && plan.stage != st.prev_stage);
  if (reset) {
    ctx.opt.reset();
    if (ctx.dist.executor) ctx.dist.executor->reset_optimizer();
    if (ctx.device) ctx.device->reset_optimizer();
    if (ctx.eot) ctx.eot->reset_optimizer();
    spdlog::info("epoch {}: optimizer state reset ({})", plan.epoch, c.reset_optimizer);
  }
  st.prev_stage = plan.stage;
  st.loss_sum = st.tokens = 0;
  st.batches = 0;
  st.seconds_before = 0;
  st.busy = st.op_wall = st.simulated_bubble = st.simulated_peak_bytes = 0;
  ActivationMeter::reset_peak();  // the epoch's peak activation bytes, logged at its end
  st.epoch_timer.start();
}

void run_batch(TrainContext& ctx, TrainState& st, const EpochPlan& plan) {
  const size_t batch_size = static_cast<size_t>(ctx.config.batch_size);
  const size_t begin = static_cast<size_t>(st.batch_in_epoch) * batch_size;
  const size_t end = std::min(plan.built.size(), begin + batch_size);
  COCONUT_CHECK(begin < end, "run_batch: batch {} is past the end of epoch {}", st.batch_in_epoch, plan.epoch);
  StepBatch b = make_step_batch(ctx, plan, begin, end);
  ++st.batch_in_epoch;
  st.tokens += b.tokens;
  if (b.targets == 0) return;
  const float lr = step_lr(ctx, st);
  const parallel::StepStats stats =
      ctx.dist.executor ? distributed_step(ctx, st, b, lr) : local_step(ctx, st, b, lr);
  ++st.step;
  ++st.batches;
  st.loss_sum += stats.loss;
  st.step_loss = stats.loss;
  emit_step(ctx, st, plan.stage, stats, lr);
  maybe_fault(ctx, "nan_weights", st.step, ctx.gpt.params());
  // The loss and the norm are the global batch's on every rank (summed over stages and
  // replicas), so every rank throws here or none does.
  const std::string where = fmt::format("step {} (epoch {}, stage {}, batch {})", st.step, st.epoch, plan.stage,
                                        st.batch_in_epoch);
  const bool loss_ok = std::isfinite(stats.loss), grad_ok = std::isfinite(stats.grad_norm);
  if (loss_ok && grad_ok) {
    st.skipped_in_a_row = 0;
    return;
  }
  std::string what = loss_ok ? fmt::format("the gradient norm of {} is {} (loss {}, learning rate {})", where,
                                           unsigned_nan(stats.grad_norm), stats.loss, lr)
                             : fmt::format("the loss of {} is {} at learning rate {}", where, unsigned_nan(stats.loss),
                                           lr);
  if (grad_ok) throw TrainingDiverged(what);  // a finite gradient was applied: nothing to skip
  what += "; the step was not applied";
  if (++st.skipped_in_a_row > ctx.config.skip_nonfinite_steps)
    throw TrainingDiverged(st.skipped_in_a_row == 1 ? what
                                                    : fmt::format("{} ({} such steps in a row)", what,
                                                                  st.skipped_in_a_row));
  spdlog::warn("{}: skipped ({} in a row, train.skip_nonfinite_steps {})", what, st.skipped_in_a_row,
               ctx.config.skip_nonfinite_steps);
}

void emit_step(const TrainContext& ctx, const TrainState& st, int stage, const parallel::StepStats& stats, float lr) {
  const double loss = stats.loss;
  const double tokens_per_s = st.tokens / st.epoch_seconds();
  if (st.step % ctx.config.log_every == 0) {
    Progress p;
    p.epoch = st.epoch;
    p.epochs = ctx.config.epochs;
    p.stage = stage;
    p.step = st.step;
    p.total_steps = ctx.total_steps;
    p.first_step = ctx.first_step;
    p.loss = loss;
    p.tokens_per_s = tokens_per_s;
    p.grad_norm = stats.grad_norm;
    p.elapsed_seconds = ctx.clock.seconds();
    spdlog::info("{}", format_progress(p));
  }
  if (!ctx.output) return;
  ctx.output->log_step({st.epoch, stage, st.step, loss, lr, tokens_per_s, stats.grad_norm});
  // Every step's exact loss (JSON keeps doubles round-trip exact): what a resumed run is
  // compared with; the learning rate it took and the gradient norm before clipping.
  append_jsonl(ctx.dir / "steps.jsonl", {{"step", st.step},
                                         {"epoch", st.epoch},
                                         {"stage", stage},
                                         {"loss", loss},
                                         {"lr", lr},
                                         {"grad_norm", stats.grad_norm}});
}

void emit_epoch_row(const TrainContext& ctx, const nlohmann::json& row) {
  if (ctx.output) ctx.output->log_epoch(row);
}

curriculum::EvalResult evaluate_split(const model::GPT2& gpt, DeviceStep* device, const curriculum::Tokenizer& tok,
                                      const std::vector<Sample>& split, const TrainConfig& c, int stage,
                                      const curriculum::EotClassifier* eot, Distributed* dist,
                                      Interruptible interruptible) {
  std::vector<Sample> head;  // a copy only when truncating
  if (c.eval_max_items > 0 && static_cast<int>(split.size()) > c.eval_max_items)
    head.assign(split.begin(), split.begin() + c.eval_max_items);
  const std::vector<Sample>& items = head.empty() ? split : head;
  parallel::Communicator* world = dist ? dist->world : nullptr;
  const bool stages = dist && dist->executor && dist->grid->pp() > 1;
  // The ranks that each evaluate a share, by world rank; with pipeline stages the first
  // stage of each replica speaks for it (every stage of a replica decodes its share).
  std::vector<int> speakers;
  int share = 0;
  if (stages) {
    for (int r = 0; r < dist->grid->dp(); ++r) speakers.push_back(dist->grid->rank_of(0, r));
    share = dist->grid->dp_index();
  } else {
    speakers = world ? parallel::all_ranks(*world) : std::vector<int>{0};
    share = world ? world->rank() : 0;
  }
  const int shares_count = static_cast<int>(speakers.size());
  // Thoughts are read through the host model's LM head (up to date: synced; with
  // stages, stage 0 holds wte and speaks for its replica).
  curriculum::ThoughtDecoder decode_thought;
  if (c.eval_thought_tokens > 0 && c.curriculum.feeds_back() && (!stages || dist->grid->first_stage()))
    decode_thought = curriculum::top_thought_tokens(gpt, tok, c.eval_thought_tokens);
  const curriculum::EvalShard shard{share, shares_count};
  std::function<bool()> stop_requested;
  if (interruptible == Interruptible::by_stop_signal) stop_requested = [] { return StopSignals::received() != 0; };
  curriculum::EvalResult mine;
  if (stages) {  // a batch in flight on every stage of the replica
    auto through_stages = [&](const std::vector<std::vector<const curriculum::BuiltSample*>>& batches,
                              const curriculum::GenerateOptions& options) {
      return generate_through_stages(gpt, dist->grid->pipeline(), dist->partition, batches, tok, options);
    };
    mine = curriculum::evaluate(through_stages, tok, items, c.curriculum, stage, c.eval_batch_size, c.max_new_tokens,
                                eot, shard, decode_thought, stop_requested);
  } else {
    std::unique_ptr<model::Decoder> decoder = device ? device->decoder() : std::make_unique<model::CpuDecoder>(gpt);
    mine = curriculum::evaluate(*decoder, tok, items, c.curriculum, stage, c.eval_batch_size, c.max_new_tokens, eot,
                                shard, decode_thought, stop_requested);
  }
  if (!world || world->size() == 1) return mine;
  if (stop_requested) {  // one share interrupted: the evaluation is, on every rank
    int64_t interrupted = mine.interrupted ? 1 : 0;
    world->all_reduce_sum(&interrupted, 1);
    if (interrupted > 0) {
      curriculum::EvalResult none;
      none.interrupted = true;
      return none;
    }
  }
  return join_eval_shares(*world, speakers, std::move(mine));
}

curriculum::EvalResult join_eval_shares(parallel::Communicator& world, const std::vector<int>& speakers,
                                        curriculum::EvalResult mine) {
  // Each share to every rank (a few hundred bytes per item), then joined.
  const bool speaks = std::find(speakers.begin(), speakers.end(), world.rank()) != speakers.end();
  const std::vector<std::string> texts =
      parallel::gather_strings_to_all(world, speakers, speaks ? curriculum::eval_result_to_json(mine) : "");
  std::vector<curriculum::EvalResult> shares;
  for (const std::string& text : texts) shares.push_back(curriculum::eval_result_from_json(text));
  return curriculum::merge_eval_shards(shares);
}

bool out_of_time(const TrainContext& ctx, const TrainState& st) {
  const double limit = ctx.config.max_minutes * 60;
  if (limit <= 0) return false;
  double stop = ctx.writer && st.training_seconds(ctx) + st.epoch_seconds() > limit ? 1.0 : 0.0;
  if (ctx.world && ctx.world->size() > 1) ctx.world->all_reduce_sum(&stop, 1);  // only rank 0's clock counts
  return stop > 0;
}

void report_divergence(const TrainContext& ctx, const TrainState& st, const std::string& why,
                       const std::string& last_checkpoint) {
  spdlog::error("training diverged: {}. Stopped without saving this state; {}. A lower train.lr, train.grad_clip or "
                "train.warmup_steps may help (--resume auto continues from that checkpoint with them)", why,
                last_checkpoint.empty() ? "no checkpoint had been saved" : "the last checkpoint is " + last_checkpoint);
  if (!ctx.writer) return;
  nlohmann::json j = {{"why", why}, {"step", st.step}, {"epoch", st.epoch}, {"batch_in_epoch", st.batch_in_epoch}};
  j["last_checkpoint"] = last_checkpoint.empty() ? nlohmann::json(nullptr) : nlohmann::json(last_checkpoint);
  // JSON has no NaN or infinity: such a loss is written as text.
  j["loss"] = std::isfinite(st.step_loss) ? nlohmann::json(st.step_loss)
                                          : nlohmann::json(fmt::format("{}", unsigned_nan(st.step_loss)));
  write_file_atomic((ctx.dir / kDivergedFile).string(), j.dump(1) + "\n");
}

int agreed_stop_signal(const TrainContext& ctx) {
  const int mine = StopSignals::received();
  if (!ctx.world || ctx.world->size() == 1) return mine;
  for (const int64_t signal : parallel::gather_to_all(*ctx.world, mine))
    if (signal != 0) return static_cast<int>(signal);
  return 0;
}

void sync_host(TrainContext& ctx) {
  if (ctx.device) ctx.device->sync_to_host(ctx.gpt, ctx.opt);
}

void export_run_model(const TrainContext& ctx, const std::filesystem::path& out_dir) {
  if (ctx.dist.executor)
    ctx.dist.export_model(out_dir.string(), ctx.gpt);
  else if (ctx.writer)
    model::export_hf_gpt2(out_dir.string(), ctx.mc, ctx.gpt.params());
  const auto* word = dynamic_cast<const curriculum::WordTokenizer*>(&ctx.tok);
  if (word && ctx.writer) word->save((out_dir / kWordVocabularyFile).string());
  if (ctx.world && ctx.world->size() > 1) ctx.world->barrier();  // the other ranks wait while rank 0 writes
}

void export_final_model(const TrainContext& ctx) {
  const fs::path dest = ctx.dir / "model", tmp = ctx.dir / "model.tmp";
  if (ctx.writer) fs::remove_all(tmp);
  export_run_model(ctx, tmp);
  if (ctx.writer) {
    fs::remove_all(dest);
    fs::rename(tmp, dest);
    sync_dir(ctx.dir.string());
  }
  if (ctx.world && ctx.world->size() > 1) ctx.world->barrier();  // model/ is in place for every rank
}

namespace {

// eval.keep_best: the model just evaluated is the best so far. Exported next to the run
// as best_model.tmp, then moved over best_model, so that a run killed meanwhile leaves
// the previous best whole. Collective.
void keep_best_model(TrainContext& ctx, TrainState& st, int epoch, int stage, double accuracy) {
  const fs::path dest = ctx.dir / kBestModelDir, tmp = ctx.dir / (std::string(kBestModelDir) + ".tmp");
  if (ctx.writer) fs::remove_all(tmp);
  export_run_model(ctx, tmp);
  st.best = {accuracy, epoch, stage, st.step};
  if (!ctx.writer) return;
  if (ctx.eot) ctx.eot->save((tmp / "eot_classifier.txt").string());
  const nlohmann::json j = {{"valid_accuracy", accuracy}, {"epoch", epoch}, {"stage", stage}, {"step", st.step}};
  write_file_atomic((tmp / kBestModelFile).string(), j.dump(1) + "\n");
  fs::remove_all(dest);
  fs::rename(tmp, dest);
  spdlog::info("epoch {} stage {}: the best {} accuracy so far ({:.3f}); its model is in {}", epoch, stage,
               ctx.data.valid_name, accuracy, dest.string());
}

}  // namespace

void finish_epoch(TrainContext& ctx, TrainState& st, const EpochPlan& plan) {
  sync_host(ctx);  // the epoch-end checkpoint and the run outputs read the host model
  const TrainConfig& c = ctx.config;
  const int epoch = plan.epoch, stage = plan.stage;
  const double seconds = st.epoch_seconds();
  const double mean_loss = st.batches ? st.loss_sum / st.batches : 0.0;
  st.summary.epoch_losses.push_back(mean_loss);
  st.summary.final_loss = mean_loss;
  st.summary.final_stage = stage;
  nlohmann::json row = {{"epoch", epoch}, {"stage", stage}, {"step", st.step}, {"loss", mean_loss},
                        {"seconds", seconds}, {"tokens_per_s", st.tokens / seconds}};
  if (ctx.eot) {
    const curriculum::EotClassifier::Stats s = ctx.eot->take_stats();
    row["eot_bce"] = s.rows ? s.bce_sum / s.rows : 0.0;
    row["eot_stop_accuracy"] = s.rows ? static_cast<double>(s.correct) / s.rows : 0.0;
  }
  if (ctx.dist.executor) {
    // Measured bubble per rank (1 - busy / wall over the op lists) next to the
    // simulator's prediction for the same schedules; rank 0 logs all ranks. After a
    // resume it covers the steps since the resume.
    // The same for activation memory: the peak of the bytes allocated for activations
    // (runtime/memory_meter.h) against the simulator's per-micro-batch peak, which
    // leaves out the stage's workspace and scratch (docs/status.md).
    const int W = ctx.world->size(), r = ctx.world->rank();
    std::vector<double> stats(4 * W, 0.0);
    stats[r] = st.op_wall > 0 ? 1.0 - st.busy / st.op_wall : 0.0;
    stats[W + r] = st.op_wall > 0 ? st.simulated_bubble / st.op_wall : 0.0;
    stats[2 * W + r] = static_cast<double>(ActivationMeter::peak()) / (1 << 20);
    stats[3 * W + r] = st.simulated_peak_bytes / (1 << 20);
    ctx.world->all_reduce_sum(stats.data(), stats.size());
    std::string bubble, memory;
    for (int k = 0; k < W; ++k) {
      bubble += fmt::format(" rank {}: {:.3f} / {:.3f};", k, stats[k], stats[W + k]);
      memory += fmt::format(" rank {}: {:.2f} / {:.2f};", k, stats[2 * W + k], stats[3 * W + k]);
    }
    spdlog::info("epoch {} pipeline bubble, measured / simulated:{}", epoch, bubble);
    spdlog::info("epoch {} peak activation MiB, measured / simulated per micro-batch:{}", epoch, memory);
    auto part = [&](int i) { return std::vector<double>(stats.begin() + i * W, stats.begin() + (i + 1) * W); };
    row["bubble_measured"] = part(0);
    row["bubble_simulated"] = part(1);
    row["activation_mib_measured"] = part(2);
    row["activation_mib_simulated"] = part(3);
  } else {
    row["activation_mib_measured"] = static_cast<double>(ActivationMeter::peak()) / (1 << 20);
  }
  // Between epochs (what an epoch-end checkpoint saves): the next epoch, not started;
  // this one's evaluation and report to come (report_epoch).
  st.epoch = epoch + 1;
  st.batch_in_epoch = 0;
  st.loss_sum = st.tokens = 0;
  st.batches = 0;
  const bool last = epoch + 1 == c.epochs || st.out_of_time;
  const bool evaluate = !ctx.data.valid.empty() && ((c.eval_every > 0 && (epoch + 1) % c.eval_every == 0) || last);
  st.unreported = TrainState::UnreportedEpoch{epoch, stage, evaluate, last, std::move(row)};
}

bool report_epoch(TrainContext& ctx, TrainState& st) {
  COCONUT_CHECK(st.unreported.has_value(), "report_epoch: no finished epoch to report (internal error)");
  const TrainConfig& c = ctx.config;
  const TrainState::UnreportedEpoch& u = *st.unreported;
  const int epoch = u.epoch, stage = u.stage;
  // Every rank or replica evaluates a share of the batches (collective under mpirun);
  // rank 0 reports.
  curriculum::EvalResult r;
  if (u.evaluate) {
    const size_t n = ctx.data.valid.size(), items = c.eval_max_items > 0 ? std::min<size_t>(n, c.eval_max_items) : n;
    spdlog::info("epoch {} stage {}: evaluating {} items of {}", epoch, stage, items, ctx.data.valid_name);
    r = evaluate_split(ctx.gpt, ctx.device, ctx.tok, ctx.data.valid, c, stage, ctx.eot,
                       ctx.dist.executor ? &ctx.dist : nullptr, Interruptible::by_stop_signal);
    if (r.interrupted) {
      spdlog::warn("epoch {} stage {}: the evaluation was interrupted by a stop signal; the resumed run evaluates "
                   "this epoch again", epoch, stage);
      return false;
    }
  }
  // Every rank holds the merged result, so every rank takes the same branch.
  const curriculum::CurriculumConfig& cc = c.curriculum;
  const bool final_stage = cc.effective_stage(stage) == cc.effective_stage(cc.stage_of_epoch(c.epochs - 1));
  if (u.evaluate && c.eval_keep_best && final_stage && r.accuracy() > st.best.valid_accuracy)
    keep_best_model(ctx, st, epoch, stage, r.accuracy());
  nlohmann::json row = std::move(st.unreported->row);
  const bool last = u.last, evaluated = u.evaluate;
  st.unreported.reset();
  if (!ctx.writer) return true;
  const double mean_loss = row.at("loss").get<double>(), seconds = row.at("seconds").get<double>();
  if (evaluated) {
    row["valid_accuracy"] = r.accuracy();
    if (ctx.eot) {
      row["valid_mean_thoughts"] = r.mean_thoughts;
      spdlog::info("epoch {} stage {}: <eot> classifier: {:.2f} thoughts per item", epoch, stage, r.mean_thoughts);
    }
    st.summary.valid_accuracy = r.accuracy();
    spdlog::info("epoch {} stage {}: loss {:.4f}, {} accuracy {:.3f} ({}/{}), {:.1f}s", epoch, stage, mean_loss,
                 ctx.data.valid_name, r.accuracy(), r.correct, r.total, seconds);
    if (last) curriculum::write_eval_report((ctx.dir / "eval_valid.json").string(), r, ctx.data.valid_name);
  } else {
    spdlog::info("epoch {} stage {}: loss {:.4f}, {:.1f}s", epoch, stage, mean_loss, seconds);
  }
  emit_epoch_row(ctx, row);
  return true;
}

}  // namespace coconut::launcher
