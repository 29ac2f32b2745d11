// Thread count shared by OpenBLAS and our OpenMP loops.
#include "runtime/threads.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

extern "C" void openblas_set_num_threads(int);

namespace coconut {
namespace {

int ranks_on_this_node() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MPI_LOCALNRANKS"}) {
    if (const char* v = std::getenv(var)) {
      int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  return 1;
}

}  // namespace

void set_num_threads(int n) {
  if (n <= 0) {
    int cores = static_cast<int>(std::thread::hardware_concurrency());
    n = std::max(1, cores / ranks_on_this_node());
  }
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace coconut
