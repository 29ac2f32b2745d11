// `coconut bench all`: every benchmark of issue #8 in one invocation, printed as one
// Markdown document (a summary table, then a section per part):
//   1. a Coconut training step with latent passes against the PyTorch peer (same model,
//      batch, pass plan and thread count), and its GFLOP/s against the measured SGEMM peak
//      (bench/coconut_step.h);
//   2. step time and peak activation memory as the number of thoughts grows 1..8, keep
//      vs recompute, in one process (bench/activation_memory.h);
//   3. the pipeline bubble per schedule, measured by the executor on real pipeline ranks
//      next to the simulator's prediction: a child `mpirun -np 2 coconut bench memory
//      --pp 2 --json` whose JSON rows are read back;
//   4. checkpoint save and load MB/s against a plain sequential write and read of the
//      same bytes (bench/ckpt_bench.h).
// Parts 1, 2 and 4 run in this process through the same functions as their own
// subcommands. Progress goes to stderr, the document to stdout.
#pragma once

#include <string>

namespace coconut::bench {

struct BenchAllOptions {
  bool quick = false;      // small shapes: the whole document in well under a minute
  int threads = 0;         // 0: all cores; the pipeline ranks share them
  bool torch = true;       // run the PyTorch peer
  std::string dir = "bench_all";  // scratch (checkpoint files, the mpirun log); removed afterwards
  bool keep = false;       // keep dir
  int pipeline_ranks = 2;  // pipeline stages = MPI ranks of the child job
  std::string mpirun = "mpirun";
};

// Runs every part and prints the document. Returns 0, or 1 when a part failed (the
// document says which) or the PyTorch peer computed a different first-step loss.
int run_bench_all(const BenchAllOptions& options);

}  // namespace coconut::bench
