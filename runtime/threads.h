// Thread count of the CPU backend. OpenBLAS (OpenMP build) and our own loops share one
// OpenMP pool, so one setting governs both and they never oversubscribe the cores.
#pragma once

#include <omp.h>

#include <cstdint>

namespace coconut {

// Sets the number of threads for BLAS and our OpenMP loops. n <= 0 picks
// hardware cores / ranks on this node (from OMPI_COMM_WORLD_LOCAL_SIZE or
// SLURM_NTASKS_PER_NODE when launched under mpirun or srun), at least 1.
void set_num_threads(int n);
int num_threads();

// Calls body(begin, end) on consecutive chunks of [0, n): one chunk per OpenMP thread
// when n > min_parallel, else all of it in the calling thread. For elementwise loops,
// whose body is an `omp simd` loop over [begin, end). Not `#pragma omp parallel for simd
// if (...)`: GCC 12 compiles that pragma's serial fallback without vectorising it (GELU
// on 16K floats: 6.2 ns per element, against 1.2 ns vectorised on one thread), and the
// latent passes' small tensors always take the fallback.
template <class Body>
void parallel_chunks(int64_t n, int64_t min_parallel, Body&& body) {
  if (n <= min_parallel) {
    body(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    const int64_t k = omp_get_num_threads(), t = omp_get_thread_num();
    body(n * t / k, n * (t + 1) / k);
  }
}

}  // namespace coconut
