// Communicators: the one interface through which ranks exchange data (DESIGN.md
// sections 3 and 5), and its MPI implementation. The scheduler, the sharded optimizer
// and the checkpoints talk to `Communicator`, never to MPI, so that a NCCL backend
// (device buffers, same calls) can slot in later. Buffers are raw pointers and counts
// are element counts; whether a pointer is host or device memory is the backend's
// business.
//
// Errors: every MPI call is checked (COCONUT_MPI_CHECK below) and a failure
// throws coconut::Error naming the call, the file and the line; our communicators use
// MPI_ERRORS_RETURN so that MPI reports failures instead of killing the job silently.
// A rank that cannot go on calls abort_all(), which prints one message and takes every
// rank down with it, so that no rank waits forever on a partner that died (DESIGN.md 8).
// The shape of an MPI main:
//
//   int main(int argc, char** argv) {
//     coconut::parallel::MpiRuntime mpi(&argc, &argv);
//     try { ... } catch (const std::exception& e) { coconut::parallel::abort_all(e.what()); }
//   }
#pragma once

// Only MPI's C API is used: keep the deprecated C++ bindings out.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/launch_env.h"
#include "runtime/check.h"

// Checks an MPI call's return code; a failure throws coconut::Error naming the call,
// MPI's description of the error, and this file and line.
#define COCONUT_MPI_CHECK(call)                                                         \
  do {                                                                                  \
    const int coconut_mpi_rc_ = (call);                                                 \
    if (coconut_mpi_rc_ != MPI_SUCCESS) [[unlikely]] {                                  \
      COCONUT_FAIL("MPI call {} failed: {}", #call,                                     \
                   ::coconut::parallel::mpi_error_string(coconut_mpi_rc_));             \
    }                                                                                   \
  } while (0)

namespace coconut::parallel {

// MPI's text for an error code ("MPI_ERR_TRUNCATE: message truncated", ...).
std::string mpi_error_string(int code);

// A pending non-blocking send or receive. Move-only. wait() blocks until the buffer
// may be reused (send) or holds the data (receive); waiting twice is a no-op.
// Destroying a pending request waits for it, except while an exception is unwinding
// the stack: then the request is abandoned, because its partner may be gone and the
// error is on its way to abort_all().
class Request {
 public:
  struct Impl {
    virtual ~Impl() = default;
    virtual void wait() = 0;
  };

  Request() = default;
  explicit Request(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
  Request(Request&&) noexcept = default;
  Request& operator=(Request&& other) noexcept;
  ~Request();

  void wait();
  bool pending() const { return impl_ != nullptr; }

 private:
  std::unique_ptr<Impl> impl_;
};

// A group of ranks. Every collective must be called by all members in the same order
// with the same counts; tags tell point-to-point messages between the same pair apart.
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void barrier() = 0;

  // Point to point: `count` floats to / from rank `peer` of this communicator.
  // A receive checks that exactly `count` floats arrived.
  virtual void send(const float* data, size_t count, int peer, int tag) = 0;
  virtual void recv(float* data, size_t count, int peer, int tag) = 0;
  virtual Request isend(const float* data, size_t count, int peer, int tag) = 0;
  virtual Request irecv(float* data, size_t count, int peer, int tag) = 0;

  // In place: data[i] becomes the sum of data[i] over all ranks, on every rank.
  virtual void all_reduce_sum(float* data, size_t count) = 0;
  virtual void all_reduce_sum(double* data, size_t count) = 0;
  virtual void all_reduce_sum(int64_t* data, size_t count) = 0;
  // send holds size() blocks of `block` floats; rank r receives into recv[0, block) the
  // sum over ranks of block r. send and recv must not overlap.
  virtual void reduce_scatter_sum(const float* send, float* recv, size_t block) = 0;
  // Every rank contributes `block` floats; recv[r*block, (r+1)*block) gets rank r's.
  // send may be recv + rank()*block (in place).
  virtual void all_gather(const float* send, float* recv, size_t block) = 0;
  // data on rank `root` is copied to every rank.
  virtual void broadcast(float* data, size_t count, int root) = 0;
  virtual void broadcast_bytes(void* data, size_t bytes, int root) = 0;

  // Collective: ranks with the same color (>= 0) form a new communicator, ordered by
  // key (ties by rank here). Every rank gets the communicator of its own color.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
};

// Prints "coconut: fatal error on rank R of N: msg" once to stderr and aborts every
// rank (MPI_Abort on MPI_COMM_WORLD, exit code 1). Without MPI running it just exits(1).
[[noreturn]] void abort_all(const std::string& message);

// Collective: every rank's value, in rank order, on every rank (each rank fills its own
// entry of a zeroed vector and a sum all-reduce assembles them).
std::vector<int64_t> gather_to_all(Communicator& comm, int64_t mine);
// 0, 1, ..., size - 1: every rank, as the `from` of gather_strings_to_all.
std::vector<int> all_ranks(const Communicator& comm);
// Collective: the strings of the ranks `from` (each rank's `mine` where it is one of
// them), in that order, on every rank: each broadcasts its size, then its bytes.
std::vector<std::string> gather_strings_to_all(Communicator& comm, const std::vector<int>& from,
                                               const std::string& mine);

// MPI_Init_thread / MPI_Finalize for the life of the object: one per process, first
// thing in main. Rank and size come from MPI, so it works the same under mpirun and
// srun. Sets MPI_ERRORS_RETURN on MPI_COMM_WORLD.
class MpiRuntime {
 public:
  // required_thread_level: MPI_THREAD_SINGLE / FUNNELED / SERIALIZED / MULTIPLE; a
  // library that offers less is an error, not a silent downgrade.
  MpiRuntime(int* argc, char*** argv, int required_thread_level = MPI_THREAD_FUNNELED);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // Rank among the processes on this node and their count (for picking a GPU). From
  // the launcher (OMPI_COMM_WORLD_LOCAL_RANK under mpirun, SLURM_LOCALID under srun),
  // else from a shared-memory split of MPI_COMM_WORLD; the two must agree on the count.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  // Which launcher started the job (launch_env.h). The constructor has already
  // checked that MPI's rank and size agree with it: a job started by srun against an
  // MPI without Slurm support (every task "rank 0 of 1") stops with a clear error.
  const LaunchEnv& launch_env() const { return launch_env_; }

 private:
  int world_rank_ = 0, world_size_ = 1, local_rank_ = 0, local_size_ = 1;
  LaunchEnv launch_env_;
};

// A Communicator on an MPI communicator that it owns (frees on destruction).
class MpiCommunicator : public Communicator {
 public:
  // A duplicate of MPI_COMM_WORLD, so that our traffic never mixes with other users'.
  static std::unique_ptr<MpiCommunicator> world();
  // Takes ownership of comm (MPI_COMM_NULL is an error).
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  MPI_Comm handle() const { return comm_; }  // e.g. to bootstrap NCCL

  int rank() const override { return rank_; }
  int size() const override { return size_; }
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
  void broadcast_bytes(void* data, size_t bytes, int root) override;
  std::unique_ptr<Communicator> split(int color, int key) override;

 private:
  void check_peer(int peer, int tag, const char* what) const;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  int tag_ub_ = 32767;  // the MPI standard's guaranteed minimum; replaced by MPI_TAG_UB
};

}  // namespace coconut::parallel
