// Thread count of the CPU backend. OpenBLAS (OpenMP build) and our own loops share one
// OpenMP pool, so one setting governs both and they never oversubscribe the cores.
#pragma once

namespace coconut {

// Sets the number of threads for BLAS and our OpenMP loops. n <= 0 picks
// hardware cores / ranks on this node (from OMPI_COMM_WORLD_LOCAL_SIZE or
// SLURM_NTASKS_PER_NODE when launched under mpirun or srun), at least 1.
void set_num_threads(int n);
int num_threads();

}  // namespace coconut
