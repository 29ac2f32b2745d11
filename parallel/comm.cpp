// MPI backend of the Communicator interface, the MPI runtime (init, finalize, local
// rank) and abort_all(). See comm.h for the contract of each call.
#include "parallel/comm.h"

#include <fmt/format.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <numeric>

namespace coconut::parallel {

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return fmt::format("MPI error code {}", code);
  return std::string(text, static_cast<size_t>(length));
}

// ---- abort_all ----

void abort_all(const std::string& message) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    int rank = -1, size = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    std::fprintf(stderr, "coconut: fatal error on rank %d of %d: %s\n", rank, size, message.c_str());
    std::fflush(stderr);
    std::fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, 1);
  } else {
    std::fprintf(stderr, "coconut: fatal error: %s\n", message.c_str());
    std::fflush(stderr);
  }
  std::_Exit(1);  // MPI_Abort should not return; never fall through if it does
}

// ---- Request ----

Request& Request::operator=(Request&& other) noexcept {
  if (this != &other) {
    Request old(std::move(*this));  // its destructor completes the request we replace
    impl_ = std::move(other.impl_);
  }
  return *this;
}

Request::~Request() {
  if (!impl_) return;
  // While an exception unwinds, the partner of this request may never come: waiting
  // would hang, so abandon it; the exception is on its way to abort_all().
  if (std::uncaught_exceptions() > 0) {
    (void)impl_.release();
    return;
  }
  try {
    impl_->wait();
  } catch (const std::exception& e) {
    abort_all(fmt::format("a pending request failed while being destroyed: {}", e.what()));
  }
}

void Request::wait() {
  if (!impl_) return;
  // Clear first: a failed wait must not be retried by the destructor.
  std::unique_ptr<Impl> impl = std::move(impl_);
  impl->wait();
}

namespace {

// MPI 3.1 counts are int; a buffer beyond that is an error rather than a truncation.
int mpi_count(size_t count, const char* what) {
  COCONUT_CHECK(count <= static_cast<size_t>(INT_MAX),
                "{}: {} elements exceed MPI's limit of {} per call; split the buffer", what, count, INT_MAX);
  return static_cast<int>(count);
}

// Receives must deliver exactly what the caller expects: a shorter message means the
// two sides disagree on the protocol, which would otherwise surface as garbage later.
void check_received(const MPI_Status& status, size_t expected, int peer, int tag) {
  int received = 0;
  COCONUT_MPI_CHECK(MPI_Get_count(&status, MPI_FLOAT, &received));
  COCONUT_CHECK(static_cast<size_t>(received) == expected,
                "receive from rank {} with tag {}: expected {} floats, got {}", peer, tag, expected, received);
}

class MpiRequest : public Request::Impl {
 public:
  MpiRequest(MPI_Request request, bool is_recv, size_t count, int peer, int tag)
      : request_(request), is_recv_(is_recv), count_(count), peer_(peer), tag_(tag) {}
  void wait() override {
    MPI_Status status;
    COCONUT_MPI_CHECK(MPI_Wait(&request_, &status));
    if (is_recv_) check_received(status, count_, peer_, tag_);
  }

 private:
  MPI_Request request_;
  bool is_recv_;
  size_t count_;
  int peer_, tag_;
};

}  // namespace

// ---- MpiRuntime ----

MpiRuntime::MpiRuntime(int* argc, char*** argv, int required_thread_level) {
  int initialized = 0;
  COCONUT_MPI_CHECK(MPI_Initialized(&initialized));
  COCONUT_CHECK(!initialized, "MPI is already initialised: create exactly one MpiRuntime per process");
  int provided = MPI_THREAD_SINGLE;
  COCONUT_MPI_CHECK(MPI_Init_thread(argc, argv, required_thread_level, &provided));
  COCONUT_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  COCONUT_CHECK(provided >= required_thread_level,
                "the MPI library provides thread level {} but {} is required (0 single, 1 funneled, "
                "2 serialized, 3 multiple)",
                provided, required_thread_level);
  COCONUT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_));
  COCONUT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));

  // The shared-memory split works under any launcher; the launchers' own variables win
  // for the rank because that is what they used to bind processes to cores and GPUs.
  MPI_Comm node = MPI_COMM_NULL;
  COCONUT_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank_, MPI_INFO_NULL, &node));
  COCONUT_MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
  COCONUT_MPI_CHECK(MPI_Comm_size(node, &local_size_));
  COCONUT_MPI_CHECK(MPI_Comm_free(&node));
  try {
    launch_env_ = detect_launch_env();
    check_launch_env(launch_env_, world_rank_, world_size_, local_size_);
  } catch (const Error& e) {
    // Every rank sees the same disagreement, but a job of several ranks must not leave
    // one waiting for another: take them all down. A lone process (the srun-without-PMI
    // case) finalises and reports the error like any other.
    if (world_size_ > 1) abort_all(e.what());
    MPI_Finalize();
    throw;
  }
  if (launch_env_.local_rank >= 0) local_rank_ = launch_env_.local_rank;
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

// ---- MpiCommunicator ----

std::unique_ptr<MpiCommunicator> MpiCommunicator::world() {
  MPI_Comm comm = MPI_COMM_NULL;
  COCONUT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  return std::make_unique<MpiCommunicator>(comm);
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  COCONUT_CHECK(comm != MPI_COMM_NULL, "MpiCommunicator needs a communicator, got MPI_COMM_NULL");
  COCONUT_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  COCONUT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  COCONUT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  int* tag_ub = nullptr;
  int found = 0;
  COCONUT_MPI_CHECK(MPI_Comm_get_attr(comm_, MPI_TAG_UB, &tag_ub, &found));
  if (found && tag_ub != nullptr) tag_ub_ = *tag_ub;
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_SELF)
    MPI_Comm_free(&comm_);  // a destructor cannot throw; a failure here changes nothing
}

void MpiCommunicator::check_peer(int peer, int tag, const char* what) const {
  COCONUT_CHECK(peer >= 0 && peer < size_, "{}: peer rank {} outside the communicator of {} ranks", what, peer,
                size_);
  COCONUT_CHECK(tag >= 0 && tag <= tag_ub_, "{}: tag {} outside [0, {}] (MPI_TAG_UB)", what, tag, tag_ub_);
}

void MpiCommunicator::barrier() { COCONUT_MPI_CHECK(MPI_Barrier(comm_)); }

void MpiCommunicator::send(const float* data, size_t count, int peer, int tag) {
  check_peer(peer, tag, "send");
  COCONUT_MPI_CHECK(MPI_Send(data, mpi_count(count, "send"), MPI_FLOAT, peer, tag, comm_));
}

void MpiCommunicator::recv(float* data, size_t count, int peer, int tag) {
  check_peer(peer, tag, "recv");
  MPI_Status status;
  COCONUT_MPI_CHECK(MPI_Recv(data, mpi_count(count, "recv"), MPI_FLOAT, peer, tag, comm_, &status));
  check_received(status, count, peer, tag);
}

Request MpiCommunicator::isend(const float* data, size_t count, int peer, int tag) {
  check_peer(peer, tag, "isend");
  MPI_Request request;
  COCONUT_MPI_CHECK(MPI_Isend(data, mpi_count(count, "isend"), MPI_FLOAT, peer, tag, comm_, &request));
  return Request(std::make_unique<MpiRequest>(request, false, count, peer, tag));
}

Request MpiCommunicator::irecv(float* data, size_t count, int peer, int tag) {
  check_peer(peer, tag, "irecv");
  MPI_Request request;
  COCONUT_MPI_CHECK(MPI_Irecv(data, mpi_count(count, "irecv"), MPI_FLOAT, peer, tag, comm_, &request));
  return Request(std::make_unique<MpiRequest>(request, true, count, peer, tag));
}

void MpiCommunicator::all_reduce_sum(float* data, size_t count) {
  COCONUT_MPI_CHECK(
      MPI_Allreduce(MPI_IN_PLACE, data, mpi_count(count, "all_reduce_sum"), MPI_FLOAT, MPI_SUM, comm_));
}

void MpiCommunicator::all_reduce_sum(double* data, size_t count) {
  COCONUT_MPI_CHECK(
      MPI_Allreduce(MPI_IN_PLACE, data, mpi_count(count, "all_reduce_sum"), MPI_DOUBLE, MPI_SUM, comm_));
}

void MpiCommunicator::all_reduce_sum(int64_t* data, size_t count) {
  COCONUT_MPI_CHECK(
      MPI_Allreduce(MPI_IN_PLACE, data, mpi_count(count, "all_reduce_sum"), MPI_INT64_T, MPI_SUM, comm_));
}

void MpiCommunicator::reduce_scatter_sum(const float* send, float* recv, size_t block) {
  COCONUT_MPI_CHECK(
      MPI_Reduce_scatter_block(send, recv, mpi_count(block, "reduce_scatter_sum"), MPI_FLOAT, MPI_SUM, comm_));
}

void MpiCommunicator::all_gather(const float* send, float* recv, size_t block) {
  const int n = mpi_count(block, "all_gather");
  mpi_count(block * static_cast<size_t>(size_), "all_gather (whole result)");
  const bool in_place = send == recv + static_cast<size_t>(rank_) * block;
  COCONUT_MPI_CHECK(MPI_Allgather(in_place ? MPI_IN_PLACE : send, n, MPI_FLOAT, recv, n, MPI_FLOAT, comm_));
}

void MpiCommunicator::broadcast(float* data, size_t count, int root) {
  COCONUT_CHECK(root >= 0 && root < size_, "broadcast: root {} outside the communicator of {} ranks", root, size_);
  COCONUT_MPI_CHECK(MPI_Bcast(data, mpi_count(count, "broadcast"), MPI_FLOAT, root, comm_));
}

void MpiCommunicator::broadcast_bytes(void* data, size_t bytes, int root) {
  COCONUT_CHECK(root >= 0 && root < size_, "broadcast_bytes: root {} outside the communicator of {} ranks", root,
                size_);
  COCONUT_MPI_CHECK(MPI_Bcast(data, mpi_count(bytes, "broadcast_bytes"), MPI_BYTE, root, comm_));
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  COCONUT_CHECK(color >= 0, "split: color must be >= 0 (got {})", color);
  MPI_Comm part = MPI_COMM_NULL;
  COCONUT_MPI_CHECK(MPI_Comm_split(comm_, color, key, &part));
  return std::make_unique<MpiCommunicator>(part);
}

std::vector<int64_t> gather_to_all(Communicator& comm, int64_t mine) {
  std::vector<int64_t> all(static_cast<size_t>(comm.size()), 0);
  all[static_cast<size_t>(comm.rank())] = mine;
  comm.all_reduce_sum(all.data(), all.size());
  return all;
}

std::vector<int> all_ranks(const Communicator& comm) {
  std::vector<int> ranks(static_cast<size_t>(comm.size()));
  std::iota(ranks.begin(), ranks.end(), 0);
  return ranks;
}

std::vector<std::string> gather_strings_to_all(Communicator& comm, const std::vector<int>& from,
                                               const std::string& mine) {
  std::vector<std::string> all(from.size());
  for (size_t k = 0; k < from.size(); ++k) {
    std::string& text = all[k];
    if (from[k] == comm.rank()) text = mine;
    int64_t bytes = static_cast<int64_t>(text.size());
    comm.broadcast_bytes(&bytes, sizeof bytes, from[k]);
    text.resize(static_cast<size_t>(bytes));
    comm.broadcast_bytes(text.data(), text.size(), from[k]);
  }
  return all;
}

}  // namespace coconut::parallel
