// `coconut ckpt`: look into and convert sharded checkpoints (parallel/checkpoint.h).
//   inspect DIR                    the manifest (step, epoch, stage, topology, digests,
//                                  tensors with sizes and slice counts) and the checksum of
//                                  every slice; exit 1 when any slice is damaged
//   export DIR --to OUT            the model's weights as Hugging Face GPT-2 safetensors
// DIR is a committed checkpoint directory or a checkpoint root (its newest checkpoint).
// Reading needs no MPI: these run as one plain process on any topology's checkpoint.
#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "curriculum/word_tokenizer.h"
#include "launcher/commands.h"
#include "launcher/train_checkpoint.h"
#include "launcher/trainer.h"
#include "model/gpt2.h"
#include "model/hf_weights.h"
#include "parallel/checkpoint.h"
#include "runtime/check.h"
#include "runtime/files.h"

namespace coconut::launcher {

namespace {

namespace fs = std::filesystem;

const char* kHelp =
    "usage: coconut ckpt inspect DIR\n"
    "  Prints a checkpoint's manifest: step, epoch, stage, topology, config and model digests,\n"
    "  each tensor with its size and slice count, each shard file, and the checksum status of\n"
    "  every slice (all are read). Exits 1 if any slice is damaged or a file is missing.\n"
    "usage: coconut ckpt export DIR --to OUT\n"
    "  Writes the checkpoint's model weights (tensor \"params\") as Hugging Face GPT-2:\n"
    "  --to NAME.safetensors writes that file and config.json beside it; --to DIR (anything\n"
    "  else) writes DIR/model.safetensors and DIR/config.json, loadable with\n"
    "  transformers.GPT2LMHeadModel.from_pretrained(DIR). A checkpoint of a run with the word\n"
    "  tokenizer also gives tokenizer.txt beside config.json: the vocabulary the weights'\n"
    "  rows belong to, which model.init_from needs.\n"
    "DIR is a committed checkpoint (ROOT/step-XXXXXXXX) or a checkpoint root, whose newest\n"
    "committed checkpoint is used (`latest`).\n";

// A checkpoint directory, or the newest committed checkpoint of a root.
std::string resolve_checkpoint(const std::string& path) {
  if (!fs::is_directory(path)) throw UsageError(fmt::format("'{}' is not a directory\n{}", path, kHelp));
  return parallel::committed_checkpoint(path, "coconut ckpt");
}

std::string megabytes(uint64_t bytes) { return fmt::format("{:.2f} MB", bytes / 1e6); }

int inspect(const std::string& dir) {
  const parallel::Manifest m = parallel::read_manifest(dir);
  const parallel::CheckpointMeta& meta = m.meta;
  fmt::print("checkpoint {}\n", dir);
  fmt::print("  format version   {}\n", m.format_version);
  fmt::print("  step             {}\n", meta.step);
  fmt::print("  epoch            {} ({} batches of it done)\n", meta.epoch, meta.batch_in_epoch);
  nlohmann::json state = nlohmann::json::parse(meta.trainer_state, nullptr, /*allow_exceptions=*/false);
  // At an epoch boundary `stage` is the next epoch's; the weights trained at the stage of
  // the last epoch started (prev_stage), which `coconut eval --checkpoint` uses.
  const int trained = state.is_object() && state.contains("prev_stage") && state["prev_stage"].is_number_integer()
                          ? state["prev_stage"].get<int>()
                          : meta.stage;
  fmt::print("  stage            {}{}\n", meta.stage,
             trained >= 0 && trained != meta.stage ? fmt::format(" (the weights trained at stage {})", trained) : "");
  fmt::print("  milestone        {}\n", meta.milestone ? "yes (never deleted by retention)" : "no");
  fmt::print("  topology         {} ranks (pp {} x dp {})\n", m.world_size, meta.pp, meta.dp);
  fmt::print("  config digest    {}\n", meta.config_digest.empty() ? "-" : meta.config_digest);
  fmt::print("  model digest     {}\n", meta.model_digest.empty() ? "-" : meta.model_digest);
  // The word vocabulary is shown by its size: its text would bury the rest.
  std::string vocabulary = "-";
  if (state.is_object() && state.contains("word_tokenizer") && state["word_tokenizer"].is_string()) {
    const std::string text = state["word_tokenizer"].get<std::string>();
    vocabulary = fmt::format("{} bytes (export writes it as tokenizer.txt)", text.size());
    state.erase("word_tokenizer");
  }
  fmt::print("  trainer state    {}\n",
             meta.trainer_state.empty() ? "-" : state.is_discarded() ? meta.trainer_state : state.dump());
  fmt::print("  word vocabulary  {}\n", vocabulary);
  uint64_t total = 0;
  for (uint64_t b : m.file_bytes) total += b;
  fmt::print("shard files: {} ({})\n", m.files.size(), megabytes(total));
  for (size_t i = 0; i < m.files.size(); ++i) fmt::print("  {}  {} bytes\n", m.files[i], m.file_bytes[i]);
  fmt::print("tensors: {}\n", m.tensors.size());
  fmt::print("  {:<24} {:>14} {:>12} {:>7}\n", "name", "elements", "size", "slices");
  size_t slices = 0;
  for (const parallel::TensorInfo& t : m.tensors) {
    fmt::print("  {:<24} {:>14} {:>12} {:>7}\n", t.name, t.global_size, megabytes(t.global_size * 4),
               t.slices.size());
    slices += t.slices.size();
  }
  const std::vector<std::string> problems = parallel::verify_checkpoint(dir, m);
  if (problems.empty()) {
    fmt::print("checksums: all {} slices ok (CRC-32C)\n", slices);
    return 0;
  }
  fmt::print("checksums: {} of {} slices BAD\n", problems.size(), slices);
  for (const std::string& p : problems) fmt::print("  {}\n", p);
  return 1;
}

// The word vocabulary the trainer keeps in the trainer state (checked by loading it back
// and against the model's vocabulary size), or "" for a BPE run or an older checkpoint.
std::string word_vocabulary(const std::string& dir, const nlohmann::json& j, const model::GPT2Config& config) {
  if (!j.contains("word_tokenizer")) return "";
  COCONUT_CHECK(j["word_tokenizer"].is_string(), "{}/manifest.pb: trainer state word_tokenizer is not a string", dir);
  const std::string text = j["word_tokenizer"].get<std::string>();
  const curriculum::WordTokenizer words =
      curriculum::WordTokenizer::from_file_text(text, dir + "/manifest.pb (trainer state word_tokenizer)");
  COCONUT_CHECK(words.vocab_size() == config.vocab_size,
                "{}/manifest.pb: the word vocabulary has {} tokens, the model {} rows", dir, words.vocab_size(),
                config.vocab_size);
  return text;
}

int export_model(const std::string& dir, const std::string& to) {
  const parallel::Manifest m = parallel::read_manifest(dir);
  const nlohmann::json state = checkpoint_trainer_state(dir, m);
  const model::GPT2Config config = checkpoint_model_shape(dir, state);
  const model::ParamLayout layout(config);
  const parallel::TensorInfo& params = m.tensor("params");
  COCONUT_CHECK(params.global_size == layout.total(),
                "{}/manifest.pb: tensor 'params' has {} elements, the model shape in the trainer state needs {}", dir,
                params.global_size, layout.total());
  std::vector<float> weights(layout.total());
  parallel::read_tensor_range(dir, m, "params", 0, weights.size(), weights.data());

  const std::string vocabulary = word_vocabulary(dir, state, config);

  // Into a folder: TO itself, or for a file name the folder holding it. For a file name,
  // export into a temporary folder beside it, then move both files out, so that neither
  // an existing model.safetensors nor a half-written file is left behind.
  const fs::path out(to);
  const bool to_file = out.extension() == ".safetensors";
  const fs::path folder = !to_file ? out : out.has_parent_path() ? out.parent_path() : fs::path(".");
  if (!to_file) {
    model::export_hf_gpt2(to, config, weights.data());
  } else {
    const fs::path tmp = folder / (out.filename().string() + ".tmp-export");
    fs::remove_all(tmp);
    model::export_hf_gpt2(tmp.string(), config, weights.data());
    fs::rename(tmp / "model.safetensors", out);
    fs::rename(tmp / "config.json", folder / "config.json");
    fs::remove_all(tmp);
  }
  std::string written = fmt::format("{} and {}", to_file ? out.string() : (folder / "model.safetensors").string(),
                                    (folder / "config.json").string());
  if (!vocabulary.empty()) {
    write_file_atomic((folder / kWordVocabularyFile).string(), vocabulary);
    written += fmt::format(" (and its word vocabulary, {})", (folder / kWordVocabularyFile).string());
  }
  fmt::print("exported {} parameters of {} to {}\n", weights.size(), dir, written);
  return 0;
}

}  // namespace

int cmd_ckpt(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    fmt::print("{}", kHelp);
    return args.empty() ? 2 : 0;
  }
  const std::string& sub = args[0];
  if (sub == "inspect") {
    if (args.size() != 2) throw UsageError(fmt::format("ckpt inspect takes one directory\n{}", kHelp));
    return inspect(resolve_checkpoint(args[1]));
  }
  if (sub == "export") {
    std::string dir, to;
    for (size_t i = 1; i < args.size(); ++i) {
      if (args[i] == "--to") to = option_value(args, i);
      else if (dir.empty() && args[i].rfind("--", 0) != 0) dir = args[i];
      else throw UsageError(fmt::format("unknown argument '{}'\n{}", args[i], kHelp));
    }
    if (dir.empty() || to.empty()) throw UsageError(fmt::format("ckpt export needs DIR and --to OUT\n{}", kHelp));
    return export_model(resolve_checkpoint(dir), to);
  }
  throw UsageError(fmt::format("unknown ckpt command '{}'\n{}", sub, kHelp));
}

}  // namespace coconut::launcher
