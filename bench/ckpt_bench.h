// `coconut bench ckpt`: checkpoint save and load throughput (parallel/checkpoint.h) next
// to a plain sequential write + fsync and read of the same bytes on the same disk in the
// same invocation, and the time an asynchronous save blocks the caller. Runs as one
// process or under mpirun (each rank writes its share, as in training).
#pragma once

#include <cstdint>
#include <string>

#include "parallel/comm.h"

namespace coconut::bench {

struct CkptBenchOptions {
  // Elements per tensor; the state is three tensors (weights and two Adam moments), as
  // a ZeRO-1 run saves. Default: GPT-2 124M (124,439,808 parameters), 1.49 GB in all.
  uint64_t params = 124439808;
  std::string dir = "ckpt_bench";  // scratch directory (removed afterwards unless keep)
  int repeats = 2;                 // each measurement; the best is reported
  bool keep = false;
};

// Seconds of each measurement (best of the repeats, the slowest rank's time; the async
// blocking times: the slowest rank's) and the bytes of all ranks.
struct CkptBenchResult {
  uint64_t bytes = 0;
  int ranks = 1;
  double plain_write = 0, save = 0, plain_read = 0, load = 0;
  double snapshot_first = 0, snapshot_reused = 0;  // reused: 0 with one repeat
  double async_total = 0;
  double mb_per_s(double seconds) const { return bytes / 1e6 / seconds; }
};

// Runs the measurements (collective) and returns them on every rank; prints nothing.
// Throws coconut::Error when a save or a read fails or the data read back differs from
// what was written.
CkptBenchResult measure_ckpt(const CkptBenchOptions& options, parallel::Communicator& world);

// Prints the table on rank 0. Returns 0; throws as measure_ckpt.
int run_ckpt_bench(const CkptBenchOptions& options, parallel::Communicator& world);

}  // namespace coconut::bench
