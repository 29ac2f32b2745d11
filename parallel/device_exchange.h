// What data-parallel GPU ranks exchange in a training step (train.device: cuda under
// mpirun, parallel.pp 1; launcher/device_step_cuda.cpp): every rank holds the whole
// model on its GPU and runs its share of the step's micro-batches; the gradients are
// summed over the ranks; each rank applies AdamW to its ZeRO-1 shard of the flat buffer
// (shard_range(0, n, ranks, rank), as ShardedAdamW: moments of that shard only); the
// updated shards then go to every rank. Built only with the CUDA backend.
//
// Two ways to move the data (parallel.gpu_comm):
//   nccl  one GPU per rank (select_device). A bucket's gradient (one layer's parameters;
//         layer_gradient_buckets) is summed by ncclAllReduce on the communicator's own
//         stream as soon as the backward has finished it, while the compute stream goes
//         on with the layers below it: the communication overlaps the backward. The
//         compute stream waits for the sums (an event) only where the optimizer needs
//         them. Every call only queues work, so a captured CUDA graph can hold it.
//   mpi   through host memory over MPI, after the backward (no overlap). Ranks may share
//         a GPU, which NCCL refuses: one GPU can run the data-parallel path this way.
// Both give every rank the same bits: a collective's result is the same on every rank,
// and each shard is updated by one rank only.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "parallel/comm.h"
#include "parallel/partition.h"
#include "parallel/zero_adamw.h"

namespace coconut::parallel {

class DeviceExchange {
 public:
  virtual ~DeviceExchange() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Whether sum_gradients only queues work (nccl), so that it can be called bucket by
  // bucket from inside the backward; false: it waits for the compute stream (mpi).
  virtual bool overlaps_backward() const = 0;
  // grads[range] (device) becomes its sum over the ranks, after the work queued on
  // `compute` so far. Every rank calls it with the same ranges in the same order.
  virtual void sum_gradients(float* grads, ParamSlice range, cudaStream_t compute) = 0;
  // Work queued on `compute` after this call sees every sum requested before it.
  virtual void wait_for_sums(cudaStream_t compute) = 0;
  // params (device, n floats): each rank's shard, shard_range(0, n, size(), r), to every
  // rank, after the work queued on `compute` so far; work queued there later sees it.
  virtual void share_shards(float* params, size_t n, cudaStream_t compute) = 0;
  // A host number summed over the ranks (the loss, squared gradient norms).
  virtual double sum(double x) = 0;
};

// parallel.gpu_comm: nccl. Collective over `world` (MPI; its ranks are the replicas):
// picks this rank's GPU with select_device (one GPU per rank, checked) and joins a NCCL
// communicator on it. local_rank / local_size: this rank's place on its node (MpiRuntime).
std::unique_ptr<DeviceExchange> make_nccl_exchange(MpiCommunicator& world, int local_rank, int local_size);

// parallel.gpu_comm: mpi. Uses `world` (which must outlive it) for the sums and the
// shards; makes GPU local_rank % (visible GPUs) current: ranks may share one.
std::unique_ptr<DeviceExchange> make_host_exchange(Communicator& world, int local_rank);

}  // namespace coconut::parallel
