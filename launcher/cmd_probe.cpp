// `coconut probe RUN_DIR [options]`: the latent-search probe of the paper (DESIGN.md
// 2.5, curriculum/probe.h) over ProsQA items: per thought count k, the values the model
// gives the frontier nodes (top ranks averaged over items) and value versus node height.
#include <fmt/format.h>

#include <filesystem>

#include "curriculum/probe.h"
#include "launcher/commands.h"
#include "launcher/plot.h"
#include "launcher/trainer.h"
#include "parallel/comm.h"
#include "runtime/check.h"
#include "runtime/log.h"
#include "runtime/threads.h"

namespace coconut::launcher {

namespace fs = std::filesystem;

namespace {

std::string fmt_mean(int count, double value) { return count ? fmt::format("{:.4f}", value) : std::string("-"); }

void print_thought(const curriculum::ThoughtSummary& s) {
  fmt::print("\nk={} ({} thought{}, forced prefix {}): {} items, mean frontier size {:.2f}, mean frontier mass {:.4f}\n",
             s.k, s.n_thoughts, s.n_thoughts == 1 ? "" : "s", s.k == 0 ? "'<root> is a'" : "'Every'", s.items,
             s.mean_frontier_size, s.mean_frontier_mass);
  if (s.items == 0) return;
  fmt::print("  | rank | items | mean value | mean cumulative |\n  |---|---|---|---|\n");
  for (size_t r = 0; r < s.mean_rank_value.size(); ++r)
    fmt::print("  | {} | {} | {} | {:.4f} |\n", r + 1, s.rank_count[r], fmt_mean(s.rank_count[r], s.mean_rank_value[r]),
               s.mean_top_cumulative[r]);
  fmt::print("  | height | nodes | mean value | reaching target (n) | other (n) |\n  |---|---|---|---|---|\n");
  for (const curriculum::HeightStats& h : s.by_height) {
    const int other = h.count - h.count_reaching;
    fmt::print("  | {} | {} | {:.4f} | {} ({}) | {} ({}) |\n", h.height, h.count, h.mean_value,
               fmt_mean(h.count_reaching, h.mean_value_reaching), h.count_reaching,
               fmt_mean(other, h.mean_value_other), other);
  }
}

// --plot: the paper's Figure 8 axis: per k, the cumulative value of the 1, 2, 3 highest
// frontier nodes and the whole frontier's value, averaged over items.
void plot_frontier_values(const std::string& path, const std::vector<curriculum::ThoughtSummary>& summary) {
  PlotPanel panel{"frontier node values after k continuous thoughts", "k (thoughts)", "mean value", {}, {}, true, {0.0}};
  const size_t ranks = summary.empty() ? 0 : summary.front().mean_top_cumulative.size();
  for (size_t r = 0; r < ranks; ++r) panel.series.push_back({fmt::format("top-{} cumulative", r + 1), {}, {}});
  panel.series.push_back({"whole frontier", {}, {}});
  for (const curriculum::ThoughtSummary& s : summary) {
    if (s.items == 0) continue;
    for (size_t r = 0; r < ranks; ++r) {
      panel.series[r].x.push_back(s.k);
      panel.series[r].y.push_back(s.mean_top_cumulative[r]);
    }
    panel.series.back().x.push_back(s.k);
    panel.series.back().y.push_back(s.mean_frontier_mass);
  }
  write_plot_png(path, {panel});
}

}  // namespace

int cmd_probe(const std::vector<std::string>& args) {
  const char* help =
      "usage: coconut probe RUN_DIR [--data FILE.json] [--items N] [--thoughts K] [--out PROBE.json] [--plot FILE.png]\n"
      "                     [--best | --checkpoint C] [--threads N]\n"
      "  For each ProsQA item and k = 0..K latent steps: runs question <bot> <latent>*(k*c),\n"
      "  forces <eot>, and reads the probability of each frontier node's concept as the next\n"
      "  step's concept ('<root> is a' [C] at k=0, 'Every' [C] at k>=1). Prints, per k, the\n"
      "  top-3 frontier values averaged over items and the mean value by node height.\n"
      "  --data      ProsQA file with graph fields (default: the run's validation set)\n"
      "  --items     items to probe, from the start (default 100; 0 = all)\n"
      "  --thoughts  largest k (default: the run's curriculum.max_latent_stage)\n"
      "  --out       report path (default: RUN_DIR/probe_<dataset>.json)\n"
      "  --plot      also draw the top-1/2/3 cumulative and whole-frontier values against k to a PNG\n"
      "  --best      the run's best validation model (RUN_DIR/best_model, eval.keep_best)\n"
      "  --checkpoint  the weights of one of the run's checkpoints, also of a run in progress or\n"
      "              stopped: latest, a step number, or a checkpoint path\n"
      "              (reports: RUN_DIR/probe_<dataset>_best.json, _step-NNNNNNNN.json)\n"
      "  --threads   CPU threads (default: the run's run.threads; 0 = every core)\n";
  if (args.empty() || args[0] == "--help") {
    fmt::print("{}", help);
    return args.empty() ? 2 : 0;
  }
  const std::string run_dir = args[0];
  if (run_dir.rfind("--", 0) == 0) throw UsageError(fmt::format("the first argument must be RUN_DIR\n{}", help));
  std::string data_file, out_path, plot_path;
  std::string checkpoint;
  bool best = false;
  int items = 100, thoughts = -1, threads = -1;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--data") data_file = option_value(args, i);
    else if (a == "--out") out_path = option_value(args, i);
    else if (a == "--plot") plot_path = option_value(args, i);
    else if (a == "--items") items = option_int(args, i, 0, 1 << 30);
    else if (a == "--thoughts") thoughts = option_int(args, i, 0, 64);
    else if (a == "--threads") threads = option_int(args, i, 0, 1024);
    else if (a == "--best") best = true;
    else if (a == "--checkpoint") checkpoint = option_value(args, i);
    else throw UsageError(fmt::format("unknown option '{}'\n{}", a, help));
  }

  if (best && !checkpoint.empty())
    throw UsageError(fmt::format("--best and --checkpoint name two models: give one\n{}", help));
  // One process, or the ranks of an MPI job (mpirun / srun): rank r probes the items
  // r, r + N, ..., and rank 0 gathers them, writes the report and prints.
  return run_on_ranks([&](parallel::Communicator& world, int /*local_rank*/) {
    const int rank = world.rank(), ranks = world.size();
    const LoadedRun run = load_run(run_dir, {best, checkpoint});
    const TrainConfig& c = run.config;
    set_num_threads(threads >= 0 ? threads : c.threads);
    if (thoughts < 0) thoughts = c.curriculum.max_latent_stage;
    EvalData data = run_eval_data(run, data_file);
    if (items > 0 && static_cast<int>(data.samples.size()) > items) data.samples.resize(items);
    COCONUT_CHECK(!data.samples.empty(), "the dataset '{}' is empty", data.name);
    if (out_path.empty())
      out_path = (fs::path(run_dir) / fmt::format("probe_{}{}.json", data.name, weights_suffix(run))).string();

    const std::string where = data_file.empty() ? data.name : data_file;  // for error messages
    std::vector<curriculum::ProbeResult> mine;
    for (size_t i = size_t(rank); i < data.samples.size(); i += size_t(ranks)) {
      try {
        mine.push_back(curriculum::probe_prosqa(*run.model, *run.tokenizer, data.samples[i], c.curriculum, thoughts));
      } catch (const coconut::Error& e) {
        COCONUT_FAIL("{}, item {}: {}", where, i, e.what());
      }
    }
    std::vector<curriculum::ProbeResult> results = std::move(mine);
    if (ranks > 1) {  // item i is the (i / N)-th of rank i mod N
      std::vector<std::vector<curriculum::ProbeResult>> shares;
      for (const std::string& text : parallel::gather_strings_to_all(world, parallel::all_ranks(world),
                                                                     curriculum::probe_results_to_json(results)))
        shares.push_back(curriculum::probe_results_from_json(text));
      results.clear();
      for (size_t i = 0; i < data.samples.size(); ++i)
        results.push_back(std::move(shares.at(i % size_t(ranks)).at(i / size_t(ranks))));
    }
    if (rank != 0) return 0;
    const auto summary = curriculum::summarize_probes(results, 3);
    curriculum::write_probe_report(out_path, summary, results, data.name);

    fmt::print("run {}{}: method {}, c={}, trained to stage {}; {} items of {}, k = 0..{}{}\n", run_dir,
               weights_label(run),
               curriculum::method_name(c.curriculum.method), c.curriculum.c_thought, run_final_stage(run),
               results.size(), data.name, thoughts, ranks > 1 ? fmt::format(" ({} ranks)", ranks) : std::string());
    for (const auto& s : summary) print_thought(s);
    fmt::print("\nreport: {}\n", out_path);
    if (!plot_path.empty()) {
      plot_frontier_values(plot_path, summary);
      fmt::print("plot: {}\n", plot_path);
    }
    return 0;
  });
}

}  // namespace coconut::launcher
