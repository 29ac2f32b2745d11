// GPT-2 training-step benchmark (see gpt2_step.h).
#include "bench/gpt2_step.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include "model/adamw.h"
#include "model/multipass.h"
#include "runtime/blas.h"
#include "runtime/check.h"
#include "runtime/rng.h"
#include "runtime/threads.h"
#include "runtime/timer.h"

namespace coconut::bench {

double forward_flops(const model::GPT2Config& c, int B, int T) {
  const double N = static_cast<double>(B) * T, C = c.d_model;
  const double per_layer = 24.0 * N * C * C + 2.0 * B * C * T * (T + 1.0);
  return c.n_layer * per_layer + 2.0 * N * C * c.vocab_size;
}

double measure_sgemm_gflops() {
  const int n = 1024;
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), out(a.size());
  double best = 1e30;
  for (int rep = 0; rep < 10; ++rep) {
    Timer timer;
    sgemm(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, out.data(), n);
    best = std::min(best, timer.seconds());
  }
  return 2.0 * n * n * n / best / 1e9;
}

namespace {

// Runs the PyTorch peer and returns its ms per step, or a negative value if it failed.
double run_torch_peer(const Gpt2StepOptions& o, int threads) {
  const std::string cmd = fmt::format(
      "{} {}/bench/torch_gpt2_step.py --layers {} --d-model {} --heads {} --vocab {} --positions {} --batch {} "
      "--seq-len {} --steps {} --warmup {} --threads {}",
      o.python, COCONUT_SOURCE_DIR, o.model.n_layer, o.model.d_model, o.model.n_head, o.model.vocab_size,
      o.model.max_positions, o.batch, o.seq_len, o.steps, o.warmup, threads);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) return -1;
  char line[512];
  double ms = -1;
  std::string version;
  while (fgets(line, sizeof line, pipe.get())) {
    double v;
    char ver[128];
    if (std::sscanf(line, "torch_ms_per_step %lf", &v) == 1) ms = v;
    if (std::sscanf(line, "torch_version %127s", ver) == 1) version = ver;
  }
  if (!version.empty()) fmt::print("PyTorch peer: torch {}\n", version);
  return ms;
}

}  // namespace

int run_gpt2_step_bench(const Gpt2StepOptions& o) {
  set_num_threads(o.threads);
  const int threads = num_threads();
  model::GPT2Config cfg = o.model;
  cfg.dropout = o.dropout;
  const int B = o.batch, T = o.seq_len;

  model::GPT2 gpt(cfg);
  gpt.init_weights(1234);
  model::AdamW opt(model::AdamWConfig{}, gpt.layout(), 0, gpt.num_params());

  // Random tokens; every column but the last predicts the next token (as HF shifts).
  model::SequenceBatch batch;
  batch.B = B;
  batch.T = T;
  CounterRng rng(7, {1});
  batch.tokens.resize(static_cast<size_t>(B) * T);
  for (int& t : batch.tokens) t = static_cast<int>(rng.below(cfg.vocab_size));
  batch.targets.assign(batch.tokens.size(), -100);
  batch.pos_ids.resize(batch.tokens.size());
  batch.key_mask.assign(batch.tokens.size(), 1);
  for (int t = 0; t < T; ++t)
    for (int s = 0; s < B; ++s) {
      batch.pos_ids[t * B + s] = t;
      if (t + 1 < T) batch.targets[t * B + s] = batch.tokens[(t + 1) * B + s];
    }
  batch.passes = {model::Pass{0, T, {}}};
  const float scale = 1.f / batch.num_targets();

  model::MultipassRunner runner;
  double loss = 0, total = 0, best = 1e30;
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    Timer timer;
    gpt.zero_grads();
    if (cfg.dropout > 0) runner.set_dropout(1234, static_cast<uint64_t>(i));
    loss = runner.forward_backward(gpt, batch, scale);
    opt.step(gpt.params(), gpt.grads(), 1e-4f);
    const double s = timer.seconds();
    if (i >= o.warmup) total += s, best = std::min(best, s);
  }
  const double ms = 1e3 * total / o.steps;
  const double flops = 3.0 * forward_flops(cfg, B, T);
  const double gflops = flops / (ms / 1e3) / 1e9;
  const double peak = measure_sgemm_gflops();

  fmt::print("GPT-2 training step (forward + backward + AdamW), fp32 CPU\n");
  fmt::print("model: {} layers, d_model {}, {} heads, vocab {}, {:.1f}M parameters\n", cfg.n_layer, cfg.d_model,
             cfg.n_head, cfg.vocab_size, gpt.num_params() / 1e6);
  fmt::print("batch {} x {} tokens, {} threads, {} timed steps after {} warm-up, dropout {}\n", B, T, threads, o.steps,
             o.warmup, cfg.dropout);
  fmt::print("FLOPs per step = 3 x forward; forward = L (24 N C^2 + 2 B C T (T+1)) + 2 N C V, N = B T: {:.3f} GFLOP\n",
             flops / 1e9);
  fmt::print("\n| system | ms/step | tokens/s | GFLOP/s | % of SGEMM peak |\n|---|---|---|---|---|\n");
  fmt::print("| coconut | {:.1f} | {:.0f} | {:.1f} | {:.1f}% |\n", ms, B * T / (ms / 1e3), gflops, 100 * gflops / peak);
  if (o.torch_peer) {
    const double torch_ms = run_torch_peer(o, threads);
    if (torch_ms > 0) {
      const double tg = flops / (torch_ms / 1e3) / 1e9;
      fmt::print("| pytorch | {:.1f} | {:.0f} | {:.1f} | {:.1f}% |\n", torch_ms, B * T / (torch_ms / 1e3), tg,
                 100 * tg / peak);
      fmt::print("\nspeed ratio coconut / pytorch (tokens/s): {:.2f}x\n", torch_ms / ms);
    } else {
      fmt::print("\nPyTorch peer unavailable (install it with: bash cluster/bootstrap.sh --python)\n");
    }
  }
  fmt::print("SGEMM peak (OpenBLAS {} kernels, 1024^3, best of 10, {} threads): {:.1f} GFLOP/s\n", blas_kernel_name(),
             threads, peak);
  fmt::print("best step {:.1f} ms; last loss {:.4f}\n", 1e3 * best, loss);
  return 0;
}

}  // namespace coconut::bench
