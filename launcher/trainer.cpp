// The single-process training loop (see trainer.h). The data order, the uniform_prob
// stage draws and the initial weights all come from counter-based generators keyed by
// the seed, so a run is reproducible bit for bit on the same machine and threads.
#include "launcher/trainer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "curriculum/batching.h"
#include "curriculum/bpe_tokenizer.h"
#include "curriculum/eot_classifier.h"
#include "curriculum/evaluation.h"
#include "curriculum/prontoqa_generator.h"
#include "curriculum/prosqa_generator.h"
#include "curriculum/word_tokenizer.h"
#include "model/adamw.h"
#include "model/hf_weights.h"
#include "model/multipass.h"
#include "parallel/executor.h"
#include "parallel/grid.h"
#include "parallel/partition.h"
#include "runtime/check.h"
#include "runtime/rng.h"
#include "runtime/threads.h"
#include "runtime/timer.h"

namespace coconut::launcher {

namespace fs = std::filesystem;
using curriculum::Sample;

RunData load_run_data(const DataConfig& d) {
  RunData r;
  auto generate = [&](uint64_t seed, int count) {
    return d.kind == "prontoqa" ? curriculum::generate_prontoqa(seed, count) : curriculum::generate_prosqa(seed, count);
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

std::unique_ptr<curriculum::Tokenizer> make_tokenizer(const DataConfig& d, const RunData& data) {
  if (d.tokenizer == "bpe") return curriculum::BpeTokenizer::from_dir(d.bpe_dir);
  std::vector<std::string> texts = {"\n", "### "};
  for (const auto* split : {&data.train, &data.valid, &data.test})
    for (const Sample& s : *split) {
      texts.push_back(s.question);
      texts.insert(texts.end(), s.steps.begin(), s.steps.end());
      texts.push_back(s.answer);
    }
  return std::make_unique<curriculum::WordTokenizer>(curriculum::WordTokenizer::build(texts));
}

namespace {

void append_jsonl(const fs::path& path, const nlohmann::json& j) {
  std::ofstream out(path, std::ios::app);
  COCONUT_CHECK(out.good(), "cannot append to '{}'", path.string());
  out << j.dump() << "\n";
}

// Fisher-Yates with a counter-based stream per epoch.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, int epoch) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  CounterRng rng(seed, {0x5348u, static_cast<uint64_t>(epoch)});
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  return order;
}

curriculum::EvalResult evaluate_split(const model::GPT2& gpt, const curriculum::Tokenizer& tok,
                                      const std::vector<Sample>& split, const TrainConfig& c, int stage,
                                      const curriculum::EotClassifier* eot) {
  if (c.eval_max_items <= 0 || static_cast<int>(split.size()) <= c.eval_max_items)
    return curriculum::evaluate(gpt, tok, split, c.curriculum, stage, c.eval_batch_size, c.max_new_tokens, eot);
  const std::vector<Sample> head(split.begin(), split.begin() + c.eval_max_items);  // copy only when truncating
  return curriculum::evaluate(gpt, tok, head, c.curriculum, stage, c.eval_batch_size, c.max_new_tokens, eot);
}

}  // namespace

namespace {

// The distributed side of a run: process grid, layer partition and the executor.
struct Distributed {
  parallel::Communicator* world = nullptr;
  std::unique_ptr<parallel::ProcessGrid> grid;
  std::vector<parallel::StageLayers> partition;
  std::unique_ptr<parallel::PipelineExecutor> executor;

  // Every rank gets the whole model: each stage broadcasts its slice along its pipeline
  // (replicas hold identical weights after the ZeRO all-gather).
  void gather_model(model::GPT2& gpt) {
    for (int s = 0; s < grid->pp(); ++s) {
      const parallel::ParamSlice slice = parallel::stage_param_slice(gpt.layout(), partition, s);
      grid->pipeline().broadcast(gpt.params() + slice.begin, slice.size(), s);
    }
  }
};

}  // namespace

TrainSummary run_training(const TrainConfig& c, parallel::Communicator* world) {
  Timer wall;
  const bool distributed = world && world->size() > 1;
  const bool writer = !world || world->rank() == 0;  // rank 0 evaluates and writes the run directory
  set_num_threads(c.threads);
  const fs::path dir = c.run_dir;
  if (writer) fs::create_directories(dir);
  COCONUT_CHECK(!writer || fs::is_directory(dir), "cannot create the run directory '{}'", dir.string());
  if (writer) {
    // The effective configuration (file + --set overrides), so that eval, probe and a
    // resume see exactly what was trained.
    std::ofstream out(dir / "config.yaml");
    out << "# effective configuration of this run (from " << c.source << ", overrides applied)\n" << c.effective << "\n";
    COCONUT_CHECK(out.good(), "cannot write '{}'", (dir / "config.yaml").string());
  }
  if (writer) fs::remove(dir / "metrics.jsonl");

  const RunData data = load_run_data(c.data);
  const auto tok = make_tokenizer(c.data, data);
  if (auto* word = dynamic_cast<const curriculum::WordTokenizer*>(tok.get()); word && writer)
    word->save((dir / "tokenizer.txt").string());

  model::GPT2Config mc = c.model;
  if (!c.init_from.empty()) {
    mc = model::read_hf_config(c.init_from + "/config.json");
    COCONUT_CHECK(mc.vocab_size <= tok->vocab_size(),
                  "{}: the pretrained vocabulary ({}) is larger than the tokenizer's ({}): wrong data.bpe_dir?",
                  c.init_from, mc.vocab_size, tok->vocab_size());
  }
  const int pretrained_vocab = mc.vocab_size;
  mc.vocab_size = tok->vocab_size();
  model::GPT2 gpt(mc);
  gpt.init_weights(c.seed);
  if (!c.init_from.empty()) {
    // Pretrained rows are imported; the added special tokens keep their fresh init.
    model::GPT2Config pc = mc;
    pc.vocab_size = pretrained_vocab;
    model::GPT2 pretrained(pc);
    model::import_hf_gpt2(c.init_from + "/model.safetensors", pc, pretrained.params());
    for (const auto& t : gpt.layout().tensors()) {
      const auto& s = pretrained.layout().find(t.name);
      std::copy_n(pretrained.params() + s.offset, std::min(s.numel, t.numel), gpt.params() + t.offset);
    }
  }
  spdlog::info("model: {} layers, d_model {}, {} heads, vocab {}, {:.2f}M parameters; method {}, c={}",
               mc.n_layer, mc.d_model, mc.n_head, mc.vocab_size, gpt.num_params() / 1e6,
               curriculum::method_name(c.curriculum.method), c.curriculum.c_thought);
  spdlog::info("data: {} train, {} {}, {} {}", data.train.size(), data.valid.size(), data.valid_name,
               data.test.size(), data.test_name);

  std::vector<curriculum::TokenizedSample> train_tok;
  train_tok.reserve(data.train.size());
  for (const Sample& s : data.train) train_tok.push_back(curriculum::tokenize_sample(s, *tok));

  model::AdamW opt(c.adamw, gpt.layout(), 0, gpt.num_params());
  model::MultipassRunner runner;
  Distributed dist;
  if (distributed) {
    const int dp = c.dp > 0 ? c.dp : parallel::data_parallel_size(world->size(), c.pp);
    COCONUT_CHECK(!c.eot_classifier, "curriculum.eot_classifier is not supported with several ranks yet");
    dist.world = world;
    dist.grid = std::make_unique<parallel::ProcessGrid>(*world, c.pp, dp);
    dist.partition = parallel::partition_layers(mc.n_layer, c.pp, parallel::stage_costs(mc));
    parallel::ExecutorConfig ec;
    ec.schedule = parallel::parse_schedule_kind(c.schedule);
    ec.max_in_flight = c.max_in_flight;
    ec.adam = c.adamw;
    ec.clip_norm = c.grad_clip;
    dist.executor = std::make_unique<parallel::PipelineExecutor>(gpt, *dist.grid, dist.partition, ec);
    spdlog::info("parallel: {} ranks = {} pipeline stages x {} replicas, {} schedule", world->size(), c.pp, dp,
                 c.schedule);
  }
  // The learned <eot> classifier: its own parameters and optimizer, trained on the
  // decision rows of every batch through the runner's hidden-state loss hook.
  std::unique_ptr<curriculum::EotClassifier> eot;
  if (c.eot_classifier) eot = std::make_unique<curriculum::EotClassifier>(mc.d_model, c.adamw);
  TrainSummary summary;
  int prev_stage = -1;
  int64_t step = 0;
  for (int epoch = 0; epoch < c.epochs; ++epoch) {
    const int stage = c.curriculum.stage_of_epoch(epoch);
    const bool reset = (c.reset_optimizer == "epoch" && epoch > 0) ||
                       (c.reset_optimizer == "stage" && prev_stage >= 0 && stage != prev_stage);
    if (reset) {
      opt.reset();
      if (dist.executor) dist.executor->reset_optimizer();
      if (eot) eot->reset_optimizer();
      spdlog::info("epoch {}: optimizer state reset ({})", epoch, c.reset_optimizer);
    }
    prev_stage = stage;

    // This epoch's samples: the scheduled stage, or with uniform_prob a uniform draw.
    const std::vector<size_t> order = epoch_order(train_tok.size(), c.seed, epoch);
    std::vector<curriculum::BuiltSample> built(order.size());
    for (size_t i = 0; i < order.size(); ++i) {
      const auto& ts = train_tok[order[i]];
      int s = stage;
      if (c.curriculum.uniform_prob > 0) {
        CounterRng rng(c.seed, {0x554eu, static_cast<uint64_t>(epoch), order[i]});
        if (rng.uniform() < c.curriculum.uniform_prob) s = static_cast<int>(rng.below(ts.steps.size() + 1));
      }
      built[i] = curriculum::build_training_sample(ts, c.curriculum, s, epoch, *tok);
    }

    Timer epoch_timer;
    double loss_sum = 0, tokens = 0;
    double busy = 0, op_wall = 0, simulated_bubble = 0;  // this rank's pipeline time this epoch
    int batches = 0;
    for (size_t begin = 0; begin < built.size(); begin += c.batch_size) {
      const size_t end = std::min(built.size(), begin + static_cast<size_t>(c.batch_size));
      // The loss is the mean over every target of the whole batch, however it is split.
      std::vector<model::SequenceBatch> micro;
      std::vector<std::vector<int64_t>> micro_ids;  // dataset indices: dropout masks follow the sample
      std::vector<std::vector<curriculum::EotTarget>> micro_eot;  // <eot> decision rows
      int targets = 0, eot_rows = 0;
      for (size_t m = begin; m < end; m += c.micro_batch_size) {
        std::vector<const curriculum::BuiltSample*> ptrs;
        micro_ids.emplace_back();
        for (size_t i = m; i < std::min(end, m + static_cast<size_t>(c.micro_batch_size)); ++i) {
          ptrs.push_back(&built[i]);
          micro_ids.back().push_back(static_cast<int64_t>(order[i]));
        }
        micro.push_back(curriculum::make_batch(ptrs, *tok, c.curriculum.feeds_back()));
        targets += micro.back().num_targets();
        if (eot) {
          micro_eot.push_back(curriculum::eot_targets(micro.back(), *tok));
          eot_rows += static_cast<int>(micro_eot.back().size());
        }
        tokens += micro.back().B * micro.back().T;
      }
      if (targets == 0) continue;
      double loss = 0;
      if (dist.executor) {
        // Micro-batches go round-robin to the replicas; every stage of a replica runs the same ones.
        std::vector<model::SequenceBatch> mine;
        std::vector<std::vector<int64_t>> mine_ids;
        for (size_t m = dist.grid->dp_index(); m < micro.size(); m += dist.grid->dp()) {
          mine.push_back(std::move(micro[m]));
          mine_ids.push_back(micro_ids[m]);
        }
        if (mc.dropout > 0) dist.executor->set_dropout(c.seed, static_cast<uint64_t>(step), mine_ids);
        loss = dist.executor->train_step(mine, 1.f / targets, c.adamw.lr).loss;
        const parallel::StepTiming& t = dist.executor->last_timing();
        busy += t.busy_seconds;
        op_wall += t.wall_seconds;
        simulated_bubble += t.simulated_bubble * t.wall_seconds;  // wall-weighted mean
        ++step;
        ++batches;
        loss_sum += loss;
        if (step % c.log_every == 0)
          spdlog::info("epoch {} stage {} step {} loss {:.4f} ({:.0f} tokens/s)", epoch, stage, step, loss,
                       tokens / epoch_timer.seconds());
        continue;
      }
      gpt.zero_grads();
      if (eot) eot->zero_grads();
      for (size_t m = 0; m < micro.size(); ++m) {
        if (mc.dropout > 0) runner.set_dropout(c.seed, static_cast<uint64_t>(step), micro_ids[m]);
        if (eot)
          runner.set_hidden_loss(eot_rows > 0 ? eot->hidden_loss(micro_eot[m], eot_rows,
                                                                  static_cast<float>(c.eot_loss_weight))
                                              : model::MultipassRunner::HiddenLoss{});
        loss += runner.forward_backward(gpt, micro[m], 1.f / targets);
      }
      if (c.grad_clip > 0) {
        const double norm = std::sqrt(model::sum_of_squares(gpt.grads(), gpt.num_params()));
        model::clip_grads(gpt.grads(), gpt.num_params(), norm, static_cast<float>(c.grad_clip));
      }
      opt.step(gpt.params(), gpt.grads(), c.adamw.lr);
      if (eot && eot_rows > 0) eot->step(c.adamw.lr);
      ++step;
      ++batches;
      loss_sum += loss;
      if (step % c.log_every == 0)
        spdlog::info("epoch {} stage {} step {} loss {:.4f} ({:.0f} tokens/s)", epoch, stage, step, loss,
                     tokens / epoch_timer.seconds());
    }
    const double mean_loss = batches ? loss_sum / batches : 0.0;
    summary.epoch_losses.push_back(mean_loss);
    summary.final_loss = mean_loss;
    summary.final_stage = stage;
    nlohmann::json row = {{"epoch", epoch}, {"stage", stage}, {"step", step}, {"loss", mean_loss},
                          {"seconds", epoch_timer.seconds()}, {"tokens_per_s", tokens / epoch_timer.seconds()}};
    if (eot) {
      const curriculum::EotClassifier::Stats st = eot->take_stats();
      row["eot_bce"] = st.rows ? st.bce_sum / st.rows : 0.0;
      row["eot_stop_accuracy"] = st.rows ? static_cast<double>(st.correct) / st.rows : 0.0;
    }
    if (dist.executor) {
      // Measured bubble per rank (1 - busy / wall over the op lists) next to the
      // simulator's prediction for the same schedules; rank 0 logs all ranks.
      const int W = world->size(), r = world->rank();
      std::vector<double> stats(2 * W, 0.0);
      stats[r] = op_wall > 0 ? 1.0 - busy / op_wall : 0.0;
      stats[W + r] = op_wall > 0 ? simulated_bubble / op_wall : 0.0;
      world->all_reduce_sum(stats.data(), stats.size());
      std::string line;
      for (int k = 0; k < W; ++k) line += fmt::format(" rank {}: {:.3f} / {:.3f};", k, stats[k], stats[W + k]);
      spdlog::info("epoch {} pipeline bubble, measured / simulated:{}", epoch, line);
      row["bubble_measured"] = std::vector<double>(stats.begin(), stats.begin() + W);
      row["bubble_simulated"] = std::vector<double>(stats.begin() + W, stats.end());
    }
    const bool last = epoch + 1 == c.epochs;
    const bool eval_now = !data.valid.empty() && ((c.eval_every > 0 && (epoch + 1) % c.eval_every == 0) || last);
    if (dist.executor && (eval_now || last)) dist.gather_model(gpt);
    if (!writer) continue;
    if (eval_now) {
      const auto r = evaluate_split(gpt, *tok, data.valid, c, stage, eot.get());
      row["valid_accuracy"] = r.accuracy();
      if (eot) {
        row["valid_mean_thoughts"] = r.mean_thoughts;
        spdlog::info("epoch {} stage {}: <eot> classifier: {:.2f} thoughts per item", epoch, stage, r.mean_thoughts);
      }
      summary.valid_accuracy = r.accuracy();
      spdlog::info("epoch {} stage {}: loss {:.4f}, {} accuracy {:.3f} ({}/{}), {:.1f}s", epoch, stage, mean_loss,
                   data.valid_name, r.accuracy(), r.correct, r.total, epoch_timer.seconds());
      if (last) curriculum::write_eval_report((dir / "eval_valid.json").string(), r, data.valid_name);
    } else {
      spdlog::info("epoch {} stage {}: loss {:.4f}, {:.1f}s", epoch, stage, mean_loss, epoch_timer.seconds());
    }
    append_jsonl(dir / "metrics.jsonl", row);
  }
  if (distributed) world->barrier();  // the other ranks wait while rank 0 evaluates and writes
  if (!writer) {
    summary.seconds = wall.seconds();
    return summary;
  }
  if (!data.test.empty()) {
    const auto r = evaluate_split(gpt, *tok, data.test, c, summary.final_stage, eot.get());
    summary.test_accuracy = r.accuracy();
    curriculum::write_eval_report((dir / "eval_test.json").string(), r, data.test_name);
    spdlog::info("{} accuracy {:.3f} ({}/{})", data.test_name, r.accuracy(), r.correct, r.total);
  }
  model::export_hf_gpt2((dir / "model").string(), mc, gpt.params());
  if (eot) eot->save((dir / "eot_classifier.txt").string());
  summary.seconds = wall.seconds();
  return summary;
}

LoadedRun load_run(const std::string& run_dir) {
  const fs::path dir = run_dir;
  COCONUT_CHECK(fs::is_directory(dir), "run directory '{}' does not exist", run_dir);
  for (const char* f : {"config.yaml", "model/model.safetensors", "model/config.json"})
    COCONUT_CHECK(fs::exists(dir / f), "'{}' is not a finished run: {} is missing", run_dir, (dir / f).string());
  LoadedRun r;
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
  const model::GPT2Config mc = model::read_hf_config((dir / "model/config.json").string());
  COCONUT_CHECK(mc.vocab_size == r.tokenizer->vocab_size(), "run '{}': model vocabulary {} != tokenizer's {}", run_dir,
                mc.vocab_size, r.tokenizer->vocab_size());
  r.model = std::make_unique<model::GPT2>(mc);
  model::import_hf_gpt2((dir / "model/model.safetensors").string(), mc, r.model->params());
  if (r.config.eot_classifier) {
    COCONUT_CHECK(fs::exists(dir / "eot_classifier.txt"), "run '{}' trained an <eot> classifier but has no {}",
                  run_dir, (dir / "eot_classifier.txt").string());
    r.eot = std::make_unique<curriculum::EotClassifier>(
        curriculum::EotClassifier::load((dir / "eot_classifier.txt").string(), r.config.adamw));
  }
  r.final_stage = r.config.curriculum.stage_of_epoch(r.config.epochs - 1);
  return r;
}

}  // namespace coconut::launcher
