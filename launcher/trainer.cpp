// A training run from start to end (see trainer.h): data, tokenizer, model, the
// optional pipeline executor, a resume, the epoch loop (its pieces are in
// train_loop.h, its checkpoints in train_checkpoint.h), the final test and export. The
// data order, the uniform_prob stage draws and the initial weights all come from
// counter-based generators keyed by the seed, so a run is reproducible bit for bit on
// the same machine and threads, also across a resume.
#include "launcher/trainer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "curriculum/bpe_tokenizer.h"
#include "curriculum/eot_classifier.h"
#include "curriculum/evaluation.h"
#include "curriculum/prontoqa_generator.h"
#include "curriculum/prosqa_generator.h"
#include "curriculum/running_sum_generator.h"
#include "curriculum/word_tokenizer.h"
#include "launcher/commands.h"
#include "launcher/sequence_lengths.h"
#include "launcher/train_checkpoint.h"
#include "launcher/train_loop.h"
#include "model/adamw.h"
#include "model/hf_weights.h"
#include "model/multipass.h"
#include "parallel/executor.h"
#include "parallel/grid.h"
#include "parallel/partition.h"
#include "runtime/check.h"
#include "runtime/files.h"
#include "runtime/stop_signals.h"
#include "runtime/threads.h"
#include "runtime/timer.h"
#include "runtime/zero_pages.h"

namespace coconut::launcher {

namespace fs = std::filesystem;
using curriculum::Sample;

RunData load_run_data(const DataConfig& d) {
  RunData r;
  auto generate = [&](uint64_t seed, int count) {
    if (d.kind == "prontoqa") return curriculum::generate_prontoqa(seed, count, {.hops = d.hops});
    if (d.kind == "running_sum") return curriculum::generate_running_sum(seed, count, {.digits = d.digits});
    return curriculum::generate_prosqa(seed, count);
  };
  // Generated splits use distinct seeds: no item is shared between them.
  r.train = d.train_file.empty() ? generate(d.generate_seed, d.generate_train) : curriculum::load_dataset_json(d.train_file);
  if (!d.valid_file.empty()) {
    r.valid = curriculum::load_dataset_json(d.valid_file);
    r.valid_name = fs::path(d.valid_file).filename().string();
  } else if (d.kind != "file") {
    r.valid = generate(d.generate_seed + 1, d.generate_valid);
    r.valid_name = "generated-valid";
  }
  if (!d.test_file.empty()) {
    r.test = curriculum::load_dataset_json(d.test_file);
    r.test_name = fs::path(d.test_file).filename().string();
  } else if (d.kind != "file" && d.generate_test > 0) {
    r.test = generate(d.generate_seed + 2, d.generate_test);
    r.test_name = "generated-test";
  }
  COCONUT_CHECK(!r.train.empty(), "the training set is empty");
  return r;
}

std::unique_ptr<curriculum::Tokenizer> make_tokenizer(const DataConfig& d, const RunData& data,
                                                      const std::string& init_from) {
  if (d.tokenizer == "bpe") return curriculum::BpeTokenizer::from_dir(d.bpe_dir);
  std::vector<std::string> texts = {"\n", "### "};
  for (const auto* split : {&data.train, &data.valid, &data.test})
    for (const Sample& s : *split) {
      texts.push_back(s.question);
      texts.insert(texts.end(), s.steps.begin(), s.steps.end());
      texts.push_back(s.answer);
    }
  if (init_from.empty())
    return std::make_unique<curriculum::WordTokenizer>(curriculum::WordTokenizer::build(texts));
  const std::string base_file = (fs::path(init_from) / kWordVocabularyFile).string();
  const auto base = curriculum::WordTokenizer::load(base_file);
  const int rows = model::read_hf_config((fs::path(init_from) / "config.json").string()).vocab_size;
  COCONUT_CHECK(base.vocab_size() == rows,
                "'{}' has {} words but the model's embedding has {} rows: they are not from the same run", base_file,
                base.vocab_size(), rows);
  return std::make_unique<curriculum::WordTokenizer>(curriculum::WordTokenizer::extend(base, texts));
}

namespace {

// Every training micro-batch and evaluation prompt of the run against the model's
// positions (launcher/sequence_lengths.h), before any weight is made: a sequence that
// does not fit stops the run now (every rank alike, exit code 2), not when its epoch or
// first evaluation comes.
void check_sequence_lengths(const TrainConfig& c, const RunData& data,
                            const std::vector<curriculum::TokenizedSample>& train_tok, const curriculum::Tokenizer& tok,
                            int max_positions) {
  const SequenceLengths l = measure_sequence_lengths(
      c, train_tok, {{data.valid_name, &data.valid}, {data.test_name, &data.test}}, tok, 0, max_positions);
  spdlog::info("{}", describe_sequence_lengths(l, max_positions, MicroBatches::exact));
  const std::string problem = sequence_length_problem(l, max_positions);
  if (!problem.empty()) throw UsageError(problem);
  if (l.prompts_cut > 0)
    spdlog::warn("{} evaluation prompts (items x stages) leave fewer than eval.max_new_tokens {} positions of "
                 "model.max_positions {}: their generation stops at the last position",
                 l.prompts_cut, c.max_new_tokens, max_positions);
}

// Logs the AdamW moments each rank holds, so that a run shows its optimizer state
// sharded (the executor's ZeRO-1 shard plus the host optimizer's range; rank 0 logs
// every rank's count; collective under mpirun).
void log_optimizer_moments(const Distributed& dist, const model::AdamW& opt, size_t num_params,
                           parallel::Communicator* world) {
  size_t held = opt.end() - opt.begin();
  if (dist.executor) held += dist.executor->optimizer().shard_end() - dist.executor->optimizer().shard_begin();
  const auto mib = [](double elements) { return 2 * elements * sizeof(float) / double(1 << 20); };
  if (!world || world->size() == 1) {
    spdlog::info("optimizer: AdamW moments of {} of the {} parameters ({:.1f} MiB)", held, num_params, mib(held));
    return;
  }
  std::vector<double> counts(size_t(world->size()), 0.0);
  counts[size_t(world->rank())] = double(held);
  world->all_reduce_sum(counts.data(), counts.size());
  std::string per_rank;
  for (size_t r = 0; r < counts.size(); ++r)
    per_rank += fmt::format(" rank {}: {} ({:.1f} MiB);", r, int64_t(counts[r]), mib(counts[r]));
  spdlog::info("optimizer: AdamW moments held per rank, of {} parameters:{}", num_params, per_rank);
}

// The tensors of a Hugging Face GPT-2 file of shape `file_config` into the slices in
// `held` only (a pipeline rank's), one tensor at a time. A file with a smaller vocabulary
// fills the first rows of wte (the run's added tokens keep theirs).
void import_held_weights(model::GPT2& gpt, const std::string& safetensors_path, const model::GPT2Config& file_config,
                         const std::vector<parallel::ParamSlice>& held) {
  model::import_hf_gpt2(safetensors_path, file_config, [&](const model::TensorSpec& p, const float* data) {
    const model::TensorSpec& t = gpt.layout().find(p.name);  // wte: the pretrained rows come first
    const size_t count = std::min(p.numel, t.numel);
    for (const parallel::ParamSlice& h : held) {  // [t.offset, t.offset + count) within h
      const size_t b = std::max(h.begin, t.offset), e = std::min(h.end, t.offset + count);
      if (b < e) std::copy(data + (b - t.offset), data + (e - t.offset), gpt.params() + b);
    }
  });
}

// The model's weights: fresh from run.seed, then the pretrained tensors of
// model.init_from (the added special tokens keep their fresh rows). Only the slices in
// `held` are written (a pipeline rank's; each element as the whole model's init sets it).
void init_model_weights(model::GPT2& gpt, const TrainConfig& c, int pretrained_vocab,
                        const std::vector<parallel::ParamSlice>& held) {
  for (const parallel::ParamSlice& h : held) gpt.init_weights(c.seed, h.begin, h.end);
  if (c.init_from.empty()) return;
  model::GPT2Config pc = gpt.config();
  pc.vocab_size = pretrained_vocab;
  import_held_weights(gpt, c.init_from + "/model.safetensors", pc, held);
}

// Logs the parameters each rank holds and the memory its parameter and gradient
// buffers take, measured (resident pages, runtime/zero_pages.h): a pipeline rank's
// should be its stages' share of the model. Collective under mpirun; rank 0 logs.
void log_parameter_memory(const model::GPT2& gpt, const Distributed& dist, parallel::Communicator* world) {
  size_t held = 0;
  for (const parallel::ParamSlice& h : dist.held_slices(gpt)) held += h.size();
  const size_t bytes = gpt.num_params() * sizeof(float);
  const int W = world ? world->size() : 1, r = world ? world->rank() : 0;
  std::vector<double> v(3 * size_t(W), 0.0);
  v[r] = double(held);
  v[W + r] = double(resident_bytes(gpt.params(), bytes)) / (1 << 20);
  v[2 * W + r] = double(resident_bytes(gpt.grads(), bytes)) / (1 << 20);
  if (W > 1) world->all_reduce_sum(v.data(), v.size());
  std::string per_rank;
  for (int k = 0; k < W; ++k)
    per_rank += fmt::format(" rank {}: {} (params {:.3f} MiB, grads {:.3f} MiB);", k, int64_t(v[k]), v[W + k],
                            v[2 * W + k]);
  spdlog::info("parameters held per rank, of {} ({:.3f} MiB), with the resident memory of their buffers:{}",
               gpt.num_params(), bytes / double(1 << 20), per_rank);
}

}  // namespace

TrainSummary run_training(const TrainConfig& given, parallel::Communicator* world, int local_rank, int local_size) {
  Timer attempt;  // this process's wall clock (TrainContext::attempt), from before the data loads
  const bool distributed = world && world->size() > 1;
  // Data-parallel replicas of this run (1 in one process; the preflight checked the grid).
  const int job_ranks = distributed ? world->size() : 1;
  const int dp = job_replicas(given, job_ranks);
  COCONUT_CHECK(dp > 0, "{} ranks cannot form a grid of {} pipeline stages: the number of ranks (mpirun -np / srun "
                "-n) must be a multiple of the pipeline stages", job_ranks, given.pp);
  // train.micro_batch_size left out: chosen for this run's topology.
  TrainConfig resolved = given;
  resolved.micro_batch_size = job_micro_batch_size(given, job_ranks);
  const TrainConfig& c = resolved;
  const bool writer = !world || world->rank() == 0;  // rank 0 evaluates and writes the run directory
  set_num_threads(c.threads);
  const fs::path dir = c.run_dir;
  if (writer) fs::create_directories(dir);
  COCONUT_CHECK(!writer || fs::is_directory(dir), "cannot create the run directory '{}'", dir.string());
  // One training per run directory (kRunLockFile), before anything in it is written; every
  // rank learns whether rank 0 got the lock, so that all stop together when it did not.
  FileLock run_lock;
  std::string holder;
  double refused = writer && !run_lock.try_lock((dir / kRunLockFile).string(), &holder) ? 1 : 0;
  if (distributed) world->all_reduce_sum(&refused, 1);
  COCONUT_CHECK(refused == 0, "run directory '{}' is in use by another coconut train ({}{}); wait for it to end or "
                "choose another run.dir", dir.string(), writer ? holder : "see rank 0's message",
                writer ? fmt::format(", {}", (dir / kRunLockFile).string()) : std::string());
  if (writer) {
    // The effective configuration (file + --set overrides), so that eval, probe and a
    // resume see exactly what was trained.
    std::ofstream out(dir / "config.yaml");
    out << "# effective configuration of this run (from " << c.source << ", overrides applied)\n" << c.effective << "\n";
    COCONUT_CHECK(out.good(), "cannot write '{}'", (dir / "config.yaml").string());
  }
  // A resumed run continues metrics.jsonl and steps.jsonl (trimmed to the checkpoint
  // below); a fresh run starts them anew.
  const std::string resume_dir = find_resume_checkpoint(c, world);
  if (writer && resume_dir.empty()) {
    fs::remove(dir / "steps.jsonl");
    fs::remove_all(dir / kBestModelDir);  // an earlier run's (eval.keep_best)
  }
  // metrics.jsonl and the TensorBoard event files (tensorboard --logdir RUN_DIR).
  std::unique_ptr<RunOutput> output;
  if (writer) output = std::make_unique<RunOutput>(dir.string(), /*fresh=*/resume_dir.empty());

  const RunData data = load_run_data(c.data);
  const auto tok = make_tokenizer(c.data, data, c.init_from);
  const auto* word_tokenizer = dynamic_cast<const curriculum::WordTokenizer*>(tok.get());
  if (word_tokenizer && writer) word_tokenizer->save((dir / kWordVocabularyFile).string());

  model::GPT2Config mc = c.model;
  if (!c.init_from.empty()) {
    mc = model::read_hf_config(c.init_from + "/config.json");
    mc.dropout = c.model.dropout;  // the shape comes from the checkpoint, the dropout from this run
    mc.thought_scale = c.model.thought_scale;
    COCONUT_CHECK(mc.vocab_size <= tok->vocab_size(),
                  "{}: the pretrained vocabulary ({}) is larger than the tokenizer's ({}): wrong data.bpe_dir?",
                  c.init_from, mc.vocab_size, tok->vocab_size());

  }
  const int pretrained_vocab = mc.vocab_size;
  mc.vocab_size = tok->vocab_size();
  model::GPT2 gpt(mc);  // untouched zero pages until the weights below are written
  spdlog::info("model: {} layers, d_model {}, {} heads, vocab {}, {:.2f}M parameters; method {}, c={}",
               mc.n_layer, mc.d_model, mc.n_head, mc.vocab_size, gpt.num_params() / 1e6,
               curriculum::method_name(c.curriculum.method), c.curriculum.c_thought);
  const auto [fewest, most] = std::minmax_element(data.train.begin(), data.train.end(), [](const Sample& a, const Sample& b) {
    return a.steps.size() < b.steps.size();
  });
  spdlog::info("data: {} train ({} steps per item), {} {}, {} {}", data.train.size(),
               fewest->steps.size() == most->steps.size()
                   ? fmt::format("{}", most->steps.size())
                   : fmt::format("{}-{}", fewest->steps.size(), most->steps.size()),
               data.valid.size(), data.valid_name, data.test.size(), data.test_name);

  std::vector<curriculum::TokenizedSample> train_tok;
  train_tok.reserve(data.train.size());
  for (const Sample& s : data.train) train_tok.push_back(curriculum::tokenize_sample(s, *tok));
  check_sequence_lengths(c, data, train_tok, *tok, mc.max_positions);

  model::MultipassRunner runner;
  runner.set_activation_policy(model::parse_activation_policy(c.activations));
  Distributed dist;
  // train.device: cuda under mpirun: data-parallel GPUs with pp 1 (launcher/device_step.h),
  // else pipeline stages on the GPUs (the executor with parallel/cuda_stage_compute.h).
  const bool gpu_replicas = distributed && c.device == "cuda" && c.pp == 1;
  if (distributed) {
    dist.world = world;
    dist.grid = std::make_unique<parallel::ProcessGrid>(*world, c.pp, dp);
    if (!gpu_replicas) dist.partition = parallel::partition_layers(mc.n_layer, c.pp, parallel::stage_costs(mc));
  }
  init_model_weights(gpt, c, pretrained_vocab, dist.held_slices(gpt));
  if (distributed) {
    if (gpu_replicas) {
      spdlog::info("parallel: {} data-parallel GPU ranks ({}); micro-batches of {}{}", world->size(), c.gpu_comm,
                   c.micro_batch_size,
                   given.micro_batch_size == 0 ? " (train.micro_batch_size's default for this topology)" : "");
    } else {
      parallel::ExecutorConfig ec;
      ec.schedule = parallel::parse_schedule_kind(c.schedule);
      ec.max_in_flight = c.max_in_flight;
      ec.adam = c.adamw;
      ec.clip_norm = c.grad_clip;
      ec.activations = model::parse_activation_policy(c.activations);
      std::unique_ptr<parallel::StageCompute> compute;  // null: the CPU model
      if (c.device == "cuda") {
        COCONUT_CHECK(c.activations == "keep", "train.device: cuda keeps activations (parallel.activations: keep)");
        const parallel::ProcessGrid& g = *dist.grid;
        compute = make_device_stage_compute(c, gpt, {dist.partition[g.stage()], g.first_stage(), g.last_stage()},
                                            local_rank);
        spdlog::info("device: cuda pipeline stages, {} ({}); the optimizer on the host, evaluation through the "
                     "stages on the CPU", c.precision, compute->name());
      }
      dist.executor = std::make_unique<parallel::PipelineExecutor>(gpt, *dist.grid, dist.partition, ec,
                                                                   std::move(compute));
      spdlog::info("parallel: {} ranks = {} pipeline stages x {} replicas, {} schedule, stages on {}; micro-batches "
                   "of {}{}", world->size(), c.pp, dp, c.schedule, dist.executor->compute().name(),
                   c.micro_batch_size,
                   given.micro_batch_size == 0 ? " (train.micro_batch_size's default for this topology)" : "");
    }
    // Micro-batches go round-robin to the replicas: with fewer than dp per batch some
    // replicas only wait (the result is the same, the time is wasted).
    if (c.batch_size / c.micro_batch_size < dp)
      spdlog::warn("train.batch_size {} / train.micro_batch_size {} = {} micro-batches per step for {} replicas: "
                   "some replicas will be idle; set train.micro_batch_size to at most {}",
                   c.batch_size, c.micro_batch_size, c.batch_size / c.micro_batch_size, dp, c.batch_size / dp);
  }
  // The learned <eot> classifier: its own parameters and optimizer, trained on the
  // decision rows of every batch through the runner's hidden-state loss hook.
  std::unique_ptr<curriculum::EotClassifier> eot;
  if (c.eot_classifier) eot = std::make_unique<curriculum::EotClassifier>(mc.d_model, c.adamw);
  // The host AdamW holds the moments this rank updates and nothing more (ZeRO-1): none
  // beside a pipeline executor, which keeps its own shard; else the whole model in one
  // process (the placement is empty), the device step's shard on data-parallel GPUs.
  DevicePlacement placement;
  if (gpu_replicas) placement = {world, local_rank, local_size};
  const parallel::ShardRange host_moments =
      dist.executor ? parallel::ShardRange{0, 0} : device_optimizer_shard(gpt.num_params(), placement);
  model::AdamW opt(c.adamw, gpt.layout(), host_moments.begin, host_moments.end);
  log_optimizer_moments(dist, opt, gpt.num_params(), world);
  // train.device: cuda: the steps run on the GPU from the host model's weights.
  std::unique_ptr<DeviceStep> device;
  if (c.device == "cuda" && !dist.executor) {
    COCONUT_CHECK(!c.eot_classifier, "train.device: cuda does not train the <eot> classifier yet");
    COCONUT_CHECK(c.activations == "keep", "train.device: cuda keeps activations (parallel.activations: keep)");
    device = make_device_step(c, gpt, opt, placement);
    spdlog::info("device: cuda, {} ({}), {}; evaluation on the GPU", c.precision,
                 c.precision == "bf16" ? "bf16 activations and weight copy, fp32 master weights and moments" : "fp32",
                 device->describe());
  }
  TrainContext ctx{c, data, *tok, mc, gpt, train_tok, opt, runner, dist, eot.get(), device.get(), world, dir, writer,
                   output.get(), 0, 0, Timer(), attempt};
  ctx.total_steps = c.epochs * static_cast<int64_t>((train_tok.size() + c.batch_size - 1) / c.batch_size);
  RunCheckpointer checkpoints(ctx);
  TrainState st;
  if (!resume_dir.empty()) {
    st = restore_checkpoint(ctx, resume_dir);
    if (device) device->load_from_host(gpt, opt);
    checkpoints.note_resumed(resume_dir, st);
    if (writer) trim_run_logs(dir, st);
  }
  ctx.first_step = st.step;
  if (c.eval_keep_best && st.best.epoch >= 0 && !fs::exists(dir / kBestModelDir / kBestModelFile)) {
    spdlog::warn("eval.keep_best: the checkpoint records the best model of epoch {}, but {} is missing: the best is "
                 "chosen anew from here", st.best.epoch, (dir / kBestModelDir).string());
    st.best = {};
  }
  if (writer) fs::remove(dir / kDivergedFile);  // an earlier attempt's; this one may end otherwise
  ctx.clock.start();
  // checkpoint.stop_after_steps (for tests): save and stop after that step, as if the
  // job were killed there.
  auto stop_now = [&] {
    if (c.checkpoint.stop_after_steps == 0 || st.step < c.checkpoint.stop_after_steps) return false;
    checkpoints.save(st, false);
    spdlog::info("stopped after step {} (checkpoint.stop_after_steps): {}", st.step, checkpoints.finish());
    return true;
  };
  // A stop signal on any rank (SIGTERM, SIGUSR1: runtime/stop_signals.h, whose handlers
  // `coconut train` installs for its whole run) stops every rank after the same step,
  // with a checkpoint of it.
  int stop_signal = 0;
  auto stop_on_signal = [&](bool milestone = false) {
    stop_signal = agreed_stop_signal(ctx);
    if (stop_signal == 0) return false;
    checkpoints.save(st, milestone);
    const std::string saved = checkpoints.finish();
    spdlog::warn("{} received: stopped after step {} (epoch {}, batch {}{}) at {:.1f} s of the run's wall time, "
                 "checkpoint {}; rerun with --resume auto to continue", stop_signal_name(stop_signal), st.step, st.epoch,
                 st.batch_in_epoch,
                 st.unreported ? fmt::format(", during epoch {}'s evaluation", st.unreported->epoch) : std::string(),
                 st.run_seconds(ctx), saved);
    return true;
  };
  // The finished epoch's evaluation and report, then its epoch-end checkpoint. A stop
  // signal during the evaluation cuts it short: the run stops with the epoch unreported
  // in its checkpoint (the epoch-end save's milestone), and the rerun evaluates it first.
  auto conclude_epoch = [&] {
    const int epoch = st.unreported->epoch;
    const bool due = checkpoints.epoch_end_due(epoch), milestone = due && checkpoints.stage_ends(epoch);
    if (!report_epoch(ctx, st)) {
      COCONUT_CHECK(stop_on_signal(milestone), "an evaluation interrupted without a stop signal (internal error)");
      return true;
    }
    if (due) checkpoints.save(st, milestone);
    return false;
  };
  // A loss or a state that is not finite (train_loop.h) ends the run without saving it.
  std::string diverged_why;
  bool stopped = false;
  try {
    stopped = stop_now();
    // A stop signal during the start-up (data, model, resume): nothing was trained, so
    // there is nothing new to save, and the rerun starts where this attempt started.
    if (!stopped && (stop_signal = agreed_stop_signal(ctx)) != 0) {
      spdlog::warn("{} received before the first step of this attempt (step {}): stopped with nothing new to save; "
                   "rerun with --resume auto to continue", stop_signal_name(stop_signal), st.step);
      stopped = true;
    }
    // Resumed from a stop during an evaluation: that epoch first (train.max_minutes may
    // have made it the last).
    bool ended = false;
    if (!stopped && st.unreported) {
      ended = st.unreported->last;
      stopped = conclude_epoch();
    }
    // Resumed after train.max_minutes had ended the run (a stop during its test split, or
    // a kill after its last epoch-end checkpoint): it ends here again, as the run that was
    // not interrupted did, unless the limit has been raised or removed since. (The limit,
    // not the clock, decides: the decision projected one more epoch, which a resumed
    // attempt has not timed.)
    if (!stopped && !ended && st.out_of_time) {
      ended = c.max_minutes > 0 && c.max_minutes <= st.out_of_time_limit;
      if (ended)
        spdlog::info("train.max_minutes ({}) had ended this run after epoch {}: no more training", c.max_minutes,
                     st.epoch - 1);
      else
        spdlog::info("train.max_minutes had ended this run after epoch {} at {} minutes; now {}: training on",
                     st.epoch - 1, st.out_of_time_limit, c.max_minutes);
      st.out_of_time = ended;
    }
    while (!stopped && !ended && st.epoch < c.epochs) {
      const EpochPlan plan = plan_epoch(ctx, st.epoch);
      if (st.batch_in_epoch == 0) start_epoch(ctx, st, plan);
      const int64_t batches = plan.num_batches(c.batch_size);
      while (!stopped && st.batch_in_epoch < batches) {
        const int64_t steps_before = st.step;
        run_batch(ctx, st, plan);
        if (st.step == steps_before) continue;  // a batch without labelled tokens takes no step
        stopped = stop_now() || stop_on_signal();
        // An every_steps point at the epoch's last batch is left to the epoch-end save.
        const bool epoch_save_follows = st.batch_in_epoch == batches && checkpoints.epoch_end_due(plan.epoch);
        if (!stopped && checkpoints.step_due(st) && !epoch_save_follows) checkpoints.save(st, false);
      }
      if (stopped) break;
      st.out_of_time = plan.epoch + 1 < c.epochs && out_of_time(ctx, st);
      if (st.out_of_time)
        spdlog::warn("train.max_minutes ({}) reached: epoch {} (stage {}) of {} is the last; {:.1f} min of training",
                     c.max_minutes, plan.epoch, plan.stage, c.epochs, st.training_seconds(ctx) / 60);
      finish_epoch(ctx, st, plan);
      stopped = conclude_epoch();
      if (stopped || st.out_of_time) break;
      // A signal after the epoch's evaluation, or during its epoch-end checkpoint: the
      // run stops now, not after the next epoch's first batch (a Slurm grace period may
      // not cover one more batch).
      stopped = stop_on_signal();
    }
    // A signal after the last epoch's evaluation (also when train.max_minutes ended the
    // run): the finished state is saved, so that the rerun only evaluates the test split
    // and exports the model.
    if (!stopped) stopped = stop_on_signal();
  } catch (const TrainingDiverged& e) {
    diverged_why = e.what();
    stopped = true;
  }
  const std::string last_checkpoint = checkpoints.finish();  // commits an asynchronous save in flight
  log_parameter_memory(gpt, dist, distributed ? world : nullptr);
  if (device && !device->graph_use().empty()) spdlog::info("{}", device->graph_use());
  TrainSummary summary = st.summary;
  summary.attempts = st.attempts();
  auto timed = [&](TrainSummary& done) {
    done.seconds = st.run_seconds(ctx);
    done.attempt_seconds = ctx.attempt.seconds();
    return done;
  };
  summary.stopped = stopped;
  summary.stop_signal = stop_signal;
  summary.diverged_why = diverged_why;
  if (summary.diverged()) report_divergence(ctx, st, diverged_why, last_checkpoint);
  if (stopped) return timed(summary);
  // The model as Hugging Face safetensors (rank 0 writes; pipeline stages stream it their
  // tensors), before the test split: a job killed while a long test set decodes (a
  // preemption's grace period ending) still leaves the trained model.
  export_final_model(ctx);
  // A stop signal during a test split's evaluation stops the run with the finished state
  // saved (it already is when checkpoints are on): the rerun exports and evaluates again.
  auto stop_during_test = [&] {
    summary.stopped = stop_on_signal();
    COCONUT_CHECK(summary.stopped, "an evaluation interrupted without a stop signal (internal error)");
    summary.stop_signal = stop_signal;
    return timed(summary);
  };
  // The test split: every rank evaluates a share (collective under mpirun); rank 0 writes.
  curriculum::EvalResult test;
  if (!data.test.empty()) {
    spdlog::info("{}: evaluating the final model", data.test_name);
    test = evaluate_split(gpt, device.get(), *tok, data.test, c, summary.final_stage, eot.get(),
                          distributed ? &dist : nullptr, Interruptible::by_stop_signal);
  }
  if (test.interrupted) return stop_during_test();
  // eval.keep_best: the test split on the best validation model too, once the final model
  // is out (its weights replace the final ones in memory).
  curriculum::EvalResult test_best;
  const bool best_test = c.eval_keep_best && st.best.epoch >= 0 && !data.test.empty();
  if (c.eval_keep_best && st.best.epoch >= 0) {
    summary.best_valid_accuracy = st.best.valid_accuracy;
    summary.best_epoch = st.best.epoch;
  }
  if (best_test) {
    const fs::path best_dir = dir / kBestModelDir;
    import_held_weights(gpt, (best_dir / "model.safetensors").string(), mc, dist.held_slices(gpt));
    if (device) device->load_from_host(gpt, opt);  // decoding reads the device's weights
    std::unique_ptr<curriculum::EotClassifier> best_eot;
    if (eot)
      best_eot = std::make_unique<curriculum::EotClassifier>(
          curriculum::EotClassifier::load((best_dir / "eot_classifier.txt").string(), c.adamw));
    spdlog::info("{}: evaluating the best {} model (epoch {})", data.test_name, data.valid_name, st.best.epoch);
    test_best = evaluate_split(gpt, device.get(), *tok, data.test, c, st.best.stage, best_eot.get(),
                               distributed ? &dist : nullptr, Interruptible::by_stop_signal);
    if (test_best.interrupted) {  // the final weights back (from the export) for the checkpoint
      import_held_weights(gpt, (dir / "model" / "model.safetensors").string(), mc, dist.held_slices(gpt));
      if (device) device->load_from_host(gpt, opt);
      return stop_during_test();
    }
    summary.best_test_accuracy = test_best.accuracy();
  }
  if (!writer) return timed(summary);
  if (!data.test.empty()) {
    const curriculum::EvalResult& r = test;
    summary.test_accuracy = r.accuracy();
    curriculum::write_eval_report((dir / "eval_test.json").string(), r, data.test_name);
    spdlog::info("{} accuracy {:.3f} ({}/{})", data.test_name, r.accuracy(), r.correct, r.total);
  }
  if (best_test) {
    curriculum::write_eval_report((dir / "eval_test_best.json").string(), test_best, data.test_name);
    spdlog::info("{} accuracy of the best {} model (epoch {}, stage {}, {} accuracy {:.3f}): {:.3f} ({}/{})",
                 data.test_name, data.valid_name, st.best.epoch, st.best.stage, data.valid_name,
                 st.best.valid_accuracy, test_best.accuracy(), test_best.correct, test_best.total);
  }
  if (eot) eot->save((dir / "eot_classifier.txt").string());
  return timed(summary);
}

LoadedRun load_run(const std::string& run_dir, const RunWeights& weights) {
  const fs::path dir = run_dir;
  const bool best = weights.best, from_checkpoint = !weights.checkpoint.empty();
  COCONUT_CHECK(!best || !from_checkpoint, "a run's best model or a checkpoint, not both");
  COCONUT_CHECK(fs::is_directory(dir), "run directory '{}' does not exist", run_dir);
  COCONUT_CHECK(fs::exists(dir / "config.yaml"), "'{}' is not a run directory: {} is missing", run_dir,
                (dir / "config.yaml").string());
  const fs::path model_dir = dir / (best ? kBestModelDir : "model");
  if (!from_checkpoint)
    for (const fs::path& f : {model_dir / "model.safetensors", model_dir / "config.json"})
      COCONUT_CHECK(fs::exists(f), "'{}' is not a finished run{}: {} is missing{}", run_dir,
                    best ? " with a best model (eval.keep_best)" : "", f.string(),
                    best ? "" : " (--checkpoint latest reads the newest checkpoint of a run in progress or stopped)");
  LoadedRun r;
  r.best = best;
  Config yaml = Config::load_file((dir / "config.yaml").string());
  r.config = read_train_config(yaml);
  r.config.run_dir = run_dir;
  if (r.config.data.tokenizer == "bpe") {
    r.tokenizer = curriculum::BpeTokenizer::from_dir(r.config.data.bpe_dir);
  } else {
    COCONUT_CHECK(fs::exists(dir / "tokenizer.txt"), "run '{}' has no tokenizer.txt", run_dir);
    r.tokenizer = std::make_unique<curriculum::WordTokenizer>(
        curriculum::WordTokenizer::load((dir / "tokenizer.txt").string()));
  }
  model::GPT2Config mc;
  if (from_checkpoint) {
    // The run's own shape (its model.* keys), which the checkpoint's model digest must
    // match: a checkpoint of another model is refused. A run started from a model
    // (model.init_from, a path that may mean nothing where eval runs) took that model's
    // shape: the checkpoint records it, and the digest checks the vocabulary.
    r.checkpoint_dir = find_run_checkpoint(r.config, weights.checkpoint);
    mc = r.config.init_from.empty()
             ? r.config.model
             : checkpoint_model_shape(r.checkpoint_dir, checkpoint_trainer_state(
                                                            r.checkpoint_dir, parallel::read_manifest(r.checkpoint_dir)));
    mc.vocab_size = r.tokenizer->vocab_size();
    mc.dropout = 0;  // as the exported model's config.json gives it
  } else {
    mc = model::read_hf_config((model_dir / "config.json").string());
  }
  mc.thought_scale = r.config.model.thought_scale;  // how the run fed its thoughts back
  COCONUT_CHECK(mc.vocab_size == r.tokenizer->vocab_size(), "run '{}': model vocabulary {} != tokenizer's {}", run_dir,
                mc.vocab_size, r.tokenizer->vocab_size());
  r.model = std::make_unique<model::GPT2>(mc);
  if (from_checkpoint) {
    if (r.config.eot_classifier) r.eot = std::make_unique<curriculum::EotClassifier>(mc.d_model, r.config.adamw);
    const CheckpointWeights cw = read_checkpoint_weights(r.checkpoint_dir, mc, *r.tokenizer, r.model->params(),
                                                         r.eot.get());
    r.checkpoint_step = cw.step;
    r.final_stage = cw.stage;
    return r;
  }
  model::import_hf_gpt2((model_dir / "model.safetensors").string(), mc, r.model->params());
  if (r.config.eot_classifier) {
    const fs::path eot_file = (best ? model_dir : dir) / "eot_classifier.txt";
    COCONUT_CHECK(fs::exists(eot_file), "run '{}' trained an <eot> classifier but has no {}", run_dir,
                  eot_file.string());
    r.eot = std::make_unique<curriculum::EotClassifier>(
        curriculum::EotClassifier::load(eot_file.string(), r.config.adamw));
  }
  r.final_stage = r.config.curriculum.stage_of_epoch(r.config.epochs - 1);
  if (best) {
    const fs::path where = model_dir / kBestModelFile;
    const std::string text = read_file(where.string());  // names the file when it cannot be read
    try {
      r.final_stage = nlohmann::json::parse(text).at("stage").get<int>();
    } catch (const nlohmann::json::exception& e) {
      COCONUT_FAIL("{}: not a best-model record ({})", where.string(), e.what());
    }
  }
  return r;
}

}  // namespace coconut::launcher
