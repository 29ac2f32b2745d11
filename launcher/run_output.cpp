// RunOutput: metrics.jsonl rows and TensorBoard scalars of a run; the progress line.
#include "launcher/run_output.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "runtime/check.h"

namespace coconut::launcher {

namespace fs = std::filesystem;

RunOutput::RunOutput(const std::string& run_dir, bool fresh, RunOutputOptions options)
    : metrics_path_((fs::path(run_dir) / kMetricsFile).string()), options_(options) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  COCONUT_CHECK(!ec, "cannot create the run directory '{}': {}", run_dir, ec.message());
  if (fresh) {
    // A new run in an old directory must not show the old run's rows or curves.
    fs::remove(metrics_path_, ec);
    COCONUT_CHECK(!ec, "cannot remove the old '{}': {}", metrics_path_, ec.message());
    for (const fs::directory_entry& e : fs::directory_iterator(run_dir)) {
      if (!e.is_regular_file() || e.path().filename().string().rfind("events.out.tfevents.", 0) != 0) continue;
      fs::remove(e.path(), ec);
      COCONUT_CHECK(!ec, "cannot remove the old TensorBoard file '{}': {}", e.path().string(), ec.message());
    }
  }
  if (options_.tensorboard) tb_ = std::make_unique<TensorBoardWriter>(run_dir);
}

void RunOutput::append_row(const nlohmann::json& row) {
  // Opened per row: every row is on disk once this returns, even if the run dies next.
  std::ofstream out(metrics_path_, std::ios::app);
  COCONUT_CHECK(out.good(), "cannot append to '{}'", metrics_path_);
  out << row.dump() << "\n";
  out.flush();
  COCONUT_CHECK(out.good(), "cannot write to '{}'", metrics_path_);
}

void RunOutput::log_step(const StepMetrics& m) {
  if (options_.step_rows)
    append_row({{"kind", "step"}, {"epoch", m.epoch}, {"stage", m.stage}, {"step", m.step}, {"loss", m.loss},
                {"learning_rate", m.learning_rate}, {"tokens_per_s", m.tokens_per_s}, {"grad_norm", m.grad_norm}});
  if (!tb_) return;
  const double t = TensorBoardWriter::now();
  tb_->scalar("train/loss", m.step, m.loss, t);
  tb_->scalar("train/learning_rate", m.step, m.learning_rate, t);
  tb_->scalar("train/tokens_per_s", m.step, m.tokens_per_s, t);
  tb_->scalar("train/grad_norm", m.step, m.grad_norm, t);
  tb_->scalar("train/stage", m.step, m.stage, t);
  tb_->scalar("train/epoch", m.step, m.epoch, t);
  tb_->flush();
}

void RunOutput::log_epoch(const nlohmann::json& row) {
  COCONUT_CHECK(row.is_object() && row.contains("epoch") && row["epoch"].is_number_integer(),
                "metrics row for '{}' needs an integer 'epoch': {}", metrics_path_, row.dump());
  append_row(row);
  if (!tb_) return;
  const int64_t x = row.contains("step") && row["step"].is_number_integer() ? row["step"].get<int64_t>()
                                                                            : row["epoch"].get<int64_t>();
  const double t = TensorBoardWriter::now();
  for (const auto& [key, value] : row.items()) {
    if (key == "epoch" || key == "step") continue;  // the axes, not curves
    if (value.is_number()) {
      tb_->scalar("epoch/" + key, x, value.get<double>(), t);
    } else if (value.is_array()) {
      for (size_t i = 0; i < value.size(); ++i)
        if (value[i].is_number()) tb_->scalar(fmt::format("epoch/{}/{}", key, i), x, value[i].get<double>(), t);
    }
  }
  tb_->flush();
}

double eta_seconds(int64_t steps_done, int64_t total_steps, double elapsed_seconds, int64_t first_step) {
  const int64_t timed = steps_done - first_step;
  if (timed <= 0 || !(elapsed_seconds >= 0)) return -1;
  const int64_t left = std::max<int64_t>(0, total_steps - steps_done);
  return elapsed_seconds / static_cast<double>(timed) * static_cast<double>(left);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--:--";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  return fmt::format("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
}

std::string format_progress(const Progress& p) {
  return fmt::format("epoch {} ({} epochs) stage {} step {}/{} loss {:.4f} grad norm {:.3g}  {:.0f} tok/s ETA {}",
                     p.epoch, p.epochs, p.stage, p.step, p.total_steps, p.loss, p.grad_norm, p.tokens_per_s,
                     format_duration(eta_seconds(p.step, p.total_steps, p.elapsed_seconds, p.first_step)));
}

std::vector<MetricsRow> read_metrics(const std::string& file) {
  std::ifstream in(file);
  COCONUT_CHECK(in.good(), "cannot read '{}'", file);
  std::vector<MetricsRow> rows;
  std::string text;
  for (int line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    MetricsRow r;
    r.line = line;
    try {
      r.json = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      COCONUT_FAIL("{}:{}: not a JSON line ({})", file, line, e.what());
    }
    COCONUT_CHECK(r.json.is_object(), "{}:{}: expected a JSON object per line, got {}", file, line, text);
    const auto kind_it = r.json.find("kind");
    COCONUT_CHECK(kind_it == r.json.end() || kind_it->is_string(), "{}:{}: 'kind' must be a string, got {}", file,
                  line, kind_it == r.json.end() ? "" : kind_it->dump());
    const std::string kind = kind_it == r.json.end() ? "epoch" : kind_it->get<std::string>();
    if (kind != "epoch" && kind != "step") continue;
    r.is_step = kind == "step";
    rows.push_back(std::move(r));
  }
  return rows;
}

std::vector<double> stage_end_accuracies(const std::vector<MetricsRow>& rows) {
  std::vector<double> at_end;
  for (const MetricsRow& r : rows) {
    if (r.is_step) continue;
    const auto stage = r.json.find("stage"), accuracy = r.json.find("valid_accuracy");
    if (stage == r.json.end() || !stage->is_number_integer() || accuracy == r.json.end() || !accuracy->is_number())
      continue;
    const int k = stage->get<int>();
    if (k < 0) continue;
    if (static_cast<size_t>(k) >= at_end.size()) at_end.resize(static_cast<size_t>(k) + 1, -1.0);
    at_end[static_cast<size_t>(k)] = accuracy->get<double>();  // a later row of the stage replaces it
  }
  return at_end;
}

std::string format_stage_end_accuracies(const std::vector<double>& at_end) {
  std::vector<std::string> parts;
  for (double a : at_end) parts.push_back(a < 0 ? std::string("-") : fmt::format("{:.1f}", 100 * a));
  return fmt::format("{}", fmt::join(parts, " / "));
}

}  // namespace coconut::launcher
