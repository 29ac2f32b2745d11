// Sweep file, grid, run states, command lines and the results table (see sweep.h).
#include "launcher/sweep.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "launcher/plot.h"
#include "launcher/run_output.h"
#include "runtime/check.h"
#include "runtime/files.h"
#include "runtime/stop_signals.h"

namespace coconut::launcher {

namespace fs = std::filesystem;

SweepSpec read_sweep(Config& c) {
  SweepSpec s;
  s.source = c.source();
  const std::string base = c.require_string("base");
  // The base config is named relative to the sweep file, so a sweep works from any folder.
  const fs::path base_path(base);
  s.base_config = base_path.is_absolute() ? base
                                          : (fs::path(s.source).parent_path() / base_path).lexically_normal().string();
  s.out_dir = c.require_string("out");
  COCONUT_CHECK(c.has("grid.0"), "{}: key 'grid' expects a non-empty list of {{key: K, values: [...]}} entries",
                s.source);
  std::set<std::string> keys;
  for (int i = 0; c.has(fmt::format("grid.{}", i)); ++i) {
    SweepAxis axis;
    axis.key = c.require_string(fmt::format("grid.{}.key", i));
    axis.values = c.require_string_list(fmt::format("grid.{}.values", i));
    COCONUT_CHECK(!axis.values.empty(), "{}: grid.{}.values ('{}') is empty: give at least one value", s.source, i,
                  axis.key);
    COCONUT_CHECK(axis.key != "run.dir", "{}: grid.{}.key: run.dir is set by the sweep (OUT/<run name>)", s.source, i);
    COCONUT_CHECK(keys.insert(axis.key).second, "{}: grid.{}.key: '{}' is already a grid key", s.source, i, axis.key);
    s.grid.push_back(std::move(axis));
  }
  s.sets = c.get_string_list("set", {});
  for (const std::string& kv : s.sets)
    COCONUT_CHECK(kv.find('=') != std::string::npos && kv.find('=') > 0,
                  "{}: key 'set' expects items of the form key=value, got '{}'", s.source, kv);
  s.np = c.get_int("launch.np", 1, 1, 1 << 20);
  s.mpirun = c.get_string("launch.mpirun", s.mpirun);
  s.mpirun_args = c.get_string_list("launch.mpirun_args", {});
  c.finish();
  return s;
}

namespace {

std::string last_component(const std::string& key) {
  const size_t dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

std::string sanitize(const std::string& text) {
  std::string out = text;
  for (char& ch : out)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '+' && ch != '-') ch = '_';
  return out;
}

}  // namespace

std::vector<SweepRun> expand_grid(const SweepSpec& spec) {
  // Short labels (the key's last component) unless two axes would share one.
  std::vector<std::string> labels;
  for (const SweepAxis& a : spec.grid) {
    const std::string shortname = last_component(a.key);
    const auto same = std::count_if(spec.grid.begin(), spec.grid.end(),
                                    [&](const SweepAxis& b) { return last_component(b.key) == shortname; });
    labels.push_back(sanitize(same > 1 ? a.key : shortname));
  }
  std::vector<SweepRun> runs;
  std::vector<size_t> index(spec.grid.size(), 0);  // an odometer over the axes, last fastest
  while (true) {
    SweepRun r;
    for (size_t a = 0; a < spec.grid.size(); ++a) {
      const std::string& value = spec.grid[a].values[index[a]];
      r.point.emplace_back(spec.grid[a].key, value);
      r.name += (a ? "_" : "") + labels[a] + "-" + sanitize(value);
    }
    r.dir = (fs::path(spec.out_dir) / r.name).string();
    runs.push_back(std::move(r));
    size_t a = spec.grid.size();
    while (a > 0 && ++index[a - 1] == spec.grid[a - 1].values.size()) index[--a] = 0;
    if (a == 0) break;
  }
  std::set<std::string> names;
  for (const SweepRun& r : runs)
    COCONUT_CHECK(names.insert(r.name).second,
                  "{}: two grid points get the run name '{}' (values that differ only in characters other than "
                  "letters, digits, '.', '+' and '-')",
                  spec.source, r.name);
  return runs;
}

RunState run_state(const std::string& run_dir) {
  if (!fs::is_directory(run_dir)) return RunState::New;
  if (fs::exists(fs::path(run_dir) / kSweepDoneFile)) return RunState::Finished;
  return fs::exists(fs::path(run_dir) / kDivergedFile) ? RunState::Diverged : RunState::Interrupted;
}

std::vector<std::string> run_overrides(const SweepSpec& spec, const SweepRun& run) {
  std::vector<std::string> sets = spec.sets;
  for (const auto& [key, value] : run.point) sets.push_back(key + "=" + value);
  sets.push_back("run.dir=" + run.dir);
  return sets;
}

std::vector<std::string> train_command(const SweepSpec& spec, const SweepRun& run, const std::string& coconut_bin,
                                       bool resume) {
  std::vector<std::string> cmd;
  if (spec.np > 1) {
    cmd = {spec.mpirun, "-np", std::to_string(spec.np)};
    cmd.insert(cmd.end(), spec.mpirun_args.begin(), spec.mpirun_args.end());
  }
  cmd.insert(cmd.end(), {coconut_bin, "train", spec.base_config});
  for (const std::string& kv : run_overrides(spec, run)) cmd.insert(cmd.end(), {"--set", kv});
  if (resume) cmd.insert(cmd.end(), {"--resume", "auto"});
  return cmd;
}

namespace {

double unix_seconds_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<nlohmann::json> read_attempts(const fs::path& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    try {
      lines.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception& e) {
      COCONUT_FAIL("{}:{}: not a JSON line: {}", path.string(), n, e.what());
    }
  }
  return lines;
}

void append_attempt(const fs::path& path, const nlohmann::json& j) {
  std::ofstream out(path, std::ios::app);
  out << j.dump() << "\n";
  COCONUT_CHECK(out.good(), "cannot append to '{}'", path.string());
}

}  // namespace

void close_open_attempt(const std::string& run_dir) {
  const fs::path path = fs::path(run_dir) / kSweepAttemptsFile;
  const std::vector<nlohmann::json> lines = read_attempts(path);
  if (!lines.empty() && lines.back().contains("start")) {
    // The last attempt never ended here: its sweep was killed. It ran at least until
    // its training last wrote to the log.
    const double start = lines.back().at("start").get<double>();
    std::error_code ec;
    const auto written = fs::last_write_time(fs::path(run_dir) / "train.log", ec);
    double end = start;
    if (!ec) {
      // file_clock to Unix time through "now" on both clocks (GCC 12 has no clock_cast).
      const double ago = std::chrono::duration<double>(fs::file_time_type::clock::now() - written).count();
      end = std::max(start, unix_seconds_now() - ago);
    }
    append_attempt(path, {{"end", end}, {"seconds", end - start}, {"exit", nullptr}, {"estimated", true}});
  }
}

void note_attempt_start(const std::string& run_dir) {
  close_open_attempt(run_dir);
  append_attempt(fs::path(run_dir) / kSweepAttemptsFile, {{"start", unix_seconds_now()}});
}

void note_attempt_end(const std::string& run_dir, double seconds, int exit_code) {
  append_attempt(fs::path(run_dir) / kSweepAttemptsFile,
                 {{"end", unix_seconds_now()}, {"seconds", seconds}, {"exit", exit_code}});
}

double attempts_seconds(const std::string& run_dir) {
  double total = 0;
  bool any = false;
  for (const nlohmann::json& j : read_attempts(fs::path(run_dir) / kSweepAttemptsFile))
    if (j.contains("seconds")) total += j.at("seconds").get<double>(), any = true;
  return any ? total : -1;
}

void write_done_marker(const std::string& run_dir, double wall_seconds, bool resumed,
                       const std::vector<std::string>& command) {
  const fs::path path = fs::path(run_dir) / kSweepDoneFile;
  const nlohmann::json j = {{"wall_seconds", wall_seconds}, {"resumed", resumed}, {"command", command}};
  write_file_atomic(path.string(), j.dump(1) + "\n");
}

namespace {

// A JSON file's object, or null when the file is absent; a malformed file is an error.
nlohmann::json read_json_if_present(const fs::path& path) {
  if (!fs::exists(path)) return nullptr;
  std::ifstream in(path);
  COCONUT_CHECK(in.good(), "cannot open '{}'", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    COCONUT_FAIL("'{}' is not valid JSON: {}", path.string(), e.what());
  }
}

}  // namespace

namespace {

// The exit code of a run's last attempt when it ended (sweep_attempts.jsonl), else -1:
// no attempt, one still running or killed with its sweep, or a last line that another
// process is writing right now (it does not parse yet).
int last_attempt_exit(const std::string& run_dir) {
  std::ifstream in(fs::path(run_dir) / kSweepAttemptsFile);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  const nlohmann::json j = nlohmann::json::parse(last, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("exit") && j["exit"].is_number_integer() ? j["exit"].get<int>() : -1;
}

}  // namespace

std::string status_on_disk(const std::string& run_dir) {
  switch (run_state(run_dir)) {
    case RunState::Finished: {
      const nlohmann::json j = read_json_if_present(fs::path(run_dir) / kSweepDoneFile);
      return j.is_object() && j.value("resumed", false) ? "resumed" : "trained";
    }
    case RunState::Diverged: return diverged_status(run_dir);
    case RunState::Interrupted: {
      // What its last attempt's sweep saw, when that attempt ended.
      const int code = last_attempt_exit(run_dir);
      if (code == kExitStoppedBySignal) return "stopped by a signal";
      if (code > 0) return fmt::format("failed (exit {})", code);
      return "interrupted";
    }
    case RunState::New: break;
  }
  return "pending";
}

SweepShard parse_shard(const std::string& text) {
  SweepShard shard;
  const size_t slash = text.find('/');
  bool ok = slash != std::string::npos && slash > 0 && slash + 1 < text.size();
  if (ok) {
    try {
      size_t used_index = 0, used_count = 0;
      shard.index = std::stoi(text.substr(0, slash), &used_index);
      shard.count = std::stoi(text.substr(slash + 1), &used_count);
      ok = used_index == slash && used_count == text.size() - slash - 1;
    } catch (const std::exception&) {
      ok = false;
    }
  }
  COCONUT_CHECK(ok && shard.count >= 1 && shard.index >= 0 && shard.index < shard.count,
                "--shard expects I/N with 0 <= I < N (a job array's task and task count), got '{}'", text);
  return shard;
}

std::string diverged_status(const std::string& run_dir) {
  const nlohmann::json j = read_json_if_present(fs::path(run_dir) / kDivergedFile);
  if (!j.is_object()) return "diverged";
  const nlohmann::json& loss = j.value("loss", nlohmann::json(nullptr));
  return fmt::format("diverged (step {}, loss {})", j.value("step", int64_t{-1}),
                     loss.is_string() ? loss.get<std::string>() : loss.dump());
}

RunResult read_run_result(const std::string& run_dir, const std::string& status) {
  RunResult r;
  r.status = status;
  const nlohmann::json eval = read_json_if_present(fs::path(run_dir) / "eval_valid.json");
  if (eval.is_object()) {
    r.valid_accuracy = eval.value("accuracy", -1.0);
    r.mean_generated_tokens = eval.value("mean_generated_tokens", -1.0);
  }
  auto accuracy = [&](const fs::path& file, const char* key) {
    const nlohmann::json j = read_json_if_present(fs::path(run_dir) / file);
    return j.is_object() ? j.value(key, -1.0) : -1.0;
  };
  r.test_accuracy = accuracy("eval_test.json", "accuracy");
  r.best_valid_accuracy = accuracy(fs::path(kBestModelDir) / kBestModelFile, "valid_accuracy");
  r.best_test_accuracy = accuracy("eval_test_best.json", "accuracy");
  // A run killed while appending may leave a broken last line: the table then shows no
  // stage figures for it rather than failing the sweep's report.
  const fs::path metrics = fs::path(run_dir) / kMetricsFile;
  if (fs::exists(metrics)) {
    try {
      r.stage_end_accuracy = stage_end_accuracies(read_metrics(metrics.string()));
    } catch (const Error&) {
      r.stage_end_accuracy.clear();
    }
  }
  const nlohmann::json done = read_json_if_present(fs::path(run_dir) / kSweepDoneFile);
  if (done.is_object()) r.wall_seconds = done.value("wall_seconds", -1.0);
  const double all = attempts_seconds(run_dir);
  if (all >= 0) r.wall_seconds = all;
  return r;
}

namespace {

// A table cell: the value, or "-" when it is missing (negative).
std::string number(double v, const char* format) {
  return v < 0 ? std::string("-") : fmt::format(fmt::runtime(format), v);
}

// Accuracies at each stage's end as a results.md cell (percent), "-" when there are none.
std::string stage_cell(const std::vector<double>& at_end) {
  return at_end.empty() ? "-" : format_stage_end_accuracies(at_end);
}

// A CSV field: quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}


// Grid points that differ only in the given key: (the other keys' values) -> run indices.
std::map<std::vector<std::string>, std::vector<size_t>> group_without(const std::vector<SweepRun>& runs,
                                                                      const std::set<std::string>& dropped) {
  std::map<std::vector<std::string>, std::vector<size_t>> groups;
  for (size_t i = 0; i < runs.size(); ++i) {
    std::vector<std::string> rest;
    for (const auto& [key, value] : runs[i].point)
      if (!dropped.count(key)) rest.push_back(key + "=" + value);
    groups[rest].push_back(i);
  }
  return groups;
}

bool is_grid_key(const SweepSpec& spec, const std::string& key) {
  return std::any_of(spec.grid.begin(), spec.grid.end(), [&](const SweepAxis& a) { return a.key == key; });
}

}  // namespace

void write_results(const SweepSpec& spec, const std::vector<SweepRun>& runs, const std::vector<RunResult>& results) {
  COCONUT_CHECK(runs.size() == results.size(), "write_results: {} runs but {} results", runs.size(), results.size());
  std::string md = fmt::format("# Sweep {}\n\nBase config `{}`; one row per run (wall time: every attempt "
                               "the sweeps made, {}).\n\n| run |",
                               spec.source, spec.base_config, kSweepAttemptsFile);
  std::string csv = "run";
  for (const SweepAxis& a : spec.grid) {
    md += fmt::format(" {} |", a.key);
    csv += fmt::format(",{}", csv_field(a.key));
  }
  md += " status | valid accuracy | mean generated tokens | wall s | test accuracy | best valid accuracy | "
        "best model's test accuracy | valid accuracy at each stage's end, % |\n|---|";
  csv += ",status,valid_accuracy,mean_generated_tokens,wall_seconds,test_accuracy,best_valid_accuracy,"
         "best_test_accuracy,stage_end_valid_accuracy\n";
  for (size_t i = 0; i < spec.grid.size(); ++i) md += "---|";
  md += "---|---|---|---|---|---|---|---|\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunResult& r = results[i];
    md += fmt::format("| {} |", runs[i].name);
    csv += csv_field(runs[i].name);
    for (const auto& kv : runs[i].point) {
      md += fmt::format(" {} |", kv.second);
      csv += fmt::format(",{}", csv_field(kv.second));
    }
    md += fmt::format(" {} | {} | {} | {} | {} | {} | {} | {} |\n", r.status, number(r.valid_accuracy, "{:.4f}"),
                      number(r.mean_generated_tokens, "{:.2f}"), number(r.wall_seconds, "{:.1f}"),
                      number(r.test_accuracy, "{:.4f}"), number(r.best_valid_accuracy, "{:.4f}"),
                      number(r.best_test_accuracy, "{:.4f}"), stage_cell(r.stage_end_accuracy));
    // CSV: empty cells where a value is missing.
    auto cell = [](double v, const char* f) { return v < 0 ? std::string() : fmt::format(fmt::runtime(f), v); };
    std::vector<std::string> stage_fractions;  // fractions separated by spaces, "-" for a stage without one
    for (double a : r.stage_end_accuracy) stage_fractions.push_back(number(a, "{:.6f}"));
    csv += fmt::format(",{},{},{},{},{},{},{},{}\n", csv_field(r.status), cell(r.valid_accuracy, "{:.6f}"),
                       cell(r.mean_generated_tokens, "{:.4f}"), cell(r.wall_seconds, "{:.3f}"),
                       cell(r.test_accuracy, "{:.6f}"), cell(r.best_valid_accuracy, "{:.6f}"),
                       cell(r.best_test_accuracy, "{:.6f}"), fmt::join(stage_fractions, " "));
  }
  // Seeds averaged: the comparison a sweep is usually for.
  if (is_grid_key(spec, "run.seed") && spec.grid.size() > 1) {
    md += "\nMean over `run.seed` (runs with a valid accuracy; at each stage's end, the runs that reached it):\n\n"
          "| grid point | runs | mean valid accuracy | min | max | mean at each stage's end, % |\n"
          "|---|---|---|---|---|---|\n";
    for (const auto& [rest, members] : group_without(runs, {"run.seed"})) {
      std::vector<double> acc;
      std::vector<double> stage_sum;
      std::vector<int> stage_runs;
      for (size_t i : members) {
        if (results[i].valid_accuracy >= 0) acc.push_back(results[i].valid_accuracy);
        const std::vector<double>& at_end = results[i].stage_end_accuracy;
        if (at_end.size() > stage_sum.size()) stage_sum.resize(at_end.size(), 0.0), stage_runs.resize(at_end.size(), 0);
        for (size_t k = 0; k < at_end.size(); ++k)
          if (at_end[k] >= 0) stage_sum[k] += at_end[k], ++stage_runs[k];
      }
      double mean = 0;
      for (double a : acc) mean += a;
      if (!acc.empty()) mean /= static_cast<double>(acc.size());
      std::vector<double> stage_mean(stage_sum.size(), -1.0);
      for (size_t k = 0; k < stage_sum.size(); ++k)
        if (stage_runs[k] > 0) stage_mean[k] = stage_sum[k] / stage_runs[k];
      md += fmt::format("| {} | {} | {} | {} | {} | {} |\n", fmt::join(rest, ", "), acc.size(),
                        acc.empty() ? "-" : fmt::format("{:.4f}", mean),
                        acc.empty() ? "-" : fmt::format("{:.4f}", *std::min_element(acc.begin(), acc.end())),
                        acc.empty() ? "-" : fmt::format("{:.4f}", *std::max_element(acc.begin(), acc.end())),
                        stage_cell(stage_mean));
    }
  }
  fs::create_directories(spec.out_dir);
  write_file_atomic((fs::path(spec.out_dir) / "results.md").string(), md);
  write_file_atomic((fs::path(spec.out_dir) / "results.csv").string(), csv);
}

std::string plot_accuracy_vs_c(const SweepSpec& spec, const std::vector<SweepRun>& runs,
                               const std::vector<RunResult>& results) {
  const std::string c_key = "curriculum.c_thought";
  if (!is_grid_key(spec, c_key)) return "";
  PlotPanel panel;
  panel.title =
      fmt::format("valid accuracy against c (mean over run.seed): {}", fs::path(spec.source).filename().string());
  panel.x_label = "c (continuous thoughts per step)";
  panel.y_label = "valid accuracy";
  panel.markers = true;
  panel.y_include = {0.0, 1.0};
  for (const auto& [rest, members] : group_without(runs, {c_key, "run.seed"})) {
    std::map<double, std::vector<double>> by_c;  // c -> accuracies
    for (size_t i : members) {
      if (results[i].valid_accuracy < 0) continue;
      for (const auto& [key, value] : runs[i].point)
        if (key == c_key) by_c[std::stod(value)].push_back(results[i].valid_accuracy);
    }
    if (by_c.empty()) continue;
    PlotSeries s;
    s.label = rest.empty() ? "all runs" : fmt::format("{}", fmt::join(rest, ", "));
    for (const auto& [c, acc] : by_c) {
      double mean = 0;
      for (double a : acc) mean += a;
      s.x.push_back(c);
      s.y.push_back(mean / static_cast<double>(acc.size()));
    }
    panel.series.push_back(std::move(s));
  }
  if (panel.series.empty()) return "";
  const std::string path = (fs::path(spec.out_dir) / "accuracy_vs_c.png").string();
  write_plot_png(path, {panel});
  return path;
}

}  // namespace coconut::launcher
