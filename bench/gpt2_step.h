// Benchmark of one GPT-2 training step on the CPU backend (forward, loss, backward,
// AdamW), with the FLOP count, the machine's measured SGEMM peak and a PyTorch peer
// run in the same invocation.
#pragma once

#include <string>

#include "model/gpt2.h"

namespace coconut::bench {

struct Gpt2StepOptions {
  model::GPT2Config model;  // defaults set by the caller (GPT-2 124M shape)
  int batch = 4;
  int seq_len = 128;
  int steps = 5;
  int warmup = 1;
  int threads = 0;             // 0: all cores
  float dropout = 0;           // model dropout during the timed training steps
  bool torch_peer = true;      // run bench/torch_gpt2_step.py in the same invocation
  std::string python = "python3";
};

// FLOPs of the matrix products of one forward over B x T tokens (all columns attend
// causally): per layer 24 N C^2 (qkv, projection, fc, fc projection; N = B T) plus
// 2 B C T (T + 1) for QK^T and PV, plus 2 N C V for the tied LM head.
// A training step counts 3x the forward (the backward does twice the forward's products).
double forward_flops(const model::GPT2Config& c, int B, int T);

// Measured single-precision GEMM throughput of this machine's BLAS with the current
// thread count, in GFLOP/s (best of several 1024^3 products).
double measure_sgemm_gflops();

// Runs the benchmark and prints a table to stdout. Returns 0 on success.
int run_gpt2_step_bench(const Gpt2StepOptions& options);

}  // namespace coconut::bench
