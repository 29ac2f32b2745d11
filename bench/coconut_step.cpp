// Coconut training-step benchmark (see coconut_step.h).
#include "bench/coconut_step.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <chrono>
#include <memory>
#include <thread>

#include "bench/gpt2_step.h"
#include "bench/synthetic_batch.h"
#include "model/adamw.h"
#include "model/hf_weights.h"
#include "model/multipass.h"
#include "runtime/blas.h"
#include "runtime/check.h"
#include "runtime/process.h"
#include "runtime/threads.h"
#include "runtime/timer.h"

namespace coconut::bench {

namespace fs = std::filesystem;

double coconut_forward_flops(const model::GPT2Config& c, int B, int T, int targets) {
  const double N = static_cast<double>(B) * T, C = c.d_model;
  return c.n_layer * (24.0 * N * C * C + 2.0 * B * C * T * (T + 1.0)) + 2.0 * targets * C * c.vocab_size;
}

namespace {

// The PyTorch peer (bench/torch_coconut_step.py) on the batch and weights written to
// dir: it warms up, says `ready FIRST_LOSS VERSION`, then times one step per request.
class TorchPeer {
 public:
  TorchPeer(const CoconutStepOptions& o, const fs::path& dir, int threads) {
    try {
      child_ = std::make_unique<LineChild>(std::vector<std::string>{
          o.python, std::string(COCONUT_SOURCE_DIR) + "/bench/torch_coconut_step.py", "--batch-file",
          (dir / "batch.json").string(), "--weights", (dir / "model").string(), "--warmup",
          std::to_string(o.warmup), "--threads", std::to_string(threads)});
    } catch (const Error&) {
      return;  // no python: the peer is unavailable
    }
    std::string line;
    char version[128] = {};
    while (child_->receive(&line))
      if (std::sscanf(line.c_str(), "ready %lf %127s", &first_loss_, version) == 2) {
        version_ = version;
        return;
      }
    child_.reset();  // it ended without getting ready (torch missing, an error)
  }
  bool ready() const { return child_ != nullptr; }
  // One timed step of the peer, in ms; < 0 when it failed.
  double step() {
    std::string line;
    double ms = -1;
    if (!child_ || !child_->send("step") || !child_->receive(&line) || std::sscanf(line.c_str(), "ms %lf", &ms) != 1)
      return -1;
    return ms;
  }
  const std::string& version() const { return version_; }
  double first_loss() const { return first_loss_; }

 private:
  std::unique_ptr<LineChild> child_;
  std::string version_;
  double first_loss_ = NAN;
};

}  // namespace

double CoconutStepResult::loss_difference() const {
  return std::abs(peer_first_loss - first_loss) / std::abs(first_loss);
}

CoconutStepResult measure_coconut_step(const CoconutStepOptions& o) {
  set_num_threads(o.threads);
  CoconutStepResult r;
  r.threads = num_threads();
  const model::GPT2Config& cfg = o.model;
  const auto samples = prosqa_like_samples(o.batch, o.question, o.thoughts, o.rest, 11);
  const model::SequenceBatch batch = make_synthetic_batch(samples, cfg.vocab_size, 12);
  COCONUT_CHECK(batch.T <= cfg.max_positions, "the batch has {} columns, more than the model's {} positions", batch.T,
                cfg.max_positions);

  model::GPT2 gpt(cfg);
  gpt.init_weights(1234);
  // The peer starts from the same weights: its first loss must equal ours.
  const fs::path dir = fs::temp_directory_path() / fmt::format("coconut-bench-{}", ::getpid());
  fs::create_directories(dir);
  model::export_hf_gpt2((dir / "model").string(), cfg, gpt.params());
  {
    std::ofstream out(dir / "batch.json");
    out << synthetic_batch_json(batch, cfg);
    COCONUT_CHECK(out.good(), "cannot write {}", (dir / "batch.json").string());
  }

  // The peer starts (and warms up) first; then each timed step of ours is followed by
  // one of the peer's, so that both sides see the same moments of a shared machine,
  // gap_ms apart so that neither side's spinning OpenMP threads slow the other's step.
  std::unique_ptr<TorchPeer> peer;
  if (o.torch_peer) {
    peer = std::make_unique<TorchPeer>(o, dir, r.threads);
    if (!peer->ready()) peer.reset();
  }
  model::AdamW opt(model::AdamWConfig{}, gpt.layout(), 0, gpt.num_params());
  model::MultipassRunner runner;
  const int targets = batch.num_targets();
  double total = 0, best = 1e30, peer_total = 0, peer_best = 1e30;
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    Timer timer;
    gpt.zero_grads();
    const double loss = runner.forward_backward(gpt, batch, 1.f / targets);
    opt.step(gpt.params(), gpt.grads(), 1e-4f);
    const double s = timer.seconds();
    if (i == 0) r.first_loss = loss;
    if (i < o.warmup) continue;
    total += s, best = std::min(best, s);
    if (!peer) continue;
    std::this_thread::sleep_for(std::chrono::milliseconds(o.gap_ms));
    const double ms = peer->step();
    std::this_thread::sleep_for(std::chrono::milliseconds(o.gap_ms));
    COCONUT_CHECK(ms > 0, "the PyTorch peer stopped answering (bench/torch_coconut_step.py)");
    peer_total += ms, peer_best = std::min(peer_best, ms);
  }
  r.batch = batch.B, r.columns = batch.T, r.passes = static_cast<int>(batch.passes.size()), r.targets = targets;
  r.params = static_cast<double>(gpt.num_params());
  r.ms = 1e3 * total / o.steps, r.best_ms = 1e3 * best;
  r.flops = 3.0 * coconut_forward_flops(cfg, batch.B, batch.T, targets);
  if (peer) {
    r.peer_ms = peer_total / o.steps, r.peer_best_ms = peer_best, r.peer_first_loss = peer->first_loss();
    r.peer_version = peer->version();
    peer.reset();  // ends it before the SGEMM peak is measured
  }
  r.sgemm_peak_gflops = measure_sgemm_gflops();
  fs::remove_all(dir);
  return r;
}

int run_coconut_step_bench(const CoconutStepOptions& o) {
  const CoconutStepResult r = measure_coconut_step(o);
  const model::GPT2Config& cfg = o.model;
  const double peak = r.sgemm_peak_gflops;
  fmt::print("Coconut training step (all passes + loss + BPTT backward + AdamW), fp32 CPU\n");
  fmt::print("model: {} layers, d_model {}, {} heads, vocab {}, {:.2f}M parameters\n", cfg.n_layer, cfg.d_model,
             cfg.n_head, cfg.vocab_size, r.params / 1e6);
  fmt::print("batch: {} samples x {} columns (question ~{} tokens, {} thoughts, {} answer tokens), {} passes, "
             "{} targets; {} threads; {} timed steps after {} warm-up\n",
             r.batch, r.columns, o.question, o.thoughts, o.rest, r.passes, r.targets, r.threads, o.steps, o.warmup);
  if (o.torch_peer)
    fmt::print("each timed step alternates with one of the PyTorch peer's, {} ms apart (--gap-ms)\n", o.gap_ms);
  fmt::print("FLOPs per step = 3 x forward; forward = L (24 N C^2 + 2 B C T (T+1)) + 2 n_targets C V, N = B T: "
             "{:.3f} GFLOP\n", r.flops / 1e9);
  fmt::print("\n| system | ms/step | tokens/s | GFLOP/s | % of SGEMM peak |\n|---|---|---|---|---|\n");
  fmt::print("| coconut | {:.1f} | {:.0f} | {:.1f} | {:.1f}% |\n", r.ms, r.tokens_per_s(), r.gflops(),
             100 * r.gflops() / peak);
  int rc = 0;
  if (o.torch_peer) {
    if (r.peer_ran()) {
      const double tg = r.flops / (r.peer_ms / 1e3) / 1e9;
      fmt::print("| pytorch {} | {:.1f} | {:.0f} | {:.1f} | {:.1f}% |\n", r.peer_version, r.peer_ms,
                 r.peer_tokens_per_s(), tg, 100 * tg / peak);
      fmt::print("\nspeed ratio coconut / pytorch (tokens/s): {:.2f}x; of the best steps ({:.1f} / {:.1f} ms): "
                 "{:.2f}x\n", r.peer_ms / r.ms, r.best_ms, r.peer_best_ms, r.best_ratio());
      fmt::print("first-step loss: coconut {:.6f}, pytorch {:.6f} (relative difference {:.1e})\n", r.first_loss,
                 r.peer_first_loss, r.loss_difference());
      if (!(r.loss_difference() < 1e-4)) {
        fmt::print(stderr, "the PyTorch peer computed a different loss on the same batch and weights\n");
        rc = 1;
      }
    } else {
      fmt::print("\nPyTorch peer unavailable (install it with: bash cluster/bootstrap.sh --python)\n");
    }
  }
  fmt::print("SGEMM peak (OpenBLAS {} kernels, 1024^3, best of 10, {} threads): {:.1f} GFLOP/s\n", blas_kernel_name(),
             r.threads, peak);
  fmt::print("best step {:.1f} ms\n", r.best_ms);
  return rc;
}

}  // namespace coconut::bench
