// `coconut eval RUN_DIR [options]`: accuracy of a run's model (final, best, or one of its
// checkpoints) on a dataset, by batched greedy generation with the run's method and a
// curriculum stage (DESIGN.md 2.4), written as a JSON report next to the run's own
// (eval_<dataset>.json). With
// --question, the model's answer to questions typed on the command line instead (no
// reference, no accuracy), with each continuous thought read as tokens.
// Also the run helpers that `coconut probe` shares (see commands.h).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>

#include "curriculum/evaluation.h"
#include "curriculum/word_tokenizer.h"
#include "launcher/commands.h"
#include "launcher/device_step.h"
#include "launcher/run_output.h"
#include "launcher/train_loop.h"
#include "launcher/trainer.h"
#include "parallel/comm.h"
#include "runtime/check.h"
#include "runtime/log.h"
#include "runtime/threads.h"

namespace coconut::launcher {

namespace fs = std::filesystem;

int run_final_stage(const LoadedRun& run) {
  if (run.best || !run.checkpoint_dir.empty()) return run.final_stage;  // best.json's, the checkpoint's
  // config.yaml is the file the run was started from; --set overrides (train.epochs=1)
  // are not in it, so the metrics, which record each epoch's stage, are preferred.
  const fs::path metrics = fs::path(run.config.run_dir) / kMetricsFile;
  if (!fs::exists(metrics)) return run.final_stage;
  const std::vector<MetricsRow> rows = read_metrics(metrics.string());
  const auto last_epoch = std::find_if(rows.rbegin(), rows.rend(), [](const MetricsRow& r) { return !r.is_step; });
  if (last_epoch == rows.rend()) return run.final_stage;
  const auto stage = last_epoch->json.find("stage");
  COCONUT_CHECK(stage != last_epoch->json.end() && stage->is_number_integer(), "{}:{}: the last epoch row has no "
                "integer 'stage'", metrics.string(), last_epoch->line);
  return stage->get<int>();
}

EvalData run_eval_data(const LoadedRun& run, const std::string& data_file) {
  EvalData d;
  if (!data_file.empty()) {
    d.samples = curriculum::load_dataset_json(data_file);
    d.name = fs::path(data_file).stem().string();
    return d;
  }
  const DataConfig& dc = run.config.data;
  COCONUT_CHECK(!dc.valid_file.empty() || dc.kind != "file",
                "run '{}' has no validation set (data.kind is 'file' without data.valid_file): pass --data FILE.json",
                run.config.run_dir);
  // Generated splits are pure functions of (seed, index): regenerating gives the same items.
  RunData rd = load_run_data(dc);
  d.samples = std::move(rd.valid);
  d.name = fs::path(rd.valid_name).stem().string();
  return d;
}

// The words of `text` a word tokenizer does not know (they become <unk>); none for a
// byte-level BPE, which writes any text.
std::vector<std::string> unknown_words(const curriculum::Tokenizer& tok, const std::string& text) {
  std::vector<std::string> unknown;
  const auto* words = dynamic_cast<const curriculum::WordTokenizer*>(&tok);
  if (!words) return unknown;
  for (const std::string& w : curriculum::WordTokenizer::split(text))
    if (!words->find_token(w)) unknown.push_back(w);
  return unknown;
}

// A thought's most probable tokens as printed: ` "token" prob` each.
std::string thought_line(const std::vector<curriculum::ThoughtToken>& top) {
  std::string line;
  for (const curriculum::ThoughtToken& t : top) line += fmt::format(" {:?} {:.3f}", t.token, t.prob);
  return line;
}

// --question: each question, the thoughts read as tokens, what was generated and the
// answer extracted from it.
void print_answers(const std::vector<std::string>& questions, const curriculum::EvalResult& r) {
  for (size_t i = 0; i < r.items.size(); ++i) {
    const curriculum::EvalItem& item = r.items[i];
    fmt::print("question {}: {}\n", i + 1, questions[i]);
    fmt::print("  continuous thoughts: {}\n", item.thoughts);
    for (size_t k = 0; k < item.thought_tokens.size(); ++k)
      fmt::print("  thought {}:{}\n", k + 1, thought_line(item.thought_tokens[k]));
    fmt::print("  generated: {:?}\n", item.generated);
    fmt::print("  answer: {}\n", item.prediction);
  }
}

std::string weights_suffix(const LoadedRun& run) {
  if (run.best) return "_best";
  if (!run.checkpoint_dir.empty()) return fmt::format("_step-{:08d}", run.checkpoint_step);
  return "";
}

std::string weights_label(const LoadedRun& run) {
  if (run.best) return fmt::format(" (its best model, {})", kBestModelDir);
  if (!run.checkpoint_dir.empty()) return fmt::format(" (its checkpoint {}, step {})", run.checkpoint_dir,
                                                      run.checkpoint_step);
  return "";
}

int run_on_ranks(const std::function<int(parallel::Communicator& world, int local_rank)>& body) {
  parallel::MpiRuntime mpi(nullptr, nullptr);
  const std::unique_ptr<parallel::Communicator> world = parallel::MpiCommunicator::world();
  init_logging(world->rank(), world->size(), "warn");
  try {
    return body(*world, mpi.local_rank());
  } catch (const coconut::Error& e) {
    if (world->size() > 1) parallel::abort_all(e.what());  // one rank's failure stops every rank
    throw;
  }
}

int cmd_eval(const std::vector<std::string>& args) {
  const char* help =
      "usage: coconut eval RUN_DIR [--data FILE.json] [--stage K] [--out REPORT.json]\n"
      "                    [--batch-size N] [--max-new-tokens N] [--max-items N] [--device cpu|cuda]\n"
      "                    [--thought-tokens K] [--thought-source own|zero|other] [--best | --checkpoint C]\n"
      "                    [--threads N]\n"
      "                    [--question TEXT ...]\n"
      "  Greedy-decodes every item with the run's final model (or --best's, --checkpoint's; thoughts\n"
      "  fed back for coconut)\n"
      "  and compares answers by exact match. Prints accuracy and mean generated tokens.\n"
      "  Under mpirun -np N the ranks share the batches; rank 0 writes the same report.\n"
      "  --data      dataset in the official JSON format (default: the run's validation set)\n"
      "  --question  instead of a dataset: answer this question (repeatable; no accuracy). Prints\n"
      "              each thought's most probable tokens (5 unless --thought-tokens), the generated\n"
      "              text and the answer; writes a report only with --out\n"
      "  --stage     curriculum stage of the prompt: K latent steps (default: the run's last)\n"
      "  --out       report path (default: RUN_DIR/eval_<dataset>.json)\n"
      "  --batch-size, --max-new-tokens, --max-items (0 = all): default to the run's eval settings\n"
      "  --device    where to decode (default: the run's train.device; cuda in its train.precision)\n"
      "  --thought-tokens K  also read every continuous thought through the LM head: its K most\n"
      "              probable tokens go into the report (thought_tokens), the first items' are printed\n"
      "              (default: the run's eval.thought_tokens)\n"
      "  --thought-source  what each continuous thought is: own (default: the item's hidden state),\n"
      "              zero (a zero vector) or other (the hidden state of the next item of the batch that\n"
      "              takes a thought at that column): does the answer depend on the thoughts? The\n"
      "              report defaults to RUN_DIR/eval_<dataset>_thoughts-<source>.json and, for other,\n"
      "              names each item's donors (thought_donors)\n"
      "  --best      the run's best validation model (RUN_DIR/best_model, eval.keep_best) at its stage;\n"
      "              the report defaults to RUN_DIR/eval_<dataset>_best.json\n"
      "  --checkpoint  the weights of one of the run's checkpoints, also of a run in progress or\n"
      "              stopped: latest, a step number, or a checkpoint path; at the stage of its epoch;\n"
      "              the report defaults to RUN_DIR/eval_<dataset>_step-NNNNNNNN.json\n"
      "  --threads   CPU threads (default: the run's run.threads; 0 = every core)\n";
  if (args.empty() || args[0] == "--help") {
    fmt::print("{}", help);
    return args.empty() ? 2 : 0;
  }
  const std::string run_dir = args[0];
  if (run_dir.rfind("--", 0) == 0) throw UsageError(fmt::format("the first argument must be RUN_DIR\n{}", help));
  std::string data_file, out_path;
  std::string device;
  model::ThoughtSource source = model::ThoughtSource::own;
  int stage = -1, batch_size = -1, max_new_tokens = -1, max_items = -1, thought_tokens = -1, threads = -1;
  bool best = false;
  std::string checkpoint;
  std::vector<std::string> questions;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--data") data_file = option_value(args, i);
    else if (a == "--question") questions.push_back(option_value(args, i));
    else if (a == "--out") out_path = option_value(args, i);
    else if (a == "--stage") stage = option_int(args, i, 0, 1000);
    else if (a == "--batch-size") batch_size = option_int(args, i, 1, 1 << 16);
    else if (a == "--max-new-tokens") max_new_tokens = option_int(args, i, 1, 1 << 16);
    else if (a == "--max-items") max_items = option_int(args, i, 0, 1 << 30);
    else if (a == "--device") device = option_value(args, i);
    else if (a == "--thought-tokens") thought_tokens = option_int(args, i, 1, 1000);
    else if (a == "--thought-source") {
      const std::string name = option_value(args, i);
      try {
        source = model::parse_thought_source(name);
      } catch (const Error&) {
        throw UsageError(fmt::format("--thought-source must be own, zero or other (got '{}')\n{}", name, help));
      }
    }
    else if (a == "--best") best = true;
    else if (a == "--checkpoint") checkpoint = option_value(args, i);
    else if (a == "--threads") threads = option_int(args, i, 0, 1024);
    else throw UsageError(fmt::format("unknown option '{}'\n{}", a, help));
  }

  if (!device.empty() && device != "cpu" && device != "cuda")
    throw UsageError(fmt::format("--device must be cpu or cuda (got '{}')\n{}", device, help));
  if (best && !checkpoint.empty())
    throw UsageError(fmt::format("--best and --checkpoint name two models: give one\n{}", help));
  if (!questions.empty() && (!data_file.empty() || max_items >= 0))
    throw UsageError(fmt::format("--question answers the questions given: not with --data or --max-items\n{}", help));
  // One process, or the ranks of an MPI job (mpirun / srun): each decodes every size-th
  // batch (curriculum::EvalShard), and rank 0 joins the shares, writes the report and
  // prints: one process's result, bit for bit.
  return run_on_ranks([&](parallel::Communicator& world, int local_rank) {
    const int rank = world.rank(), ranks = world.size();
    const LoadedRun run = load_run(run_dir, {best, checkpoint});
    const TrainConfig& c = run.config;
    set_num_threads(threads >= 0 ? threads : c.threads);
    if (stage < 0) stage = run_final_stage(run);
    if (batch_size < 0) batch_size = c.eval_batch_size;
    if (max_new_tokens < 0) max_new_tokens = c.max_new_tokens;
    if (max_items < 0) max_items = c.eval_max_items;
    if (thought_tokens < 0)
      thought_tokens = !c.curriculum.feeds_back() ? 0 : !questions.empty() ? 5 : c.eval_thought_tokens;
    EvalData data;
    if (questions.empty()) {
      data = run_eval_data(run, data_file);
    } else {
      data.name = "question";
      for (const std::string& q : questions) {
        COCONUT_CHECK(!q.empty(), "--question: the question is empty");
        const std::vector<std::string> unknown = unknown_words(*run.tokenizer, q);
        if (!unknown.empty())
          fmt::print("note: {} word(s) of '{}' are not in the run's vocabulary and become <unk>: {}\n", unknown.size(),
                     q, fmt::join(unknown, ", "));
        // No reference steps: the evaluation prompt caps the thoughts at a sample's step
        // count (build_eval_prompt), so the question gets max_latent_stage placeholder
        // steps, and with them the stage's min(stage, max_latent_stage) x c thoughts.
        data.samples.push_back({q, std::vector<std::string>(size_t(c.curriculum.max_latent_stage), ""), "",
                                std::nullopt});
      }
    }
    COCONUT_CHECK(!data.samples.empty(), "the evaluation set '{}' is empty", data.name);
    if (max_items > 0 && static_cast<int>(data.samples.size()) > max_items) data.samples.resize(max_items);
    const std::string thoughts = model::thought_source_name(source);
    const bool intervene = source != model::ThoughtSource::own;
    if (out_path.empty() && questions.empty())
      out_path = (fs::path(run_dir) / fmt::format("eval_{}{}{}.json", data.name, weights_suffix(run),
                                                  intervene ? "_thoughts-" + thoughts : std::string()))
                     .string();

    if (device.empty()) device = c.device;
    COCONUT_CHECK(!intervene || c.curriculum.feeds_back(),
                  "--thought-source {}: method '{}' has no continuous thoughts", thoughts,
                  curriculum::method_name(c.curriculum.method));
    const std::unique_ptr<model::Decoder> decoder = device == "cuda"
                                                        ? make_device_decoder(c, *run.model, source, local_rank)
                                                        : std::make_unique<model::CpuDecoder>(*run.model, source);
    curriculum::ThoughtDecoder decode_thought;
    if (thought_tokens > 0) {
      COCONUT_CHECK(c.curriculum.feeds_back(), "--thought-tokens: method '{}' has no continuous thoughts",
                    curriculum::method_name(c.curriculum.method));
      decode_thought = curriculum::top_thought_tokens(*run.model, *run.tokenizer, thought_tokens);
    }
    curriculum::EvalResult r = curriculum::evaluate(*decoder, *run.tokenizer, data.samples, c.curriculum, stage,
                                                    batch_size, max_new_tokens, run.eot.get(), {rank, ranks},
                                                    decode_thought);
    // Thoughts swapped and kept alone under `other`, summed over the ranks.
    int64_t routed[2] = {0, 0};
    if (const model::ThoughtRouting* routing = decoder->thought_routing())
      routed[0] = routing->swapped(), routed[1] = routing->kept_alone();
    if (ranks > 1) {
      r = join_eval_shares(world, parallel::all_ranks(world), std::move(r));
      world.all_reduce_sum(routed, 2);
    }
    if (rank != 0) return 0;
    if (!out_path.empty()) curriculum::write_eval_report(out_path, r, data.name, thoughts);
    const std::string threads_text = fmt::format("{} thread{}", num_threads(), num_threads() == 1 ? "" : "s");
    fmt::print("run {}{}: method {}, c={}, stage {}; {} {}; decoded on {}{}\n", run_dir, weights_label(run),
               curriculum::method_name(c.curriculum.method), c.curriculum.c_thought, stage, r.total,
               questions.empty() ? "items of " + data.name : std::string(r.total == 1 ? "question" : "questions"),
               device == "cuda" ? fmt::format("cuda ({})", c.precision)
                                : ranks == 1 ? fmt::format("the CPU ({})", threads_text)
                                             : fmt::format("the CPU ({} ranks, {} each)", ranks, threads_text),
               device == "cuda" && ranks > 1 ? fmt::format(", {} ranks", ranks) : std::string());
    if (source == model::ThoughtSource::zero) fmt::print("thoughts: zero vectors in place of the hidden states\n");
    if (source == model::ThoughtSource::other)
      fmt::print("thoughts: another item's hidden state ({} swapped, {} kept: no other item took one there)\n",
                 routed[0], routed[1]);
    if (!questions.empty()) {
      print_answers(questions, r);
      if (!out_path.empty()) fmt::print("report: {}\n", out_path);
      return 0;
    }
    fmt::print("accuracy {:.4f} ({}/{}), mean generated tokens {:.2f}\n", r.accuracy(), r.correct, r.total,
               r.mean_generated_tokens);
    if (run.eot) fmt::print("<eot> by the learned classifier: mean thoughts {:.2f}\n", r.mean_thoughts);
    // The first items' thoughts read as tokens (all of them are in the report).
    for (size_t i = 0; i < std::min<size_t>(3, r.items.size()) && thought_tokens > 0; ++i)
      for (size_t k = 0; k < r.items[i].thought_tokens.size(); ++k)
        fmt::print("item {} thought {}:{}\n", i, k + 1, thought_line(r.items[i].thought_tokens[k]));
    fmt::print("report: {}\n", out_path);
    return 0;
  });
}

}  // namespace coconut::launcher
