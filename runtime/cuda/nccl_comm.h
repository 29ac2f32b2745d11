// NCCL collectives in their single-process form: one communicator per local GPU,
// all driven from one thread (ncclCommInitAll). Multi-process jobs (one rank per
// GPU under mpirun or srun) use parallel/nccl_comm.h, built on make_nccl_unique_id.
#pragma once

#include <cstddef>
#include <vector>

#include "runtime/cuda/cuda_check.h"

namespace coconut {

// The id that names one communicator across processes: rank 0 makes it and
// sends it to the others (e.g. MPI_Bcast), then each calls ncclCommInitRank.
ncclUniqueId make_nccl_unique_id();

// Communicators for devices 0 .. device_count-1 of this process, with one
// stream per device on which the collectives run.
class NcclLocalGroup {
 public:
  explicit NcclLocalGroup(int device_count);
  ~NcclLocalGroup();
  NcclLocalGroup(const NcclLocalGroup&) = delete;
  NcclLocalGroup& operator=(const NcclLocalGroup&) = delete;

  int size() const { return static_cast<int>(comms_.size()); }
  ncclComm_t comm(int device) const { return comms_.at(device); }
  cudaStream_t stream(int device) const { return streams_.at(device); }

  // In-place sum: buffers[d] lives on device d and holds `count` floats; after
  // the call every buffer holds the element-wise sum over all devices. Returns
  // once every device has finished.
  void all_reduce_sum(const std::vector<float*>& buffers, size_t count);

 private:
  void release() noexcept;

  std::vector<ncclComm_t> comms_;
  std::vector<cudaStream_t> streams_;
};

}  // namespace coconut
