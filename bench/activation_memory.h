// `coconut bench memory`: peak activation memory per rank against the number of
// continuous thoughts (latent passes), with the keep and the recompute activation
// policies (model/gpt2.h ActivationPolicy), on ProsQA-shaped micro-batches.
//
// Peak bytes are measured by runtime/memory_meter.h (every activation buffer is
// allocated through it); the process's peak RSS (getrusage) is printed next to them as
// a cross-check. With --pp 1 it runs in one process like `coconut train` does
// (MultipassRunner over the micro-batches, gradient accumulation); under
// `mpirun -np S coconut bench memory --pp S` it runs the pipeline executor and prints
// every rank's figures next to the simulator's predicted peak for the same schedule.
#pragma once

#include <string>

#include "model/gpt2.h"

namespace coconut::parallel {
class Communicator;
}

namespace coconut::bench {

struct MemoryBenchOptions {
  model::GPT2Config model;     // defaults set by the caller: 4 layers, d_model 128
  int min_thoughts = 1, max_thoughts = 8;
  int micro_batch = 8;         // sequences per micro-batch
  int micro_batches = 4;       // per step
  int question = 60;           // question tokens (spread +-25% over samples)
  int rest = 10;               // answer tokens
  int steps = 2;               // timed steps after one warm-up step
  int pp = 1;                  // pipeline stages (the MPI world size must equal pp)
  std::string schedule = "ring";
  int threads = 0;             // 0: all cores / ranks
};

// Prints the table on rank 0. world: null for --pp 1 (no MPI needed).
int run_memory_bench(const MemoryBenchOptions& options, parallel::Communicator* world);

}  // namespace coconut::bench
