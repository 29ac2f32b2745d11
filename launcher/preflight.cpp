// Input checks before a training run writes anything (see preflight.h).
#include "launcher/preflight.h"

#include "launcher/device_step.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>

#include "curriculum/bpe_tokenizer.h"
#include "launcher/sequence_lengths.h"
#include "launcher/trainer.h"
#include "model/gpt2.h"
#include "model/hf_weights.h"
#include "runtime/check.h"

namespace coconut::launcher {

namespace fs = std::filesystem;

std::vector<std::pair<std::string, std::string>> input_files(const TrainConfig& c) {
  std::vector<std::pair<std::string, std::string>> files;
  if (!c.data.train_file.empty()) files.emplace_back("data.train_file", c.data.train_file);
  if (!c.data.valid_file.empty()) files.emplace_back("data.valid_file", c.data.valid_file);
  if (!c.data.test_file.empty()) files.emplace_back("data.test_file", c.data.test_file);
  if (c.data.tokenizer == "bpe") {
    files.emplace_back("data.bpe_dir", (fs::path(c.data.bpe_dir) / "vocab.json").string());
    files.emplace_back("data.bpe_dir", (fs::path(c.data.bpe_dir) / "merges.txt").string());
  }
  if (!c.init_from.empty()) {
    files.emplace_back("model.init_from", (fs::path(c.init_from) / "config.json").string());
    files.emplace_back("model.init_from", (fs::path(c.init_from) / "model.safetensors").string());
    // The vocabulary the model was trained with: a word-tokenizer run extends it
    // (make_tokenizer). `coconut train` writes it beside the exported model.
    if (c.data.tokenizer == "word")
      files.emplace_back("model.init_from (the word vocabulary of the run that trained it)",
                         (fs::path(c.init_from) / kWordVocabularyFile).string());
  }
  return files;
}

std::string existing_ancestor(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::absolute(path, ec);
  if (ec) p = path;
  while (!p.empty() && !fs::exists(p, ec) && p != p.parent_path()) p = p.parent_path();
  return p.string();
}

namespace {

// An output directory (run.dir, checkpoint.dir) must be a writable directory, or
// creatable under its deepest existing ancestor (which must then be a writable directory).
void check_output_dir(const TrainConfig& c, const std::string& key, const std::string& dir,
                      std::vector<std::string>* problems) {
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec))
      problems->push_back(fmt::format("{}: {} '{}' exists and is not a directory", c.source, key, dir));
    else if (access(dir.c_str(), W_OK | X_OK) != 0)
      problems->push_back(fmt::format("{}: {} '{}' is not writable", c.source, key, dir));
    return;
  }
  const std::string anc = existing_ancestor(dir);
  if (!fs::is_directory(anc, ec))
    problems->push_back(
        fmt::format("{}: {} '{}' cannot be created: '{}' is not a directory", c.source, key, dir, anc));
  else if (access(anc.c_str(), W_OK | X_OK) != 0)
    problems->push_back(
        fmt::format("{}: {} '{}' cannot be created: directory '{}' is not writable", c.source, key, dir, anc));
}

// The process grid: pp pipeline stages x dp replicas must use exactly the job's ranks.
// (Every schedule works with fewer micro-batches than stages -- it only idles longer --
// and a replica without a micro-batch in a step still joins the collectives, so the
// micro-batch count is not a constraint here.)
void check_grid(const TrainConfig& c, int world_size, std::vector<std::string>* problems) {
  if (c.dp > 0 && c.pp * c.dp != world_size) {
    problems->push_back(fmt::format(
        "{}: parallel.pp ({}) x parallel.dp ({}) = {} ranks, but the job has {} "
        "(mpirun -np / srun -n must equal pp * dp)",
        c.source, c.pp, c.dp, c.pp * c.dp, world_size));
  } else if (c.dp == 0 && world_size % c.pp != 0) {
    problems->push_back(fmt::format(
        "{}: parallel.pp ({}) does not divide the job's {} ranks (mpirun -np / srun -n must be a multiple of "
        "parallel.pp)",
        c.source, c.pp, world_size));
  }
}

}  // namespace

std::vector<std::string> preflight_problems(const TrainConfig& c, const PreflightOptions& options) {
  std::vector<std::string> problems;
  if (options.world_size > 0) check_grid(c, options.world_size, &problems);
  for (const auto& [key, path] : input_files(c)) {
    std::error_code ec;
    if (!options.require_files) break;
    if (!fs::is_regular_file(path, ec))
      problems.push_back(fmt::format("{}: {}: file '{}' {}", c.source, key, path,
                                     fs::exists(path, ec) ? "is not a regular file" : "does not exist"));
    else if (access(path.c_str(), R_OK) != 0)
      problems.push_back(fmt::format("{}: {}: file '{}' is not readable", c.source, key, path));
  }
  // A pretrained model brings its own depth: the pipeline must still fit it.
  const std::string hf_config = (fs::path(c.init_from) / "config.json").string();
  if (!c.init_from.empty() && fs::is_regular_file(hf_config)) {
    try {
      const model::GPT2Config mc = model::read_hf_config(hf_config);
      if (c.pp > mc.n_layer)
        problems.push_back(fmt::format(
            "{}: parallel.pp ({}) is larger than the {} layers of model.init_from '{}': every pipeline stage needs "
            "a layer",
            c.source, c.pp, mc.n_layer, c.init_from));
    } catch (const Error& e) {
      problems.push_back(fmt::format("{}: model.init_from: {}", c.source, e.what()));
    }
  }
  if (c.device == "cuda") {  // launcher/device_step.h: no <eot> classifier, activations kept (pp 1: read_train_config)
    std::string why;
    if (!device_available(&why)) problems.push_back(fmt::format("{}: train.device: cuda: {}", c.source, why));
    if (c.eot_classifier)
      problems.push_back(fmt::format("{}: train.device: cuda does not train the <eot> classifier yet", c.source));
    if (c.activations != "keep")
      problems.push_back(fmt::format("{}: train.device: cuda needs parallel.activations: keep", c.source));
    if (c.model.thought_scale != 1.f)
      problems.push_back(fmt::format("{}: train.device: cuda feeds thoughts back unscaled: model.thought_scale {} "
                                     "needs train.device: cpu", c.source, c.model.thought_scale));
  }
  check_output_dir(c, "run.dir", c.run_dir, &problems);
  if (!c.checkpoint.dir.empty()) check_output_dir(c, "checkpoint.dir", c.checkpoint.dir, &problems);
  const std::string& resume = c.checkpoint.resume;  // never | auto | a path
  if (options.require_files && resume != "never" && resume != "auto" && !fs::is_directory(resume))
    problems.push_back(fmt::format("{}: checkpoint.resume: '{}' is not a directory (expected never, auto, a checkpoint "
                                   "directory or a checkpoint root)", c.source, resume));
  return problems;
}

namespace {

// The model's shape: the config's, or the pretrained model's (model.init_from) when its
// config.json is there; `from` says which.
model::GPT2Config model_shape(const TrainConfig& c, std::string* from = nullptr) {
  const std::string hf_config = (fs::path(c.init_from) / "config.json").string();
  if (!c.init_from.empty() && fs::is_regular_file(hf_config)) {
    if (from) *from = hf_config;
    return model::read_hf_config(hf_config);
  }
  if (from) *from = "the config";
  return c.model;
}

}  // namespace

std::string dry_run_sequence_lengths(const TrainConfig& given, int job_ranks, const std::string& prefix) {
  for (const auto& [key, path] : input_files(given))
    if (!fs::is_regular_file(path)) {
      fmt::print("{}sequence lengths: not measured ({} is missing)\n", prefix, path);
      return "";
    }
  TrainConfig c = given;
  const int max_positions = model_shape(c).max_positions;
  const int micro = job_micro_batch_size(c, job_ranks);
  const bool micro_known = micro > 0;
  c.micro_batch_size = micro_known ? micro : c.batch_size;
  try {
    const RunData data = load_run_data(c.data);
    const auto tok = make_tokenizer(c.data, data, c.init_from);
    std::vector<curriculum::TokenizedSample> train;
    for (const curriculum::Sample& s : data.train) train.push_back(curriculum::tokenize_sample(s, *tok));
    const SequenceLengths l = measure_sequence_lengths(
        c, train, {{data.valid_name, &data.valid}, {data.test_name, &data.test}}, *tok, 0, max_positions);
    const MicroBatches measured = micro_known ? MicroBatches::exact : MicroBatches::whole_batches;
    fmt::print("{}{}\n", prefix, describe_sequence_lengths(l, max_positions, measured));
    const std::string problem = sequence_length_problem(l, max_positions, measured);
    if (problem.empty() && measured == MicroBatches::whole_batches && l.longest_batch > max_positions)
      fmt::print("{}sequence lengths: whole batches would not fit; whether the micro-batches do depends on "
                 "train.micro_batch_size (set it, or --np, to measure them)\n", prefix);
    return problem;
  } catch (const Error& e) {
    return fmt::format("the data could not be read: {}", e.what());
  }
}

int print_dry_run(const TrainConfig& c, int job_ranks) {
  fmt::print("config {} (digest {})\neffective configuration (file + --set overrides; omitted keys take their "
             "defaults, docs/config.md):\n{}\n",
             c.source, c.digest, nlohmann::json::parse(c.effective).dump(2));

  std::string shape_from;
  model::GPT2Config mc = model_shape(c, &shape_from);
  // Parameters = (vocab x d_model for the tied token embedding) + everything else.
  mc.vocab_size = 1;
  const size_t per_vocab = static_cast<size_t>(mc.d_model);
  const size_t rest = model::ParamLayout(mc).total() - per_vocab;
  fmt::print("model ({}): {} layers, d_model {}, {} heads, {} positions: {:.2f}M parameters + {} per vocabulary entry",
             shape_from, mc.n_layer, mc.d_model, mc.n_head, mc.max_positions, rest / 1e6, per_vocab);
  if (c.data.tokenizer == "bpe" && fs::is_regular_file(fs::path(c.data.bpe_dir) / "vocab.json")) {
    const int vocab = curriculum::BpeTokenizer::from_dir(c.data.bpe_dir)->vocab_size();
    fmt::print("; GPT-2 BPE vocabulary {}: {:.2f}M in total\n", vocab, (rest + per_vocab * vocab) / 1e6);
  } else if (c.data.tokenizer == "bpe") {
    fmt::print(" (GPT-2 BPE: the vocabulary size is read from data.bpe_dir, not present here)\n");
  } else {
    fmt::print(" (word tokenizer: the vocabulary comes from the data)\n");
  }

  const curriculum::CurriculumConfig& cc = c.curriculum;
  const int last_stage = cc.stage_of_epoch(c.epochs - 1);
  fmt::print("curriculum: method {}, c_thought {}, max_latent_stage {}, epochs_per_stage {}; "
             "{} epochs, last stage {}{}\n",
             curriculum::method_name(cc.method), cc.c_thought, cc.max_latent_stage, cc.epochs_per_stage, c.epochs,
             last_stage, last_stage > cc.max_latent_stage ? " (past max_latent_stage: every step latent)" : "");
  const int dp = job_replicas(c, job_ranks), micro_default = job_micro_batch_size(c, job_ranks);
  const std::string micro = c.micro_batch_size > 0 ? std::to_string(c.micro_batch_size)
                            : micro_default > 0
                                ? fmt::format("{} (default for {})", micro_default,
                                              job_ranks == 1 ? std::string("one process")
                                                             : fmt::format("pp {} x dp {}", c.pp, dp))
                                : fmt::format("{} (the default in one process; under mpirun, chosen for the ranks: "
                                              "--np N says for how many)", c.batch_size);
  const LrSchedule& ls = c.lr_schedule;
  const std::string schedule =
      (ls.kind == "cosine" ? fmt::format("cosine to {}", ls.min_lr) : std::string("constant")) +
      (ls.warmup_steps > 0 ? fmt::format(", warmup {} steps after each reset", ls.warmup_steps) : std::string());
  fmt::print("batch: {} samples per step in micro-batches of {}; AdamW lr {} ({}), weight decay {}; reset optimizer: "
             "{}\n", c.batch_size, micro, c.adamw.lr, schedule, c.adamw.weight_decay, c.reset_optimizer);
  fmt::print("parallel: pp {} x dp {} ({} schedule){}\n", c.pp, dp > 0 ? std::to_string(dp) : "ranks / pp",
             c.schedule, dp > 0 ? fmt::format(": run with mpirun -np {}", c.pp * dp) : "");
  fmt::print("run.dir: {}\n", c.run_dir);
  for (const auto& [key, path] : input_files(c)) {
    std::error_code ec;
    fmt::print("input {}: {}{}\n", key, path, fs::is_regular_file(path, ec) ? "" : "  (missing: needed to train)");
  }
  if (c.data.train_file.empty())
    fmt::print("data: generated {} ({} train, {} valid, {} test items, seed {}{})\n", c.data.kind,
               c.data.generate_train, c.data.generate_valid, c.data.generate_test, c.data.generate_seed,
               c.data.kind == "prontoqa"      ? fmt::format(", {} hops", c.data.hops)
               : c.data.kind == "running_sum" ? fmt::format(", {} digits", c.data.digits)
                                              : std::string());

  PreflightOptions options;
  options.require_files = false;
  options.world_size = job_ranks;
  std::vector<std::string> problems = preflight_problems(c, options);
  if (problems.empty()) {
    const std::string problem = dry_run_sequence_lengths(c, job_ranks);
    if (!problem.empty()) problems.push_back(problem);
  }
  for (const std::string& p : problems) fmt::print(stderr, "problem: {}\n", p);
  fmt::print("dry run: {}\n", problems.empty() ? "the configuration is valid (nothing was written)"
                                                 : "the configuration cannot start (see the problems above)");
  return problems.empty() ? 0 : 2;
}

}  // namespace coconut::launcher
