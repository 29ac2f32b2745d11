// `coconut data`: make and inspect datasets before training. Subcommands:
//   generate prosqa|prontoqa   write a synthetic dataset (curriculum/*_generator.h)
//   stats                      statistics and invariant checks of a dataset file
//   convert-gsm8k              iCoT GSM8k text -> the official JSON format
//   split                      deterministic train/test split of a dataset file
//   tokenizer                  build a word-level tokenizer from dataset files
// Usage errors (unknown option, missing --out, bad number) throw UsageError: exit 2 before
// any file is read. Data errors (missing file, malformed JSON) throw coconut::Error naming
// the file: exit 1. Every output goes through PATH.tmp and a rename, and the temporaries
// are removed on failure, so a failed command leaves no output (whole or partial) behind.
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "curriculum/dataset.h"
#include "curriculum/dataset_stats.h"
#include "curriculum/prontoqa_generator.h"
#include "curriculum/prosqa_generator.h"
#include "curriculum/running_sum_generator.h"
#include "curriculum/word_tokenizer.h"
#include "launcher/commands.h"
#include "runtime/check.h"
#include "runtime/rng.h"

namespace coconut::launcher {

namespace {

using curriculum::Sample;

constexpr const char* kDataHelp =
    "usage: coconut data <subcommand> [options]   (coconut data <subcommand> --help for details)\n"
    "  generate prosqa  --count N --seed S --out FILE.json             ProsQA (the paper's Algorithm 1)\n"
    "  generate prontoqa --count N --seed S [--hops H] --out FILE.json  ProntoQA-style true/false items\n"
    "  stats FILE.json                       statistics; exit 1 if a ProsQA invariant is broken\n"
    "  convert-gsm8k IN.txt --out OUT.json   iCoT GSM8k text format -> JSON\n"
    "  split IN.json --out-train A.json --out-test B.json --test-count N --seed S\n"
    "  tokenizer IN.json [IN2.json ...] --out TOK.txt   word tokenizer over every text of the files\n";

constexpr const char* kGenerateHelp =
    "usage: coconut data generate prosqa   --count N --seed S --out FILE.json\n"
    "       coconut data generate prontoqa --count N --seed S [--hops H] --out FILE.json\n"
    "       coconut data generate running_sum --count N --seed S [--digits K] --out FILE.json\n"
    "  Writes items 0..N-1 of the seed's stream in the official JSON format. Item i depends only\n"
    "  on (seed, i), so a smaller count with the same seed gives a prefix of a larger one: use\n"
    "  different seeds for train and test, or generate once and `coconut data split`.\n"
    "  --hops H (prontoqa only, 1..7, default 5): rules on the chain from entity to answer.\n"
    "  --digits K (running_sum only, 2..64, default 5): digits to add modulo 10 (K - 1 steps).\n";

constexpr const char* kStatsHelp =
    "usage: coconut data stats FILE.json\n"
    "  Prints item count and steps per item; for ProsQA files (with graph fields) also nodes,\n"
    "  edges, shortest reasoning path, persons and the invariants of the official release; for\n"
    "  other files the mean question and answer lengths in words. Exit 1 if an invariant is\n"
    "  broken (the first violations are listed).\n";

constexpr const char* kConvertHelp =
    "usage: coconut data convert-gsm8k IN.txt --out OUT.json\n"
    "  Converts the iCoT text format (`question||<<a=b>> <<c=d>> #### answer`, one item a line)\n"
    "  to the official JSON format: steps are the <<...>> groups, the answer follows ####.\n";

constexpr const char* kSplitHelp =
    "usage: coconut data split IN.json --out-train A.json --out-test B.json --test-count N --seed S\n"
    "  Draws N test items by a seeded shuffle (Philox, so the same seed gives the same split on\n"
    "  every machine); the rest go to the train file. Both keep the items' order in IN.json.\n";

constexpr const char* kTokenizerHelp =
    "usage: coconut data tokenizer IN.json [IN2.json ...] --out TOK.txt\n"
    "  Builds a word-level tokenizer (curriculum/word_tokenizer.h) from every question, step and\n"
    "  answer of the files, plus \"\\n\" and \"### \" of the sample layout, and prints its size.\n";

// A subcommand's help: `--help` anywhere prints it and succeeds.
bool wants_help(const std::vector<std::string>& args) {
  return std::find(args.begin(), args.end(), "--help") != args.end() ||
         std::find(args.begin(), args.end(), "-h") != args.end();
}

// Help asked for goes to stdout (exit 0); help shown because arguments are missing is a
// usage error: stderr, exit 2.
int show_help(const char* help, bool asked) {
  fmt::print(asked ? stdout : stderr, "{}", help);
  return asked ? 0 : 2;
}

// Usage errors stay one line and point at the subcommand's help.
std::string see_help(const char* sub) { return fmt::format(" (see `coconut data {} --help`)", sub); }

// Seeds are 64-bit; option_int would cap them at 2^31.
uint64_t option_seed(const std::vector<std::string>& args, size_t& i) {
  const std::string name = args[i], text = option_value(args, i);
  const bool digits = !text.empty() && text.size() <= 20 &&
                      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  errno = 0;
  const unsigned long long v = digits ? std::strtoull(text.c_str(), nullptr, 10) : 0;
  if (!digits || errno == ERANGE)
    throw UsageError(fmt::format("option {} expects a non-negative integer below 2^64, got '{}'", name, text));
  return v;
}

// A positional argument (an input file) or, if it starts with "-", an unknown option.
void take_positional(const std::string& arg, std::vector<std::string>& inputs, const char* sub) {
  if (arg.starts_with("-")) throw UsageError(fmt::format("{}: unknown option '{}'{}", sub, arg, see_help(sub)));
  inputs.push_back(arg);
}

void require(bool present, const char* what, const char* sub) {
  if (!present) throw UsageError(fmt::format("{}: missing {}{}", sub, what, see_help(sub)));
}

// ---- writing outputs -------------------------------------------------------------------

// One output file: its final path and how to write its content to a given path.
struct Output {
  std::string path;
  std::function<void(const std::string& path)> write;
};

// Writes every output to PATH.tmp, then renames them all. If any write fails, every
// temporary is removed and no final path is touched; a rename failure removes the
// temporaries still pending.
void write_outputs(const std::vector<Output>& outputs) {
  const auto remove_tmps = [&](size_t from) {
    for (size_t k = from; k < outputs.size(); ++k) std::remove((outputs[k].path + ".tmp").c_str());
  };
  for (const Output& o : outputs) {
    try {
      o.write(o.path + ".tmp");
    } catch (...) {
      remove_tmps(0);
      throw;
    }
  }
  for (size_t k = 0; k < outputs.size(); ++k) {
    const std::string tmp = outputs[k].path + ".tmp";
    if (std::rename(tmp.c_str(), outputs[k].path.c_str()) != 0) {
      const int err = errno;
      remove_tmps(k);
      COCONUT_FAIL("cannot rename {} to {}: {}", tmp, outputs[k].path, std::strerror(err));
    }
  }
}

// The bytes save_dataset_json writes (same serializer), written to exactly `path` so that
// write_outputs controls the temporary name and its cleanup.
Output dataset_output(const std::string& path, const std::vector<Sample>& samples) {
  return {path, [&samples](const std::string& p) {
            std::ofstream out(p, std::ios::binary | std::ios::trunc);
            COCONUT_CHECK(out.good(), "{}: cannot open for writing: {}", p, std::strerror(errno));
            out << curriculum::dataset_to_json_text(samples) << '\n';
            out.close();
            COCONUT_CHECK(!out.fail(), "{}: write failed (disk full?)", p);
          }};
}

// ---- generate ----------------------------------------------------------------------------

int data_generate(const std::vector<std::string>& args) {
  if (args.size() < 2 || wants_help(args)) return show_help(kGenerateHelp, wants_help(args));
  const std::string kind = args[1];
  if (kind != "prosqa" && kind != "prontoqa" && kind != "running_sum")
    throw UsageError(fmt::format("generate: unknown dataset '{}' (expected prosqa, prontoqa or running_sum){}", kind,
                                 see_help("generate")));
  int count = -1, hops = 5, digits = 5;
  uint64_t seed = 0;
  bool have_seed = false;
  std::string out;
  for (size_t i = 2; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--count") count = option_int(args, i, 1, 100'000'000);
    else if (a == "--seed") seed = option_seed(args, i), have_seed = true;
    else if (a == "--hops" && kind == "prontoqa") hops = option_int(args, i, 1, curriculum::kMaxProntoQAHops);
    else if (a == "--digits" && kind == "running_sum") digits = option_int(args, i, 2, curriculum::kMaxRunningSumDigits);
    else if (a == "--out") out = option_value(args, i);
    else throw UsageError(fmt::format("generate {}: unknown option or argument '{}'{}", kind, a, see_help("generate")));
  }
  require(count > 0, "--count N", "generate");
  require(have_seed, "--seed S", "generate");
  require(!out.empty(), "--out FILE.json", "generate");

  std::vector<Sample> samples;
  std::string what;  // the dataset and its shape, for the summary line
  if (kind == "prosqa") {
    samples = curriculum::generate_prosqa(seed, static_cast<size_t>(count));
    what = fmt::format("ProsQA items (seed {})", seed);
  } else if (kind == "prontoqa") {
    samples = curriculum::generate_prontoqa(seed, static_cast<size_t>(count), {.hops = hops});
    what = fmt::format("ProntoQA items (seed {}, {} hops)", seed, hops);
  } else {
    samples = curriculum::generate_running_sum(seed, static_cast<size_t>(count), {.digits = digits});
    what = fmt::format("running-sum items (seed {}, {} digits)", seed, digits);
  }
  write_outputs({dataset_output(out, samples)});
  fmt::print("wrote {} {} to {}\n", samples.size(), what, out);
  return 0;
}

// ---- stats -------------------------------------------------------------------------------

size_t count_words(const std::string& text) {
  std::istringstream in(text);
  size_t n = 0;
  for (std::string w; in >> w;) ++n;
  return n;
}

// The summary of a dataset without graphs (GSM8k, ProntoQA), and the checks that apply to
// every dataset: a question, an answer and no empty step. Returns the number of items
// that break them; prints the first few.
size_t print_plain_stats(const std::vector<Sample>& samples, const std::string& name) {
  curriculum::Summary steps, question_words, answer_words;
  std::vector<std::string> violations;
  size_t bad_items = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    const Sample& s = samples[i];
    steps.add(static_cast<double>(s.steps.size()));
    question_words.add(static_cast<double>(count_words(s.question)));
    answer_words.add(static_cast<double>(count_words(s.answer)));
    std::string why;
    if (count_words(s.question) == 0) why = "empty question";
    else if (count_words(s.answer) == 0) why = "empty answer";
    else if (std::any_of(s.steps.begin(), s.steps.end(), [](const std::string& t) { return count_words(t) == 0; }))
      why = "an empty step";
    if (why.empty()) continue;
    ++bad_items;
    if (violations.size() < 10) violations.push_back(fmt::format("item {}: {}", i, why));
  }
  fmt::print("{}: {} items\n", name, samples.size());
  if (samples.empty()) return 0;
  const auto row = [](const char* label, const curriculum::Summary& s) {
    fmt::print("  {:<24} mean {:7.3f}   min {:4g}   max {:4g}\n", label, s.mean, s.min, s.max);
  };
  row("steps per item", steps);
  row("question length (words)", question_words);
  row("answer length (words)", answer_words);
  if (bad_items == 0) return 0;
  fmt::print("  invariants: {} items break them:\n", bad_items);
  for (const std::string& v : violations) fmt::print("    {}\n", v);
  if (bad_items > violations.size()) fmt::print("    ... and {} more\n", bad_items - violations.size());
  return bad_items;
}

int data_stats(const std::vector<std::string>& args) {
  if (args.size() < 2 || wants_help(args)) return show_help(kStatsHelp, wants_help(args));
  std::vector<std::string> inputs;
  for (size_t i = 1; i < args.size(); ++i) take_positional(args[i], inputs, "stats");
  if (inputs.size() != 1)
    throw UsageError(fmt::format("stats takes one dataset file, got {}{}", inputs.size(), see_help("stats")));
  const std::string& path = inputs[0];

  const std::vector<Sample> samples = curriculum::load_dataset_json(path);
  const curriculum::DatasetStats st = curriculum::compute_dataset_stats(samples);
  if (!st.prosqa) {
    const size_t bad = print_plain_stats(samples, path);
    if (bad == 0) return 0;
    fmt::print(stderr, "coconut data stats: {}: {} items break the dataset invariants\n", path, bad);
    return 1;
  }
  fmt::print("{}", curriculum::format_stats(st, path));
  if (st.prosqa->items_with_violations == 0) return 0;
  fmt::print(stderr, "coconut data stats: {}: {} items break the ProsQA invariants (listed above)\n", path,
             st.prosqa->items_with_violations);
  return 1;
}

// ---- convert-gsm8k -----------------------------------------------------------------------

int data_convert_gsm8k(const std::vector<std::string>& args) {
  if (args.size() < 2 || wants_help(args)) return show_help(kConvertHelp, wants_help(args));
  std::vector<std::string> inputs;
  std::string out;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--out") out = option_value(args, i);
    else take_positional(args[i], inputs, "convert-gsm8k");
  }
  if (inputs.size() != 1)
    throw UsageError(
        fmt::format("convert-gsm8k takes one input file, got {}{}", inputs.size(), see_help("convert-gsm8k")));
  require(!out.empty(), "--out OUT.json", "convert-gsm8k");

  const std::vector<Sample> samples = curriculum::convert_icot_text(inputs[0]);
  write_outputs({dataset_output(out, samples)});
  fmt::print("converted {} items from {} to {}\n", samples.size(), inputs[0], out);
  return 0;
}

// ---- split -------------------------------------------------------------------------------

constexpr uint64_t kSplitStream = 0x44415441534C4954ull;  // "DATASLIT": its own Philox stream

int data_split(const std::vector<std::string>& args) {
  if (args.size() < 2 || wants_help(args)) return show_help(kSplitHelp, wants_help(args));
  std::vector<std::string> inputs;
  std::string out_train, out_test;
  int test_count = -1;
  uint64_t seed = 0;
  bool have_seed = false;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--out-train") out_train = option_value(args, i);
    else if (a == "--out-test") out_test = option_value(args, i);
    else if (a == "--test-count") test_count = option_int(args, i, 0, 2'000'000'000);
    else if (a == "--seed") seed = option_seed(args, i), have_seed = true;
    else take_positional(a, inputs, "split");
  }
  if (inputs.size() != 1)
    throw UsageError(fmt::format("split takes one input file, got {}{}", inputs.size(), see_help("split")));
  require(!out_train.empty(), "--out-train A.json", "split");
  require(!out_test.empty(), "--out-test B.json", "split");
  require(test_count >= 0, "--test-count N", "split");
  require(have_seed, "--seed S", "split");
  if (out_train == out_test) throw UsageError(fmt::format("--out-train and --out-test are both '{}'", out_test));

  const std::vector<Sample> samples = curriculum::load_dataset_json(inputs[0]);
  COCONUT_CHECK(static_cast<size_t>(test_count) <= samples.size(),
                "{}: has {} items, fewer than --test-count {}", inputs[0], samples.size(), test_count);
  // Fisher-Yates over the item indices; the first test_count of the permutation are the
  // test items. Each part is then put back in file order, so the split is a pure
  // function of (file, seed, N) and easy to diff.
  std::vector<size_t> order(samples.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  CounterRng rng(seed, {kSplitStream});
  for (size_t k = order.size(); k > 1; --k) std::swap(order[k - 1], order[rng.below(k)]);
  std::vector<bool> is_test(samples.size(), false);
  for (int k = 0; k < test_count; ++k) is_test[order[k]] = true;
  std::vector<Sample> train, test;
  for (size_t k = 0; k < samples.size(); ++k) (is_test[k] ? test : train).push_back(samples[k]);

  write_outputs({dataset_output(out_train, train), dataset_output(out_test, test)});
  fmt::print("split {} items of {} (seed {}): {} train -> {}, {} test -> {}\n", samples.size(), inputs[0], seed,
             train.size(), out_train, test.size(), out_test);
  return 0;
}

// ---- tokenizer ---------------------------------------------------------------------------

int data_tokenizer(const std::vector<std::string>& args) {
  if (args.size() < 2 || wants_help(args)) return show_help(kTokenizerHelp, wants_help(args));
  std::vector<std::string> inputs;
  std::string out;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--out") out = option_value(args, i);
    else take_positional(args[i], inputs, "tokenizer");
  }
  require(!inputs.empty(), "input dataset file(s)", "tokenizer");
  require(!out.empty(), "--out TOK.txt", "tokenizer");

  // The separators of the sample layout (DESIGN.md 2.1) come first so their tokens exist
  // even if no text of the files contains them.
  std::vector<std::string> texts = {"\n", "### "};
  size_t items = 0;
  for (const std::string& path : inputs) {
    for (Sample& s : curriculum::load_dataset_json(path)) {
      texts.push_back(std::move(s.question));
      for (std::string& step : s.steps) texts.push_back(std::move(step));
      texts.push_back(std::move(s.answer));
      ++items;
    }
  }
  const curriculum::WordTokenizer tok = curriculum::WordTokenizer::build(texts);
  write_outputs({{out, [&tok](const std::string& p) { tok.save(p); }}});
  fmt::print("vocabulary size {} (from {} items in {} files), written to {}\n", tok.vocab_size(), items,
             inputs.size(), out);
  return 0;
}

}  // namespace

int cmd_data(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") return show_help(kDataHelp, !args.empty());
  const std::string& sub = args[0];
  if (sub == "generate") return data_generate(args);
  if (sub == "stats") return data_stats(args);
  if (sub == "convert-gsm8k") return data_convert_gsm8k(args);
  if (sub == "split") return data_split(args);
  if (sub == "tokenizer") return data_tokenizer(args);
  throw UsageError(fmt::format("unknown subcommand '{}' (expected generate, stats, convert-gsm8k, split or "
                               "tokenizer; see `coconut data --help`)",
                               sub));
}

}  // namespace coconut::launcher
