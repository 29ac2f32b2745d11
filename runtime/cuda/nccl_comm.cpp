// NcclLocalGroup (nccl_comm.h): single-process NCCL communicators and all-reduce.
#include "runtime/cuda/nccl_comm.h"

#include <numeric>

#include "runtime/check.h"
#include "runtime/cuda/device.h"

namespace coconut {

ncclUniqueId make_nccl_unique_id() {
  ncclUniqueId id;
  NCCL_CHECK(ncclGetUniqueId(&id));
  return id;
}

NcclLocalGroup::NcclLocalGroup(int device_count) {
  const int available = cuda_device_count();
  COCONUT_CHECK(device_count >= 1 && device_count <= available,
                "NcclLocalGroup: asked for {} devices, this process sees {}", device_count, available);
  std::vector<int> devices(device_count);
  std::iota(devices.begin(), devices.end(), 0);
  comms_.assign(device_count, nullptr);
  streams_.assign(device_count, nullptr);
  // A constructor that throws gets no destructor call, so clean up here.
  try {
    NCCL_CHECK(ncclCommInitAll(comms_.data(), device_count, devices.data()));
    for (int d = 0; d < device_count; ++d) {
      ScopedDevice on(d);
      CUDA_CHECK(cudaStreamCreateWithFlags(&streams_[d], cudaStreamNonBlocking));
    }
  } catch (...) {
    release();
    throw;
  }
}

NcclLocalGroup::~NcclLocalGroup() { release(); }

void NcclLocalGroup::release() noexcept {
  // Called from the destructor, so it must not throw: teardown failures are dropped.
  for (size_t d = 0; d < streams_.size(); ++d) {
    if (streams_[d]) (void)cudaStreamDestroy(streams_[d]);
  }
  for (ncclComm_t comm : comms_) {
    if (comm) (void)ncclCommDestroy(comm);
  }
  streams_.clear();
  comms_.clear();
}

void NcclLocalGroup::all_reduce_sum(const std::vector<float*>& buffers, size_t count) {
  COCONUT_CHECK(static_cast<int>(buffers.size()) == size(),
                "all_reduce_sum: {} buffers for a group of {} devices", buffers.size(), size());
  // One thread issues the collective for every device, so the calls must be
  // grouped: otherwise the first would wait forever for its peers.
  NCCL_CHECK(ncclGroupStart());
  for (int d = 0; d < size(); ++d) {
    NCCL_CHECK(ncclAllReduce(buffers[d], buffers[d], count, ncclFloat32, ncclSum, comms_[d],
                             streams_[d]));
  }
  NCCL_CHECK(ncclGroupEnd());
  for (int d = 0; d < size(); ++d) {
    ScopedDevice on(d);
    CUDA_CHECK(cudaStreamSynchronize(streams_[d]));
  }
}

}  // namespace coconut
