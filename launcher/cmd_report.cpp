// `coconut report RUN_DIR [--out FILE.png] [--x epoch|step]`: loss and accuracy curves
// of a run from its metrics.jsonl, with curriculum stage boundaries as dashed vertical
// lines, drawn to a PNG (launcher/plot.h), and a short text summary on stdout.
//
// metrics.jsonl rows: without a "kind" field (or "kind": "epoch") a row is an epoch's
// summary (epoch, stage, step, loss, tokens_per_s, valid_accuracy, ...); "kind": "step"
// rows are single optimizer steps (run_output.h); other kinds and unknown fields are
// ignored, and a row without a field is left out of that field's curve.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "launcher/commands.h"
#include "launcher/plot.h"
#include "launcher/run_output.h"
#include "runtime/check.h"

namespace coconut::launcher {

namespace fs = std::filesystem;

namespace {

// A numeric field: nullopt when absent or null; any other non-number is a corrupt file.
std::optional<double> number(const MetricsRow& r, const std::string& key, const std::string& file) {
  auto it = r.json.find(key);
  if (it == r.json.end() || it->is_null()) return std::nullopt;
  COCONUT_CHECK(it->is_number(), "{}:{}: '{}' must be a number, got {}", file, r.line, key, it->dump());
  return it->get<double>();
}

// Keys of epoch rows whose name ends with `suffix` and that hold a number somewhere.
std::vector<std::string> keys_ending_with(const std::vector<MetricsRow>& rows, const std::string& suffix) {
  std::vector<std::string> keys;
  for (const MetricsRow& r : rows) {
    if (r.is_step) continue;
    for (const auto& [k, v] : r.json.items())
      if (k.ends_with(suffix) && v.is_number() && std::find(keys.begin(), keys.end(), k) == keys.end())
        keys.push_back(k);
  }
  return keys;
}

// An integer field for the summary text; -1 when absent.
int int_field(const MetricsRow& r, const std::string& key, const std::string& file) {
  const std::optional<double> v = number(r, key, file);
  return v ? static_cast<int>(*v) : -1;
}

// The text summary: the last epoch row's loss, the best of each accuracy, the epochs of each stage.
void print_summary(const std::string& run_dir, const std::vector<MetricsRow>& rows, const std::string& file) {
  int step_rows = 0;
  for (const MetricsRow& r : rows) step_rows += r.is_step;
  fmt::print("run {}: {} rows in metrics.jsonl ({} per-step)\n", run_dir, rows.size(), step_rows);
  const MetricsRow* last = nullptr;
  for (const MetricsRow& r : rows)
    if (!r.is_step && number(r, "loss", file)) last = &r;
  if (last)
    fmt::print("final loss {:.4f} (epoch {}, stage {})\n", *number(*last, "loss", file), int_field(*last, "epoch", file),
               int_field(*last, "stage", file));
  for (const std::string& k : keys_ending_with(rows, "accuracy")) {
    const MetricsRow* best = nullptr;
    for (const MetricsRow& r : rows)
      if (!r.is_step && number(r, k, file) && (!best || *number(r, k, file) > *number(*best, k, file))) best = &r;
    fmt::print("best {} {:.4f} (epoch {}, stage {})\n", k, *number(*best, k, file), int_field(*best, "epoch", file),
               int_field(*best, "stage", file));
  }
  std::map<int, std::pair<int, int>> stage_epochs;  // stage -> first, last epoch
  for (const MetricsRow& r : rows) {
    const std::optional<double> s = number(r, "stage", file), e = number(r, "epoch", file);
    if (r.is_step || !s || !e) continue;
    auto [it, fresh] = stage_epochs.try_emplace(static_cast<int>(*s), static_cast<int>(*e), static_cast<int>(*e));
    if (!fresh) {
      it->second.first = std::min(it->second.first, static_cast<int>(*e));
      it->second.second = std::max(it->second.second, static_cast<int>(*e));
    }
  }
  std::string stages;
  for (const auto& [s, e] : stage_epochs)
    stages += e.first == e.second ? fmt::format(" {}: epoch {};", s, e.first)
                                  : fmt::format(" {}: epochs {}-{};", s, e.first, e.second);
  if (!stages.empty()) fmt::print("stages:{}\n", stages.substr(0, stages.size() - 1));
  // Where the curriculum breaks: the accuracy each stage ended at.
  const std::vector<double> at_end = stage_end_accuracies(rows);
  if (!at_end.empty()) fmt::print("valid accuracy at each stage's end, %: {}\n", format_stage_end_accuracies(at_end));
}

}  // namespace

int cmd_report(const std::vector<std::string>& args) {
  const char* help =
      "usage: coconut report RUN_DIR [--out FILE.png] [--x epoch|step]\n"
      "  Draws the run's loss and accuracy curves from RUN_DIR/metrics.jsonl, with dashed\n"
      "  vertical lines at curriculum stage switches, and prints a summary (final loss,\n"
      "  best accuracy, epochs per stage).\n"
      "  --out   the PNG to write (default: RUN_DIR/report.png)\n"
      "  --x     x axis: epoch (default; one point per epoch) or step (the global step\n"
      "          count; also draws per-step rows, \"kind\": \"step\", when the run wrote them, and\n"
      "          a third panel with each step's gradient norm from RUN_DIR/steps.jsonl)\n";
  if (args.empty() || args[0] == "--help") {
    fmt::print("{}", help);
    return args.empty() ? 2 : 0;
  }
  const std::string run_dir = args[0];
  if (run_dir.starts_with("-")) throw UsageError(fmt::format("the first argument must be RUN_DIR\n{}", help));
  std::string out_path, x_axis = "epoch";
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--out") out_path = option_value(args, i);
    else if (a == "--x") x_axis = option_value(args, i);
    else if (a == "--help") {
      fmt::print("{}", help);
      return 0;
    } else throw UsageError(fmt::format("unknown option '{}'\n{}", a, help));
  }
  if (x_axis != "epoch" && x_axis != "step")
    throw UsageError(fmt::format("--x expects 'epoch' or 'step', got '{}'", x_axis));
  if (!fs::is_directory(run_dir)) throw UsageError(fmt::format("RUN_DIR '{}' is not a directory", run_dir));
  const std::string file = (fs::path(run_dir) / kMetricsFile).string();
  COCONUT_CHECK(fs::exists(file), "'{}' not found: RUN_DIR must be a training run's directory (coconut train writes it)",
                file);
  if (out_path.empty()) out_path = (fs::path(run_dir) / "report.png").string();

  const std::vector<MetricsRow> rows = read_metrics(file);
  const bool by_step = x_axis == "step";
  // The x of every row drawn (step rows only on a step axis; rows without the axis field are skipped).
  struct Point {
    const MetricsRow* row;
    double x;
    int stage;
  };
  std::vector<Point> points;
  int skipped = 0, step_rows = 0;
  for (const MetricsRow& r : rows) {
    step_rows += r.is_step;
    if (r.is_step && !by_step) continue;
    const std::optional<double> x = number(r, by_step ? "step" : "epoch", file);
    const std::optional<double> stage = number(r, "stage", file);
    if (!x) {
      ++skipped;
      continue;
    }
    points.push_back({&r, *x, stage ? static_cast<int>(*stage) : -1});
  }
  COCONUT_CHECK(!points.empty(), "'{}' has no {} rows with '{}' to draw{}", file, by_step ? "step or epoch" : "epoch",
                x_axis, by_step ? "" : " (try --x step)");
  std::stable_sort(points.begin(), points.end(), [](const Point& a, const Point& b) { return a.x < b.x; });

  // Stage boundaries: between the last point of a stage and the first of the next
  // (half-way between epochs; just after the last step of a stage on a step axis).
  std::vector<double> boundaries;
  for (size_t i = 1; i < points.size(); ++i)
    if (points[i].stage != points[i - 1].stage && points[i].stage >= 0 && points[i - 1].stage >= 0)
      boundaries.push_back(by_step ? points[i - 1].x + 0.5 : (points[i - 1].x + points[i].x) / 2);

  // One series per metric key; step rows' loss is its own series.
  auto series_of = [&](const std::string& key, bool from_steps, const std::string& label) {
    PlotSeries s{label, {}, {}};
    for (const Point& p : points) {
      if (p.row->is_step != from_steps) continue;
      // Rows without the field (accuracy is evaluated every few epochs) are skipped,
      // so the curve joins the epochs that have it.
      const std::optional<double> v = number(*p.row, key, file);
      if (!v) continue;
      s.x.push_back(p.x);
      s.y.push_back(*v);
    }
    return s;
  };
  const std::string x_label = by_step ? "step" : "epoch";
  PlotPanel loss{"loss", x_label, "loss", {}, boundaries, !by_step, {}};
  if (by_step && step_rows > 0) loss.series.push_back(series_of("loss", true, "train loss (step)"));
  for (const std::string& k : keys_ending_with(rows, "loss"))
    loss.series.push_back(series_of(k, false, k == "loss" ? "train loss (epoch mean)" : k));
  PlotPanel acc{"accuracy", x_label, "accuracy", {}, boundaries, true, {0.0, 1.0}};
  for (const std::string& k : keys_ending_with(rows, "accuracy")) acc.series.push_back(series_of(k, false, k));
  std::vector<PlotPanel> panels = {loss, acc};
  // On a step axis: every step's gradient norm (before clipping) from steps.jsonl; a
  // step whose norm was not finite (null: skipped or diverged) leaves a gap.
  const std::string steps_file = (fs::path(run_dir) / "steps.jsonl").string();
  std::string norm_summary;
  if (by_step && fs::exists(steps_file)) {
    PlotSeries norms{"gradient norm", {}, {}};
    int gaps = 0;
    for (const MetricsRow& r : read_metrics(steps_file)) {
      const std::optional<double> step = number(r, "step", steps_file);
      if (!step || !r.json.contains("grad_norm")) continue;
      const std::optional<double> g = number(r, "grad_norm", steps_file);
      gaps += !g;
      norms.x.push_back(*step);
      norms.y.push_back(g ? *g : NAN);
    }
    std::vector<double> finite;
    size_t top = 0;  // the step of the largest finite norm
    for (size_t i = 0; i < norms.y.size(); ++i) {
      if (!std::isfinite(norms.y[i])) continue;
      if (finite.empty() || norms.y[i] > norms.y[top]) top = i;
      finite.push_back(norms.y[i]);
    }
    if (!finite.empty()) {
      std::sort(finite.begin(), finite.end());
      norm_summary = fmt::format("gradient norm: median {:.4g}, max {:.4g} (step {}); {} of {} steps not finite",
                                 finite[finite.size() / 2], finite.back(), static_cast<int64_t>(norms.x[top]), gaps,
                                 norms.x.size());
      panels.push_back(
          {"gradient norm (before clipping)", x_label, "norm", {std::move(norms)}, boundaries, false, {0.0}});
    }
  }
  write_plot_png(out_path, panels);

  print_summary(run_dir, rows, file);
  if (!norm_summary.empty()) fmt::print("{}\n", norm_summary);
  if (skipped > 0) fmt::print("note: {} rows without '{}' were not drawn\n", skipped, x_axis);
  fmt::print("wrote {}\n", out_path);
  return 0;
}

}  // namespace coconut::launcher
