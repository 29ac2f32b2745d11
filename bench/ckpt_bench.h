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

// Prints the table on rank 0. Returns 0; throws coconut::Error when a save or a read
// fails or the data read back differs from what was written.
int run_ckpt_bench(const CkptBenchOptions& options, parallel::Communicator& world);

}  // namespace coconut::bench
