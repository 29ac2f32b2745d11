// The NCCL backend of the Communicator interface (comm.h), for GPU ranks whose buffers
// are DEVICE pointers: one process per GPU, started by mpirun or srun. Built only with
// the CUDA backend (COCONUT_HAVE_CUDA).
//
// Setup, on every rank of the job:
//
//   MpiRuntime mpi(&argc, &argv);                   // checks the launcher (launch_env.h)
//   auto world_mpi = MpiCommunicator::world();
//   select_device(*world_mpi, mpi.local_rank(), mpi.local_size());  // this rank's GPU
//   NcclCommunicator world(std::move(world_mpi));   // ncclCommInitRank, id sent over MPI
//   ProcessGrid grid(world, pp, dp);                // split(): one NCCL comm per group
//
// select_device gives local rank r GPU r and stops every rank with a clear error when
// two ranks of one host would drive the same GPU (device UUIDs gathered over MPI) or a
// local rank has no GPU: NCCL itself would fail obscurely or hang in that case.
//
// How a GPU training step uses it (the CUDA executor, a later issue): every
// NcclCommunicator has its own CUDA stream. The pipeline communicator carries the
// activations and fed-back thoughts between stages; the data-parallel communicator
// carries the gradient reduce-scatter and the weight all-gather (ZeRO-1). Because they
// are separate communicators with separate streams, the gradient reduce-scatter of the
// layers whose backward is finished runs on the DP stream while the compute stream goes
// on with the backward of earlier layers; the compute stream waits for the communication
// only where it needs the result (cudaEventRecord on one stream, cudaStreamWaitEvent on
// the other). The calls of this class follow the Communicator contract, which is
// blocking: a collective returns when its result is in the buffer (the stream is
// synchronised) and wait() on a Request returns when the transfer is done. stream()
// exposes the stream for the event-based ordering above.
//
// Point to point, and how it differs from MPI:
// - NCCL has no tags and no message sizes: messages between a pair of ranks match in
//   the order they are posted, and both sides must post the same count. The tag is
//   range-checked and otherwise ignored; the pipeline schedule posts sends and receives
//   in the same order on both sides of each link.
// - A NCCL send does not complete until its receive runs, and operations on one
//   communicator execute in issue order. So isend/irecv do not start at once: they are
//   queued and issued together in one ncclGroupStart/End when any of them is waited on
//   or another operation is called on this communicator. A rank that posts isend(peer)
//   and irecv(peer) and then waits therefore never deadlocks against a peer doing the
//   same, as with MPI. The blocking send/recv are isend/irecv followed by wait.
// barrier() and broadcast_bytes() (small host-side metadata) go through MPI.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <vector>

#include "parallel/comm.h"

namespace coconut::parallel {

// Picks this rank's GPU from its node-local rank (choose_device in launch_env.h; take
// local_rank/local_size from MpiRuntime), makes it current (cudaSetDevice) and returns
// its index. Collective over the world communicator: it gathers (host, GPU UUID) from
// every rank and throws the same clear error on every rank when two ranks of a host
// would share one GPU, or when any rank has no GPU to take.
int select_device(MpiCommunicator& world, int local_rank, int local_size);

struct NcclOptions {
  // split() with ncclCommSplit when the NCCL library has it (2.18+). false: always
  // bootstrap a new communicator from a fresh unique id broadcast inside the MPI
  // sub-communicator, the route for older NCCL (kept testable through this switch).
  bool use_comm_split = true;
};

class NcclCommunicator : public Communicator {
 public:
  // Collective over `mpi`, whose ranks it mirrors: rank 0 makes the ncclUniqueId and
  // broadcasts it over MPI, then every rank joins on the current CUDA device (call
  // select_device first). Keeps `mpi` for barrier, broadcast_bytes and split.
  explicit NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi, NcclOptions options = {});
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  ncclComm_t handle() const { return comm_; }
  MpiCommunicator& mpi() { return *mpi_; }
  // Whether split() uses ncclCommSplit (NCCL 2.18+ and options.use_comm_split).
  bool splits_with_comm_split() const;

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  void barrier() override;
  void send(const float* data, size_t count, int peer, int tag) override;
  void recv(float* data, size_t count, int peer, int tag) override;
  Request isend(const float* data, size_t count, int peer, int tag) override;
  Request irecv(float* data, size_t count, int peer, int tag) override;
  void all_reduce_sum(float* data, size_t count) override;
  void all_reduce_sum(double* data, size_t count) override;
  void all_reduce_sum(int64_t* data, size_t count) override;
  void reduce_scatter_sum(const float* send, float* recv, size_t block) override;
  void all_gather(const float* send, float* recv, size_t block) override;
  void broadcast(float* data, size_t count, int root) override;
  void broadcast_bytes(void* data, size_t bytes, int root) override;  // host memory, over MPI
  std::unique_ptr<Communicator> split(int color, int key) override;

  // The completion of a group of queued point-to-point operations (shared by their
  // Requests; public only so that the Request implementation can name it).
  struct Batch;

 private:
  NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi, ncclComm_t comm, int device, NcclOptions options);
  void create_stream();
  Request queue(bool is_send, float* data, size_t count, int peer, int tag, const char* what);
  void flush();                    // issues the queued sends/receives as one NCCL group
  void run_collective_sync();      // waits for what was enqueued on the stream
  void check_device_buffer(const void* data, size_t count, const char* what) const;
  void release() noexcept;

  struct Queued {
    bool is_send;
    float* data;
    size_t count;
    int peer;
  };

  std::unique_ptr<MpiCommunicator> mpi_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int device_ = 0;
  NcclOptions options_;
  std::vector<Queued> queued_;
  std::shared_ptr<Batch> open_batch_;  // the batch the queued operations will complete with
};

}  // namespace coconut::parallel
