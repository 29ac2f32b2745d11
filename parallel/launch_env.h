// Which launcher started this process and how it numbered the processes: mpirun
// (Open MPI's OMPI_COMM_WORLD_* variables), Slurm's srun (SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID, ...) or none (a plain command). MpiRuntime compares this with what
// MPI itself reports, because the two can disagree silently: a job started with
// `srun -n 8` against an MPI library that cannot talk to Slurm (no PMIx / PMI-2)
// starts 8 independent singletons, each "rank 0 of 1", each training the whole model
// alone and writing the same run directory. That must be an error, not a slow run.
//
// The node-local rank picks the GPU (parallel/nccl_comm.h). The launcher's value wins
// over MPI's shared-memory split, because it is what the launcher used to bind
// processes to cores and devices; the two must agree on how many ranks share a node.
//
// Also here, because they are launch-topology questions with no GPU code in them:
// which device a local rank gets, and the check that no two ranks of a node drive the
// same GPU (fed with device UUIDs gathered over MPI by the NCCL backend).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coconut::parallel {

enum class Launcher { none, mpirun, srun };

struct LaunchEnv {
  Launcher launcher = Launcher::none;
  int rank = 0, size = 1;  // the launcher's numbering of the processes
  // Rank on this node and the number of ranks on this node; -1 when the launcher
  // did not say (MPI's shared-memory split fills the gap).
  int local_rank = -1, local_size = -1;
  std::string job_id;   // SLURM_JOB_ID when inside a Slurm allocation (also under mpirun)
  std::string warning;  // something odd but not fatal, for the log ("" when none)

  // One line for the log, e.g. "srun (Slurm job 42): rank 3 of 8, local rank 1 of 4".
  std::string describe() const;
};

const char* launcher_name(Launcher launcher);

// Reads the launcher's variables through `getenv` (std::getenv by default; the tests
// pass their own). Throws a clear error naming the variable when one is malformed.
using EnvLookup = std::function<const char*(const char*)>;
LaunchEnv detect_launch_env(const EnvLookup& getenv = {});

// Throws a clear error when MPI's rank/size disagree with the launcher's, or when the
// launcher's count of ranks on this node disagrees with MPI's shared-memory split
// (mpi_local_size). Nothing to check when there is no launcher.
void check_launch_env(const LaunchEnv& env, int mpi_rank, int mpi_size, int mpi_local_size);

// The task count of node `node_index` in Slurm's compressed tasks-per-node list:
// "2(x3),1" means nodes 0-2 run 2 tasks each and node 3 runs 1. Throws on a malformed
// list or a node index beyond it.
int slurm_tasks_on_node(std::string_view spec, int node_index);

// ---- GPUs ----

// The device a rank with this node-local rank uses, given how many devices it sees.
// When the launcher gave every task its own single GPU (CUDA_VISIBLE_DEVICES per task,
// e.g. srun --gpus-per-task=1) each sees one device: device 0. Otherwise local rank r
// takes device r, and a local rank beyond the devices is a clear error.
int choose_device(int local_rank, int local_size, int device_count);

// What one rank drives: its host and its GPU's identity.
struct RankGpu {
  int rank = 0;
  std::string host;
  std::string uuid;     // the device UUID, as text
  std::string pci_bus;  // "0000:3b:00.0", for the message
  int device = 0;       // the CUDA device index inside that rank's process
};

// Throws a clear error ("... share one GPU ...") naming the first two ranks on the same
// host with the same GPU UUID. Ranks must be given in rank order (any order works, the
// message names the lowest pair).
void check_distinct_gpus(const std::vector<RankGpu>& gpus);

}  // namespace coconut::parallel
