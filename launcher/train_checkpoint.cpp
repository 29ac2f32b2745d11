// Saving a training run's state and resuming from it (see train_checkpoint.h).
#include "launcher/train_checkpoint.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "curriculum/word_tokenizer.h"
#include "launcher/run_output.h"  // kMetricsFile
#include "parallel/checkpoint_io.h"  // step_dir_name
#include "runtime/check.h"
#include "runtime/hash.h"

namespace coconut::launcher {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The keys whose values differ between two effective configurations (JSON), as
// "key: old -> new" ("-" where a key is not set, i.e. takes its default). Keys that a
// resume may change by design are left out: the checkpoint and parallel sections (another
// topology, another save policy), run.dir and run.threads.
std::vector<std::string> config_changes(const json& before, const json& now) {
  const json a = before.flatten(), b = now.flatten();
  auto dotted = [](const std::string& pointer) {  // "/train/lr" -> "train.lr"
    std::string key = pointer.substr(1);
    std::replace(key.begin(), key.end(), '/', '.');
    return key;
  };
  auto by_design = [](const std::string& key) {
    return key.rfind("checkpoint.", 0) == 0 || key.rfind("parallel.", 0) == 0 || key == "run.dir" ||
           key == "run.threads";
  };
  std::map<std::string, std::pair<std::string, std::string>> changed;
  for (const auto& [pointer, value] : a.items())
    if (!b.contains(pointer) || b.at(pointer) != value) changed[dotted(pointer)] = {value.dump(), "-"};
  for (const auto& [pointer, value] : b.items())
    if (!a.contains(pointer) || a.at(pointer) != value)
      changed[dotted(pointer)] = {a.contains(pointer) ? a.at(pointer).dump() : "-", value.dump()};
  std::vector<std::string> out;
  for (const auto& [key, values] : changed)
    if (!by_design(key)) out.push_back(fmt::format("{}: {} -> {}", key, values.first, values.second));
  return out;
}

// Rank 0's string on every rank.
std::string broadcast_string(parallel::Communicator* world, std::string s) {
  if (!world || world->size() == 1) return s;
  uint64_t n = s.size();
  world->broadcast_bytes(&n, sizeof n, 0);
  s.resize(n);
  if (n > 0) world->broadcast_bytes(s.data(), n, 0);
  return s;
}

std::string resolve_resume(const TrainConfig& c) {
  const std::string& r = c.checkpoint.resume;
  if (r == "never") return "";
  if (r == "auto") {
    const std::string root = checkpoint_root(c);
    const std::string dir = fs::is_directory(root) ? parallel::find_latest_checkpoint(root) : "";
    if (dir.empty()) spdlog::info("resume auto: no committed checkpoint under '{}': starting from the beginning", root);
    return dir;
  }
  return parallel::committed_checkpoint(r, "checkpoint.resume");  // a checkpoint, or a root holding some
}

// A number saved in the trainer state (NaN is stored as null by JSON).
double number(const json& j, const char* key) {
  const json& v = j.at(key);
  return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>();
}

// This rank's part of the run's state (see the top of train_checkpoint.h).
std::vector<parallel::StateSlice> state_slices(TrainContext& ctx) {
  const uint64_t n = ctx.gpt.num_params();
  std::vector<parallel::StateSlice> out;
  auto add = [&](const char* name, uint64_t global, uint64_t begin, uint64_t count, const float* data) {
    if (count > 0) out.push_back({name, global, begin, count, data});
  };
  if (ctx.dist.executor) {
    // Replicas hold the same weights: each writes only its ZeRO shard of its stage.
    parallel::ShardedAdamW& sh = ctx.dist.executor->optimizer();
    const uint64_t b = sh.shard_begin(), count = sh.shard_end() - sh.shard_begin();
    add("params", n, b, count, ctx.gpt.params() + b);
    add("adam.m", n, b, count, sh.m().data());
    add("adam.v", n, b, count, sh.v().data());
  } else {
    // One process: the whole buffer. Data-parallel GPUs: as the replicas above, each rank
    // its ZeRO-1 shard, the range of ctx.opt (sync_to_host put its moments there).
    const uint64_t b = ctx.opt.begin(), count = ctx.opt.end() - ctx.opt.begin();
    add("params", n, b, count, ctx.gpt.params() + b);
    add("adam.m", n, b, count, ctx.opt.m().data());
    add("adam.v", n, b, count, ctx.opt.v().data());
  }
  // Every rank holds the same <eot> classifier (launcher/train_loop.cpp): rank 0 writes it.
  if (ctx.eot && (!ctx.world || ctx.world->rank() == 0)) {
    const uint64_t e = ctx.eot->num_params();
    add("eot.params", e, 0, e, ctx.eot->params());
    add("eot.adam.m", e, 0, e, ctx.eot->optimizer().m().data());
    add("eot.adam.v", e, 0, e, ctx.eot->optimizer().v().data());
  }
  return out;
}

json trainer_state(const TrainContext& ctx, const TrainState& st) {
  const TrainConfig& c = ctx.config;
  const int64_t adam_step =
      ctx.dist.executor ? ctx.dist.executor->optimizer().step_count() : ctx.opt.step_count();
  json j = {{"format", 1},
            {"prev_stage", st.prev_stage},
            {"epoch_loss_sum", st.loss_sum},
            {"epoch_tokens", st.tokens},
            {"epoch_batches", st.batches},
            {"epoch_seconds", st.batch_in_epoch > 0 ? st.epoch_seconds() : 0.0},
            {"run_seconds", st.run_seconds(ctx)},
            {"training_seconds", st.training_seconds(ctx)},
            {"best", {{"valid_accuracy", st.best.valid_accuracy},
                      {"epoch", st.best.epoch},
                      {"stage", st.best.stage},
                      {"step", st.best.step}}},
            {"attempts", st.attempts()},
            {"epoch_losses", st.summary.epoch_losses},
            {"final_loss", st.summary.final_loss},
            {"valid_accuracy", st.summary.valid_accuracy},
            {"final_stage", st.summary.final_stage},
            {"adam_step", adam_step},
            {"seed", c.seed},
            {"batch_size", c.batch_size},
            {"config", json::parse(c.effective)},  // a resume names what it changes (config_changes)
            {"data_order_digest", st.epoch < c.epochs ? data_order_digest(ctx, st.epoch) : ""},
            {"model",
             {{"n_layer", ctx.mc.n_layer},
              {"n_head", ctx.mc.n_head},
              {"d_model", ctx.mc.d_model},
              {"vocab_size", ctx.mc.vocab_size},
              {"max_positions", ctx.mc.max_positions}}}};
  // The word vocabulary travels with the weights: without it an exported model's
  // embedding rows have no words (a BPE run's vocabulary is its data.bpe_dir).
  if (const auto* words = dynamic_cast<const curriculum::WordTokenizer*>(&ctx.tok))
    j["word_tokenizer"] = words->file_text();
  // train.max_minutes ended the run after the last finished epoch: the limit that did.
  if (st.out_of_time) j["out_of_time_limit"] = c.max_minutes;
  if (st.unreported) {  // stopped during its evaluation: the resumed run reports it first
    const TrainState::UnreportedEpoch& u = *st.unreported;
    j["unreported_epoch"] = {{"epoch", u.epoch}, {"stage", u.stage}, {"evaluate", u.evaluate}, {"last", u.last},
                             {"row", u.row}};
  }
  if (ctx.eot) {
    const curriculum::EotClassifier::Stats& s = ctx.eot->stats();
    j["eot_adam_step"] = ctx.eot->optimizer().step_count();
    j["eot_stats"] = {{"bce_sum", s.bce_sum}, {"rows", s.rows}, {"correct", s.correct}};
  }
  return j;
}

// Reads [begin, begin + count) of a tensor whose global size must be `global`.
void read_range(const std::string& dir, const parallel::Manifest& man, const std::string& name, uint64_t global,
                uint64_t begin, uint64_t count, float* out) {
  const parallel::TensorInfo& t = man.tensor(name);
  COCONUT_CHECK(t.global_size == global, "checkpoint '{}': tensor '{}' has {} elements, this run needs {}", dir, name,
                t.global_size, global);
  if (count > 0) parallel::read_tensor_range(dir, man, name, begin, count, out);
}

// Keeps the lines of a JSONL file for which keep(row) holds (written aside, then renamed).
template <class Keep>
void filter_jsonl(const fs::path& path, Keep keep) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  COCONUT_CHECK(in.good(), "cannot read '{}'", path.string());
  std::string kept, line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    json row;
    try {
      row = json::parse(line);
      if (keep(row)) kept += line + "\n";
    } catch (const json::exception& e) {
      COCONUT_FAIL("{}:{}: not a JSON row ({})", path.string(), number, e.what());
    }
  }
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kept;
    COCONUT_CHECK(out.good(), "cannot write '{}'", tmp.string());
  }
  fs::rename(tmp, path);
}

}  // namespace

std::string checkpoint_root(const TrainConfig& c) {
  return c.checkpoint.dir.empty() ? (fs::path(c.run_dir) / "checkpoints").string() : c.checkpoint.dir;
}

std::string model_digest(const model::GPT2Config& mc, const curriculum::Tokenizer& tok) {
  uint64_t h = fnv1a64(fmt::format("gpt2 n_layer={} n_head={} d_model={} vocab_size={} max_positions={}", mc.n_layer,
                                   mc.n_head, mc.d_model, mc.vocab_size, mc.max_positions));
  for (int id = 0; id < tok.vocab_size(); ++id) {
    const std::string t = tok.id_to_token(id);
    const uint64_t n = t.size();
    h = fnv1a64(&n, sizeof n, h);
    h = fnv1a64(t, h);
  }
  return hex_digest(h);
}

json checkpoint_trainer_state(const std::string& dir, const parallel::Manifest& m) {
  const json j = json::parse(m.meta.trainer_state, nullptr, /*allow_exceptions=*/false);
  COCONUT_CHECK(!j.is_discarded() && j.is_object(), "{}/manifest.pb: the trainer state is not a JSON object", dir);
  return j;
}

model::GPT2Config checkpoint_model_shape(const std::string& dir, const json& state) {
  const std::string where = dir + "/manifest.pb";
  COCONUT_CHECK(state.contains("model") && state["model"].is_object(),
                "{}: the trainer state has no \"model\" object (n_layer, n_head, d_model, vocab_size, "
                "max_positions), so the weights cannot be laid out",
                where);
  const json& mj = state["model"];
  auto field = [&](const char* key) {
    COCONUT_CHECK(mj.contains(key) && mj[key].is_number_integer() && mj[key].get<int64_t>() > 0 &&
                      mj[key].get<int64_t>() <= INT32_MAX,
                  "{}: trainer state model.{} must be a positive integer", where, key);
    return mj[key].get<int>();
  };
  model::GPT2Config mc;
  mc.n_layer = field("n_layer");
  mc.n_head = field("n_head");
  mc.d_model = field("d_model");
  mc.vocab_size = field("vocab_size");
  mc.max_positions = field("max_positions");
  mc.validate();
  return mc;
}

std::string find_run_checkpoint(const TrainConfig& c, const std::string& which) {
  const std::string root = checkpoint_root(c);
  if (which == "latest") {
    const std::string dir = parallel::find_latest_checkpoint(root);
    COCONUT_CHECK(!dir.empty(), "--checkpoint latest: no committed checkpoint under '{}' (the run saves them with "
                  "checkpoint.every_steps or checkpoint.at_epoch_end, and on a stop signal)", root);
    return dir;
  }
  const bool step = !which.empty() && which.size() <= 12 &&
                    std::all_of(which.begin(), which.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  if (!step) return parallel::committed_checkpoint(which, "--checkpoint");
  const std::string dir = (fs::path(root) / parallel::ckpt_io::step_dir_name(std::stoll(which))).string();
  COCONUT_CHECK(fs::is_regular_file(fs::path(dir) / "manifest.pb"), "--checkpoint {}: no committed checkpoint '{}' "
                "(retention keeps checkpoint.keep_last of them and the milestones: `coconut ckpt inspect {}` "
                "names the newest)", which, dir, root);
  return dir;
}

CheckpointWeights read_checkpoint_weights(const std::string& dir, const model::GPT2Config& mc,
                                          const curriculum::Tokenizer& tok, float* params,
                                          curriculum::EotClassifier* eot) {
  const parallel::Manifest man = parallel::read_manifest(dir);
  parallel::check_model_digest(dir, man, model_digest(mc, tok));
  const json state = checkpoint_trainer_state(dir, man);
  COCONUT_CHECK(state.contains("prev_stage") && state["prev_stage"].is_number_integer(),
                "{}/manifest.pb: the trainer state has no integer prev_stage", dir);
  const uint64_t n = model::ParamLayout(mc).total();
  read_range(dir, man, "params", n, 0, n, params);
  if (eot) {
    COCONUT_CHECK(man.has_tensor("eot.params"), "checkpoint '{}' has no <eot> classifier, the run trains one", dir);
    read_range(dir, man, "eot.params", eot->num_params(), 0, eot->num_params(), eot->params());
  }
  // prev_stage is the stage of the last epoch started, which its weights trained at
  // (-1 only before the first step, which no checkpoint is taken at).
  return {man.meta.step, std::max(0, state["prev_stage"].get<int>())};
}

std::string find_resume_checkpoint(const TrainConfig& c, parallel::Communicator* world) {
  std::string dir;
  if (!world || world->rank() == 0) dir = resolve_resume(c);
  return broadcast_string(world, dir);
}

TrainState restore_checkpoint(TrainContext& ctx, const std::string& dir) {
  const TrainConfig& c = ctx.config;
  const parallel::Manifest man = parallel::read_manifest(dir);
  const parallel::CheckpointMeta& meta = man.meta;
  const std::string digest = model_digest(ctx.mc, ctx.tok);
  COCONUT_CHECK(meta.model_digest == digest,
                "checkpoint '{}' holds another model (model digest {}, this run's {}): the model.* keys, the data "
                "and the tokenizer must be those of the run that wrote it", dir, meta.model_digest, digest);
  TrainState st;
  st.epoch = meta.epoch;
  st.batch_in_epoch = meta.batch_in_epoch;
  st.step = meta.step;
  int64_t adam_step = 0, eot_adam_step = 0;
  curriculum::EotClassifier::Stats eot_stats;
  try {
    const json j = json::parse(meta.trainer_state);
    st.prev_stage = j.at("prev_stage").get<int>();
    st.out_of_time = j.contains("out_of_time_limit");
    st.out_of_time_limit = j.value("out_of_time_limit", 0.0);
    st.loss_sum = number(j, "epoch_loss_sum");
    st.tokens = number(j, "epoch_tokens");
    st.batches = j.at("epoch_batches").get<int64_t>();
    st.seconds_before = number(j, "epoch_seconds");
    // Checkpoints written before session 14 have no wall time of their own.
    st.earlier_seconds = j.contains("run_seconds") ? number(j, "run_seconds") : 0.0;
    st.earlier_attempts = j.value("attempts", 1);
    // ... nor, before session 20, a training time (train.max_minutes then restarted).
    st.earlier_training_seconds = j.contains("training_seconds") ? number(j, "training_seconds") : 0.0;
    if (j.contains("best")) {  // eval.keep_best's record (RUN_DIR/best_model holds that model)
      const json& b = j.at("best");
      st.best = {number(b, "valid_accuracy"), b.at("epoch").get<int>(), b.at("stage").get<int>(),
                 b.at("step").get<int64_t>()};
    }
    // Checkpoints written before session 23 hold no configuration.
    if (j.contains("config") && ctx.writer) {
      const std::vector<std::string> changes = config_changes(j.at("config"), json::parse(c.effective));
      if (!changes.empty())
        spdlog::warn("resuming with a configuration that differs from the checkpoint's (the steps up to it used the "
                     "checkpoint's): {}", fmt::join(changes, "; "));
    }
    if (j.contains("unreported_epoch")) {
      const json& u = j.at("unreported_epoch");
      st.unreported = TrainState::UnreportedEpoch{u.at("epoch").get<int>(), u.at("stage").get<int>(),
                                                  u.at("evaluate").get<bool>(), u.at("last").get<bool>(), u.at("row")};
    }
    st.summary.epoch_losses = j.at("epoch_losses").get<std::vector<double>>();
    st.summary.final_loss = number(j, "final_loss");
    st.summary.valid_accuracy = number(j, "valid_accuracy");
    st.summary.final_stage = j.at("final_stage").get<int>();
    adam_step = j.at("adam_step").get<int64_t>();
    // Inside an epoch, its batches must be cut the same way from the same order.
    if (st.batch_in_epoch > 0)
      COCONUT_CHECK(j.at("batch_size").get<int>() == c.batch_size,
                    "checkpoint '{}' stopped {} batches into epoch {} with train.batch_size {}, this run has {}: "
                    "resume with the same batch size", dir, st.batch_in_epoch, st.epoch, j.at("batch_size").get<int>(),
                    c.batch_size);
    if (st.epoch < c.epochs)
      COCONUT_CHECK(j.at("data_order_digest").get<std::string>() == data_order_digest(ctx, st.epoch),
                    "checkpoint '{}': epoch {} would see other data or another order than the run that wrote it "
                    "(training data or run.seed changed)", dir, st.epoch);
    if (ctx.eot) {
      COCONUT_CHECK(j.contains("eot_stats"), "checkpoint '{}' has no <eot> classifier, this run trains one "
                    "(curriculum.eot_classifier)", dir);
      eot_adam_step = j.at("eot_adam_step").get<int64_t>();
      const json& s = j.at("eot_stats");
      eot_stats = {number(s, "bce_sum"), s.at("rows").get<int64_t>(), s.at("correct").get<int64_t>()};
    }
  } catch (const json::exception& e) {
    COCONUT_FAIL("checkpoint '{}': malformed trainer state in manifest.pb ({})", dir, e.what());
  }

  // Weights: the slices this rank holds (all of them but on pipeline stages). Moments:
  // this rank's shard.
  const uint64_t n = ctx.gpt.num_params();
  for (const parallel::ParamSlice& h : ctx.dist.held_slices(ctx.gpt))
    read_range(dir, man, "params", n, h.begin, h.size(), ctx.gpt.params() + h.begin);
  if (ctx.dist.executor) {
    parallel::ShardedAdamW& sh = ctx.dist.executor->optimizer();
    const uint64_t b = sh.shard_begin(), count = sh.shard_end() - sh.shard_begin();
    COCONUT_CHECK(sh.m().size() == count && sh.v().size() == count, "optimizer shard of {} elements holds {} moments",
                  count, sh.m().size());
    read_range(dir, man, "adam.m", n, b, count, sh.m().data());
    read_range(dir, man, "adam.v", n, b, count, sh.v().data());
    sh.set_step_count(adam_step);
  } else {
    // The device step's shard (all of it in one process); load_from_host takes it from here.
    const uint64_t b = ctx.opt.begin(), count = ctx.opt.end() - ctx.opt.begin();
    read_range(dir, man, "adam.m", n, b, count, ctx.opt.m().data());
    read_range(dir, man, "adam.v", n, b, count, ctx.opt.v().data());
    ctx.opt.set_step_count(adam_step);
  }
  if (ctx.eot) {
    const uint64_t e = ctx.eot->num_params();
    read_range(dir, man, "eot.params", e, 0, e, ctx.eot->params());
    read_range(dir, man, "eot.adam.m", e, 0, e, ctx.eot->optimizer().m().data());
    read_range(dir, man, "eot.adam.v", e, 0, e, ctx.eot->optimizer().v().data());
    ctx.eot->optimizer().set_step_count(eot_adam_step);
    ctx.eot->set_stats(eot_stats);
  } else if (man.has_tensor("eot.params")) {
    spdlog::warn("checkpoint '{}' holds an <eot> classifier; this run does not train one and leaves it", dir);
  }
  spdlog::info("resumed from {}: epoch {} (stage {}), {} batches into it, step {}; written by pp {} x dp {}", dir,
               st.epoch, meta.stage, st.batch_in_epoch, st.step, meta.pp, meta.dp);
  st.epoch_timer.start();
  return st;
}

void trim_run_logs(const fs::path& run_dir, const TrainState& st) {
  // Rows without the key (written by other tools) are kept.
  const int first_unreported = st.unreported ? st.unreported->epoch : st.epoch;
  filter_jsonl(run_dir / kMetricsFile, [&](const json& row) { return row.value("epoch", -1) < first_unreported; });
  filter_jsonl(run_dir / "steps.jsonl", [&](const json& row) { return row.value("step", int64_t{-1}) <= st.step; });
}

RunCheckpointer::RunCheckpointer(TrainContext& ctx) : ctx_(ctx), root_(checkpoint_root(ctx.config)) {
  const CheckpointConfig& k = ctx.config.checkpoint;
  if (!enabled() && k.stop_after_steps == 0) return;
  COCONUT_CHECK(ctx.world != nullptr, "checkpoints need a communicator (run through `coconut train`)");
  if (k.async) async_ = std::make_unique<parallel::AsyncCheckpointer>(*ctx.world, root_, parallel::RetentionPolicy{k.keep_last});
}

RunCheckpointer::~RunCheckpointer() = default;

bool RunCheckpointer::enabled() const {
  return ctx_.config.checkpoint.every_steps > 0 || ctx_.config.checkpoint.at_epoch_end;
}

bool RunCheckpointer::step_due(const TrainState& st) const {
  const int64_t every = ctx_.config.checkpoint.every_steps;
  return every > 0 && st.step % every == 0;
}

bool RunCheckpointer::stage_ends(int epoch) const {
  const TrainConfig& c = ctx_.config;
  return epoch + 1 >= c.epochs || c.curriculum.stage_of_epoch(epoch) != c.curriculum.stage_of_epoch(epoch + 1);
}

bool RunCheckpointer::epoch_end_due(int epoch) const {
  return enabled() && (ctx_.config.checkpoint.at_epoch_end || stage_ends(epoch));
}

void RunCheckpointer::save(const TrainState& st, bool milestone) {
  // The same step again: skipped, unless its epoch has been reported since (the save
  // of a stop during that epoch's evaluation, then the epoch-end save after it).
  if (st.step == last_saved_step_ && st.unreported.has_value() == last_saved_unreported_) return;
  sync_host(ctx_);  // the shards are written from the host model and optimizer
  const TrainConfig& c = ctx_.config;
  parallel::CheckpointMeta meta;
  meta.step = st.step;
  meta.epoch = st.epoch;
  meta.stage = c.curriculum.stage_of_epoch(st.epoch);
  meta.batch_in_epoch = st.batch_in_epoch;
  meta.config_digest = c.digest;
  meta.model_digest = model_digest(ctx_.mc, ctx_.tok);
  meta.pp = ctx_.dist.grid ? ctx_.dist.grid->pp() : 1;
  meta.dp = ctx_.dist.grid ? ctx_.dist.grid->dp() : 1;
  meta.trainer_state = trainer_state(ctx_, st).dump();
  meta.milestone = milestone;
  const std::vector<parallel::StateSlice> slices = state_slices(ctx_);
  // A state with a NaN or an infinity is not saved: it would become the run's latest
  // checkpoint (retention may then delete the good ones) and resume into NaNs.
  double bad_ranks = 0;
  for (const parallel::StateSlice& s : slices)
    if (!model::all_finite(s.data, s.count)) bad_ranks = 1;
  if (ctx_.world && ctx_.world->size() > 1) ctx_.world->all_reduce_sum(&bad_ranks, 1);
  if (bad_ranks > 0)
    throw TrainingDiverged(fmt::format("the state after step {} (epoch {}, batch {}) holds a NaN or an infinity "
                                       "(on {} rank(s)), though the step's loss was {}", st.step, st.epoch,
                                       st.batch_in_epoch, bad_ranks, st.step_loss));
  Timer timer;
  if (async_) {
    async_->snapshot(meta, slices);
    spdlog::info("checkpoint: step {} (epoch {}, batch {}) snapshot in {:.3f}s, writing in the background", st.step,
                 st.epoch, st.batch_in_epoch, async_->blocking_seconds());
  } else {
    last_dir_ = parallel::save_checkpoint(*ctx_.world, root_, meta, slices,
                                          parallel::RetentionPolicy{c.checkpoint.keep_last});
    spdlog::info("checkpoint: step {} (epoch {}, batch {}){} saved to {} in {:.2f}s", st.step, st.epoch,
                 st.batch_in_epoch, milestone ? ", milestone," : "", last_dir_, timer.seconds());
  }
  last_saved_step_ = st.step;
  last_saved_unreported_ = st.unreported.has_value();
}

void RunCheckpointer::note_resumed(const std::string& dir, const TrainState& st) {
  fs::path p = fs::path(dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // "…/step-00000012/"
  std::error_code ec;
  if (fs::equivalent(p.parent_path(), root_, ec)) {
    last_saved_step_ = st.step;
    last_saved_unreported_ = st.unreported.has_value();
    last_dir_ = dir;
  }
}

std::string RunCheckpointer::finish() {
  if (async_) {
    const std::string dir = async_->complete();
    if (!dir.empty()) {
      last_dir_ = dir;
      spdlog::info("checkpoint: committed {}", dir);
    }
  }
  return last_dir_;
}

}  // namespace coconut::launcher
