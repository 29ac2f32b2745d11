// `coconut bench all` (see bench_all.h): runs the parts, then prints the document.
#include "bench/bench_all.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench/activation_memory.h"
#include "bench/ckpt_bench.h"
#include "bench/coconut_step.h"
#include "bench/synthetic_batch.h"
#include "parallel/comm.h"
#include "runtime/blas.h"
#include "runtime/check.h"
#include "runtime/process.h"
#include "runtime/threads.h"
#include "runtime/timer.h"

namespace coconut::bench {

namespace {

namespace fs = std::filesystem;

// The sizes of one run: `--quick` or the default (a few minutes on 2 cores).
struct Plan {
  // The Coconut step on two shapes: `coconut bench coconut`'s default, and the model and
  // batch of the paper reproduction (configs/reproduce_prosqa.yaml, tools/reproduce.sh).
  std::vector<std::pair<std::string, CoconutStepOptions>> steps;
  MemoryBenchOptions memory;    // one process, thoughts 1..8, keep and recompute
  MemoryBenchOptions pipeline;  // the child mpirun job: one thought count, keep, every schedule
  CkptBenchOptions ckpt;
};

Plan make_plan(const BenchAllOptions& o, int threads) {
  Plan p;
  // Default: the shapes of `coconut bench coconut` and `coconut bench memory` (docs/status.md).
  // Quick: the same batch shapes with fewer samples and steps (and a narrower step model).
  CoconutStepOptions step;
  step.model = o.quick ? synthetic_model(4, 128, 4) : synthetic_model(4, 256, 4);
  step.batch = o.quick ? 8 : 16;
  step.question = 60;
  step.thoughts = 6;
  step.rest = 10;
  step.steps = o.quick ? 2 : 3;
  step.warmup = 1;
  step.threads = threads;
  step.torch_peer = o.torch;
  p.steps.emplace_back("bench shape", step);
  // The reproduction's 2-layer, d_model 64 model (vocabulary 69: ProsQA's word tokenizer),
  // batch 8, questions of ProsQA's length with a word tokenizer (~220 tokens).
  step.model = synthetic_model(2, 64, 4);
  step.model.vocab_size = 69;
  step.model.max_positions = 512;
  step.batch = o.quick ? 4 : 8;
  step.question = o.quick ? 100 : 220;
  step.steps = o.quick ? 2 : 10;
  p.steps.emplace_back("reproduction shape", step);

  // 16 configurations: quick shrinks the model and the questions too.
  p.memory.model = o.quick ? synthetic_model(2, 64, 2) : synthetic_model(4, 128, 4);
  p.memory.min_thoughts = 1, p.memory.max_thoughts = 8;
  p.memory.micro_batch = o.quick ? 4 : 8;
  p.memory.micro_batches = o.quick ? 2 : 4;
  p.memory.question = o.quick ? 30 : 60;
  p.memory.rest = 10;
  p.memory.steps = o.quick ? 1 : 2;
  p.memory.threads = threads;

  // The pipeline: M = 2S micro-batches of ProsQA shape with 6 thoughts (7 passes), the
  // threads shared by the ranks.
  p.pipeline.model = synthetic_model(4, 128, 4);
  p.pipeline.pp = o.pipeline_ranks;
  p.pipeline.micro_batch = o.quick ? 4 : 8;
  p.pipeline.micro_batches = 2 * o.pipeline_ranks;
  p.pipeline.question = 60;
  p.pipeline.rest = 10;
  p.pipeline.min_thoughts = p.pipeline.max_thoughts = 6;
  p.pipeline.policies = {model::ActivationPolicy::Keep};
  p.pipeline.schedules = {"gpipe", "gpipe-pass", "1f1b", "ring"};
  p.pipeline.steps = o.quick ? 2 : 3;
  p.pipeline.threads = std::max(1, threads / o.pipeline_ranks);

  // Checkpoint: 3 tensors (weights, two Adam moments) of 32M floats = 384 MB by default.
  p.ckpt.params = o.quick ? 4000000 : 32000000;
  p.ckpt.repeats = o.quick ? 1 : 2;
  p.ckpt.dir = (fs::path(o.dir) / "ckpt").string();
  return p;
}

// A line on stderr, with the seconds since the start.
void progress(const Timer& wall, const std::string& line) {
  fmt::print(stderr, "bench all: {:5.1f} s: {}\n", wall.seconds(), line);
}

// The command line of the child pipeline job: `coconut bench memory --pp S --json`.
std::vector<std::string> pipeline_command(const BenchAllOptions& o, const MemoryBenchOptions& p) {
  std::string schedules;
  for (const std::string& s : p.schedules) schedules += (schedules.empty() ? "" : ",") + s;
  const std::vector<std::string> cmd = {
      o.mpirun, "--oversubscribe", "-np", std::to_string(p.pp), self_binary(), "bench", "memory",
      "--pp", std::to_string(p.pp), "--schedule", schedules, "--policy",
      model::activation_policy_name(p.policies.at(0)), "--min-thoughts", std::to_string(p.min_thoughts),
      "--max-thoughts", std::to_string(p.max_thoughts), "--micro-batch", std::to_string(p.micro_batch),
      "--micro-batches", std::to_string(p.micro_batches), "--question", std::to_string(p.question), "--rest",
      std::to_string(p.rest), "--steps", std::to_string(p.steps), "--threads", std::to_string(p.threads),
      "--layers", std::to_string(p.model.n_layer), "--d-model", std::to_string(p.model.d_model), "--heads",
      std::to_string(p.model.n_head), "--json"};
  return cmd;
}

struct PipelineOutcome {
  std::vector<MemoryRow> rows;  // one per (schedule, rank)
  std::string command, error;   // error: "" when the job ran and every row came back
};

// Runs the child job with its output in DIR/pipeline.log and reads its JSON rows.
PipelineOutcome run_pipeline_job(const BenchAllOptions& o, const MemoryBenchOptions& p) {
  PipelineOutcome out;
  const std::vector<std::string> cmd = pipeline_command(o, p);
  out.command = shell_line(cmd);
  const std::string log = (fs::path(o.dir) / "pipeline.log").string();
  fs::remove(log);
  const int code = run_to_log(cmd, log);
  std::ifstream in(log);
  COCONUT_CHECK(in.good(), "cannot read '{}'", log);
  std::string line, text;
  while (std::getline(in, line)) {
    text += line + "\n";
    if (line.empty() || line[0] != '{') continue;  // mpirun's and the ranks' log lines
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded()) out.rows.push_back(memory_row_from_json(j));
  }
  const size_t want = p.schedules.size() * static_cast<size_t>(p.pp);
  if (code != 0 || out.rows.size() != want) {
    // The end of the log says why (as root, mpirun needs OMPI_ALLOW_RUN_AS_ROOT: cluster/env.sh).
    const std::string tail = text.size() > 1500 ? text.substr(text.size() - 1500) : text;
    out.error = fmt::format("the job exited with code {} and printed {} of {} rows; end of {}:\n\n```\n{}```", code,
                            out.rows.size(), want, log, tail);
  }
  return out;
}

double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

// Least-squares slope of y against x.
double slope(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) sx += x[i], sy += y[i], sxx += x[i] * x[i], sxy += x[i] * y[i];
  const double d = n * sxx - sx * sx;
  return d != 0 ? (n * sxy - sx * sy) / d : 0.0;
}

// Appends formatted text to the document.
template <class... Args>
void add(std::string& d, fmt::format_string<Args...> format, Args&&... args) {
  d += fmt::format(format, std::forward<Args>(args)...);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return buf;
}

// What the parts measured, for the document.
struct Results {
  BenchAllOptions options;
  Plan plan;
  int threads = 0;
  double seconds = 0;  // wall time of the whole run
  std::vector<CoconutStepResult> steps;  // one per plan.steps
  std::map<std::pair<model::ActivationPolicy, int>, MemoryRow> memory;  // (policy, thoughts) -> row
  PipelineOutcome pipeline;
  CkptBenchResult ckpt;

  static bool loss_agrees(const CoconutStepResult& step) { return !step.peer_ran() || step.loss_difference() < 1e-4; }
  bool losses_agree() const {
    return std::all_of(steps.begin(), steps.end(), [](const CoconutStepResult& s) { return loss_agrees(s); });
  }
  // Least-squares MiB per extra thought.
  double growth(model::ActivationPolicy policy) const {
    std::vector<double> x, y;
    for (int n = plan.memory.min_thoughts; n <= plan.memory.max_thoughts; ++n)
      x.push_back(n), y.push_back(mib(memory.at({policy, n}).peak_bytes));
    return slope(x, y);
  }
  // The rows of one schedule's ranks (empty when the job did not report it).
  std::vector<MemoryRow> bubbles(const std::string& schedule) const {
    std::vector<MemoryRow> out;
    for (const MemoryRow& r : pipeline.rows)
      if (r.schedule == schedule) out.push_back(r);
    return out;
  }
};

constexpr model::ActivationPolicy kKeep = model::ActivationPolicy::Keep, kRecompute = model::ActivationPolicy::Recompute;

double mean(const std::vector<MemoryRow>& rows, double MemoryRow::*field) {
  double s = 0;
  for (const MemoryRow& r : rows) s += r.*field;
  return rows.empty() ? 0.0 : s / rows.size();
}

void summary_section(std::string& d, const Results& r) {
  const CkptBenchResult& ck = r.ckpt;
  const MemoryBenchOptions& mo = r.plan.memory;
  add(d, "## Summary\n\n| figure | measured | against | ratio |\n|---|---:|---:|---:|\n");
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const CoconutStepResult& step = r.steps[i];
    const model::GPT2Config& m = r.plan.steps[i].second.model;
    const std::string shape = fmt::format("{}, {} layers d_model {}", r.plan.steps[i].first, m.n_layer, m.d_model);
    if (step.peer_ran()) {
      add(d, "| training step tokens/s, {}: coconut vs PyTorch {} ({} threads) | {:.0f} | {:.0f} | {:.2f}x |\n",
          shape, step.peer_version, step.threads, step.tokens_per_s(), step.peer_tokens_per_s(),
          step.peer_ms / step.ms);
      add(d, "| fastest training step ms, {}: PyTorch vs coconut | {:.1f} | {:.1f} | {:.2f}x |\n", shape,
          step.peer_best_ms, step.best_ms, step.best_ratio());
    } else {
      add(d, "| training step tokens/s, {}: coconut vs PyTorch ({} threads) | {:.0f} | not run | - |\n", shape,
          step.threads, step.tokens_per_s());
    }
    add(d, "| training step GFLOP/s, {}, vs measured SGEMM peak | {:.1f} | {:.1f} | {:.1f}% |\n", shape,
        step.gflops(), step.sgemm_peak_gflops, 100 * step.gflops() / step.sgemm_peak_gflops);
  }
  add(d, "| activation MiB per extra thought: recompute vs keep | {:.3f} | {:.3f} | {:.2f} |\n", r.growth(kRecompute),
      r.growth(kKeep), r.growth(kRecompute) / r.growth(kKeep));
  for (model::ActivationPolicy policy : {kKeep, kRecompute}) {
    const double first = r.memory.at({policy, mo.min_thoughts}).step_seconds;
    const double last = r.memory.at({policy, mo.max_thoughts}).step_seconds;
    add(d, "| step s, {} vs {} thoughts ({}) | {:.3f} | {:.3f} | {:.2f} |\n", mo.max_thoughts, mo.min_thoughts,
        model::activation_policy_name(policy), last, first, last / first);
  }
  const int ranks = r.plan.pipeline.pp;
  for (const std::string& s : r.plan.pipeline.schedules) {
    const std::vector<MemoryRow> rows = r.bubbles(s);
    if (rows.empty()) {
      add(d, "| pipeline bubble {} ({} ranks): measured vs simulated | not measured | - | - |\n", s, ranks);
      continue;
    }
    const double m = mean(rows, &MemoryRow::bubble_measured), sim = mean(rows, &MemoryRow::bubble_simulated);
    add(d, "| pipeline bubble {} ({} ranks, mean): measured vs simulated | {:.3f} | {:.3f} | {:.2f} |\n", s, ranks,
        m, sim, m / sim);
  }
  add(d, "| checkpoint save vs plain write + fsync, MB/s | {:.0f} | {:.0f} | {:.2f} |\n", ck.mb_per_s(ck.save),
      ck.mb_per_s(ck.plain_write), ck.plain_write / ck.save);
  add(d, "| checkpoint load vs plain read, MB/s | {:.0f} | {:.0f} | {:.2f} |\n\n", ck.mb_per_s(ck.load),
      ck.mb_per_s(ck.plain_read), ck.plain_read / ck.load);
}

void step_section(std::string& d, const Results& r) {
  add(d, "## 1. Coconut training step against PyTorch\n\n");
  add(d, "All passes + loss + backpropagation through every thought + AdamW, fp32 CPU. The PyTorch peer "
      "(bench/torch_coconut_step.py) replays the same batch and pass plan from the same weights. FLOPs per step = "
      "3 x forward = 3 (L (24 N C^2 + 2 B C T (T+1)) + 2 n_targets C V), N = B T (the causal half of attention "
      "counted in full, as is usual).\n\n");
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const CoconutStepResult& step = r.steps[i];
    const CoconutStepOptions& so = r.plan.steps[i].second;
    const model::GPT2Config& m = so.model;
    add(d, "### {}\n\nModel: {} layers, d_model {}, {} heads, vocab {} ({:.2f}M parameters). Batch: {} samples x {} "
        "columns (question ~{} tokens, {} thoughts, {} answer tokens), {} passes, {} targets; {} threads; {} timed "
        "steps after {} warm-up: {:.3f} GFLOP per step.\n\n",
        r.plan.steps[i].first, m.n_layer, m.d_model, m.n_head, m.vocab_size, step.params / 1e6, step.batch,
        step.columns, so.question, so.thoughts, so.rest, step.passes, step.targets, step.threads, so.steps,
        so.warmup, step.flops / 1e9);
    add(d, "| system | ms/step | tokens/s | GFLOP/s | % of SGEMM peak |\n|---|---:|---:|---:|---:|\n");
    add(d, "| coconut | {:.1f} | {:.0f} | {:.1f} | {:.1f}% |\n", step.ms, step.tokens_per_s(), step.gflops(),
        100 * step.gflops() / step.sgemm_peak_gflops);
    if (step.peer_ran()) {
      const double g = step.flops / (step.peer_ms / 1e3) / 1e9;
      add(d, "| pytorch {} | {:.1f} | {:.0f} | {:.1f} | {:.1f}% |\n", step.peer_version, step.peer_ms,
          step.peer_tokens_per_s(), g, 100 * g / step.sgemm_peak_gflops);
    }
    add(d, "\nSGEMM peak: OpenBLAS, 1024^3, best of 10, {} threads: {:.1f} GFLOP/s. ", step.threads,
        step.sgemm_peak_gflops);
    if (step.peer_ran())
      add(d, "First-step loss: coconut {:.6f}, pytorch {:.6f} (relative difference {:.1e}{}).\n\n", step.first_loss,
          step.peer_first_loss, step.loss_difference(),
          Results::loss_agrees(step) ? "" : ": DIFFERENT, the peer is not comparable");
    else
      add(d, "PyTorch peer {}.\n\n", r.options.torch ? "unavailable (install it with: bash cluster/bootstrap.sh --python)"
                                                        : "not run (--no-torch)");
  }
}

void memory_section(std::string& d, const Results& r) {
  const MemoryBenchOptions& mo = r.plan.memory;
  add(d, "## 2. Step time and activation memory against the number of thoughts\n\n");
  add(d, "One process (MultipassRunner over the micro-batches, as `coconut train`), {} layers, d_model {}, {} heads, "
      "{} micro-batches of {} ProsQA-shaped samples (question ~{} tokens, {} answer tokens), {} threads; step = "
      "forward + backward of all micro-batches, mean of {} timed steps after 1 warm-up. Memory = activation bytes "
      "allocated at the peak (runtime/memory_meter.h). Growth per extra thought (least squares): keep {:.3f} MiB, "
      "recompute {:.3f} MiB.\n\n",
      mo.model.n_layer, mo.model.d_model, mo.model.n_head, mo.micro_batches, mo.micro_batch, mo.question, mo.rest,
      r.threads, mo.steps, r.growth(kKeep), r.growth(kRecompute));
  add(d, "| thoughts | passes | keep MiB | recompute MiB | keep s/step | recompute s/step |\n"
      "|---:|---:|---:|---:|---:|---:|\n");
  for (int n = mo.min_thoughts; n <= mo.max_thoughts; ++n) {
    const MemoryRow& k = r.memory.at({kKeep, n});
    const MemoryRow& c = r.memory.at({kRecompute, n});
    add(d, "| {} | {} | {:.2f} | {:.2f} | {:.3f} | {:.3f} |\n", n, n + 1, mib(k.peak_bytes), mib(c.peak_bytes),
        k.step_seconds, c.step_seconds);
  }
  add(d, "\n");
}

void pipeline_section(std::string& d, const Results& r) {
  const MemoryBenchOptions& pp = r.plan.pipeline;
  add(d, "## 3. Pipeline bubble: measured against simulated\n\n");
  add(d, "{} pipeline ranks ({} thread(s) each), {} layers, d_model {}, {} micro-batches of {} samples with {} thoughts "
      "each, keep policy; mean of {} timed steps after 1 warm-up. Measured = 1 - time in Forward/Backward ops / "
      "time of the rank's op list (the executor's timing); simulated = the simulator's bubble for the same schedule "
      "and pass plans (default cost model). Command: `{}`.\n\n",
      pp.pp, pp.threads, pp.model.n_layer, pp.model.d_model, pp.micro_batches, pp.micro_batch, pp.min_thoughts,
      pp.steps, r.pipeline.command);
  if (!r.pipeline.error.empty()) add(d, "Not measured: {}\n\n", r.pipeline.error);
  if (r.pipeline.rows.empty()) return;
  std::string header = "| schedule |", rule = "|---|";
  for (int k = 0; k < pp.pp; ++k) header += fmt::format(" rank {} measured / simulated |", k), rule += "---:|";
  add(d, "{} s/step |\n{}---:|\n", header, rule);
  for (const std::string& s : pp.schedules) {
    const std::vector<MemoryRow> rows = r.bubbles(s);
    if (rows.empty()) continue;
    std::string line = "| " + s + " |";
    double step_s = 0;  // the slowest rank's
    for (const MemoryRow& x : rows) {
      line += fmt::format(" {:.3f} / {:.3f} |", x.bubble_measured, x.bubble_simulated);
      step_s = std::max(step_s, x.step_seconds);
    }
    add(d, "{} {:.3f} |\n", line, step_s);
  }
  add(d, "\n");
}

void ckpt_section(std::string& d, const Results& r) {
  const CkptBenchResult& ck = r.ckpt;
  const CkptBenchOptions& co = r.plan.ckpt;
  add(d, "## 4. Checkpoint save and load against plain file I/O\n\n");
  add(d, "3 tensors (weights, two AdamW moments) x {} floats = {:.1f} MB from {} rank, in {}, best of {}. Save = "
      "parallel/checkpoint.h with CRC-32C per slice, manifest, fsyncs, atomic rename; load checks every CRC. Plain = "
      "one sequential write + fsync of the same bytes / one read; page cache dropped before every read.\n\n",
      co.params, ck.bytes / 1e6, ck.ranks, co.dir, co.repeats);
  add(d, "| what | seconds | MB/s | vs plain |\n|---|---:|---:|---:|\n");
  add(d, "| plain write + fsync | {:.3f} | {:.0f} | 1.00 |\n", ck.plain_write, ck.mb_per_s(ck.plain_write));
  add(d, "| checkpoint save (sync) | {:.3f} | {:.0f} | {:.2f} |\n", ck.save, ck.mb_per_s(ck.save),
      ck.plain_write / ck.save);
  add(d, "| plain read | {:.3f} | {:.0f} | 1.00 |\n", ck.plain_read, ck.mb_per_s(ck.plain_read));
  add(d, "| checkpoint load (CRC checked) | {:.3f} | {:.0f} | {:.2f} |\n", ck.load, ck.mb_per_s(ck.load),
      ck.plain_read / ck.load);
  add(d, "| async save: time the caller is blocked (first) | {:.3f} | | |\n", ck.snapshot_first);
  add(d, "| async save: snapshot + background write | {:.3f} | {:.0f} | {:.2f} |\n", ck.async_total,
      ck.mb_per_s(ck.async_total), ck.plain_write / ck.async_total);
}

}  // namespace

int run_bench_all(const BenchAllOptions& o) {
  COCONUT_CHECK(o.pipeline_ranks >= 2, "bench all: the pipeline needs at least 2 ranks, got {}", o.pipeline_ranks);
  Timer wall;
  Results r;
  r.options = o;
  set_num_threads(o.threads);
  r.threads = num_threads();
  r.plan = make_plan(o, r.threads);
  const Plan& plan = r.plan;
  fs::create_directories(o.dir);

  for (const auto& [name, step] : plan.steps) {
    progress(wall, fmt::format("1/4 Coconut training step, {} ({} timed steps{})", name, step.steps,
                               o.torch ? ", then the PyTorch peer" : ""));
    r.steps.push_back(measure_coconut_step(step));
  }

  progress(wall, "2/4 step time and activation memory, 1..8 thoughts, recompute then keep");
  measure_memory(plan.memory, nullptr, [&](const MemoryRow& row) {
    r.memory[{row.policy, row.thoughts}] = row;
    progress(wall, fmt::format("  {} thoughts, {}: {:.2f} MiB, {:.3f} s/step", row.thoughts,
                         model::activation_policy_name(row.policy), mib(row.peak_bytes), row.step_seconds));
  });

  progress(wall, fmt::format("3/4 pipeline bubble: {} ranks under {}", plan.pipeline.pp, o.mpirun));
  r.pipeline = run_pipeline_job(o, plan.pipeline);
  if (!r.pipeline.error.empty()) progress(wall, "  the pipeline job failed (the document shows the end of its log)");

  progress(wall, fmt::format("4/4 checkpoint save/load in {}", plan.ckpt.dir));
  {
    // Only after the child job: this process becomes a one-rank MPI job (singleton).
    parallel::MpiRuntime mpi(nullptr, nullptr);
    auto world = parallel::MpiCommunicator::world();
    r.ckpt = measure_ckpt(plan.ckpt, *world);
  }
  const int rc = r.losses_agree() && r.pipeline.error.empty() ? 0 : 1;
  if (!o.keep && rc == 0) fs::remove_all(o.dir);  // after a failure it holds the log the document names
  r.seconds = wall.seconds();

  std::string d;
  add(d, "# coconut benchmarks\n\n");
  add(d, "`coconut bench all{}` on this machine: {} core(s), {} thread(s), OpenBLAS {} kernels; {}; wall time {:.0f} "
      "s.\n\n",
      o.quick ? " --quick" : "", sysconf(_SC_NPROCESSORS_ONLN), r.threads, blas_kernel_name(), utc_now(), r.seconds);
  summary_section(d, r);
  step_section(d, r);
  memory_section(d, r);
  pipeline_section(d, r);
  ckpt_section(d, r);
  fmt::print("{}", d);
  return rc;
}

}  // namespace coconut::bench
