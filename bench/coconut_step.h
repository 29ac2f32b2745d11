// Benchmark of one Coconut training step on the CPU backend: a ProsQA-shaped batch with
// continuous thoughts, every pass of the latent recurrence, the loss, backpropagation
// through all passes and AdamW, against a PyTorch peer (bench/torch_coconut_step.py)
// that replays the same batch and pass plan from the same initial weights in the same
// invocation, with the same thread count.
#pragma once

#include <string>

#include "model/gpt2.h"

namespace coconut::bench {

struct CoconutStepOptions {
  model::GPT2Config model;  // defaults set by the caller
  int batch = 16;
  int question = 60;   // mean question tokens (ProsQA's are ~50-70 with a word tokenizer)
  int thoughts = 6;    // continuous thoughts per sample (= latent passes + 1 sequential passes)
  int rest = 10;       // answer tokens after <eot>
  int steps = 5;
  int warmup = 1;
  int threads = 0;     // 0: all cores
  bool torch_peer = true;
  std::string python = "python3";
  // Idle time between our step and the peer's, each way. After a parallel region GNU
  // OpenMP's threads spin before they sleep (GOMP_SPINCOUNT pauses: about 15 ms on this
  // Xeon); without a gap one side's spinning threads take a core from the other's step.
  int gap_ms = 100;
};

// FLOPs of one forward of a Coconut batch: every column is computed exactly once over
// the passes, so the transformer part equals one causal forward over B x T, and the LM
// head runs on the targeted rows only: L (24 N C^2 + 2 B C T (T+1)) + 2 n_targets C V.
double coconut_forward_flops(const model::GPT2Config& c, int B, int T, int targets);

// What one run measured. The peer fields stay at their defaults when the peer did not
// run (torch_peer false, or python/torch unavailable: peer_ms < 0).
struct CoconutStepResult {
  int threads = 0, batch = 0, columns = 0, passes = 0, targets = 0;
  double params = 0;           // model parameters
  double flops = 0;            // per step (3 x forward)
  double ms = 0, best_ms = 0;  // mean and best timed step
  double first_loss = 0;
  double sgemm_peak_gflops = 0;
  double peer_ms = -1, peer_best_ms = -1, peer_first_loss = 0;  // peer: mean and best step
  std::string peer_version;
  double tokens_per_s() const { return batch * columns / (ms / 1e3); }
  double gflops() const { return flops / (ms / 1e3) / 1e9; }
  bool peer_ran() const { return peer_ms > 0; }
  double peer_tokens_per_s() const { return batch * columns / (peer_ms / 1e3); }
  // Speed ratio of the fastest timed steps: on a shared machine the mean of either side
  // takes whatever else ran meanwhile, the best step much less so.
  double best_ratio() const { return peer_best_ms / best_ms; }
  // |peer - coconut| / |coconut| of the first-step loss (same batch and weights).
  double loss_difference() const;
};

// Runs the step (and the peer when asked) and returns the figures; prints nothing.
CoconutStepResult measure_coconut_step(const CoconutStepOptions& options);

// Prints a Markdown table (ms/step, tokens/s, GFLOP/s, % of SGEMM peak, both systems,
// the ratio) and the first-step losses of both (same weights: they must agree).
int run_coconut_step_bench(const CoconutStepOptions& options);

}  // namespace coconut::bench
