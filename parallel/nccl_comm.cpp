// NcclCommunicator and select_device (nccl_comm.h): NCCL collectives and point to point
// on device buffers, bootstrapped and split over MPI.
#include "parallel/nccl_comm.h"

#include <fmt/format.h>

#include <cstring>
#include <exception>

#include "runtime/cuda/device.h"
#include "runtime/cuda/nccl_comm.h"

namespace coconut::parallel {

// ---- select_device ----

namespace {

// What every rank tells the others about its GPU; fixed size, so one MPI_Allgather.
struct GpuRecord {
  char host[MPI_MAX_PROCESSOR_NAME + 1];
  unsigned char uuid[16];
  int pci_domain, pci_bus, pci_device;
  int device;
};

std::string uuid_text(const unsigned char* b) {
  // nvidia-smi's spelling: GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx
  return fmt::format("GPU-{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                     b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                     b[15]);
}

}  // namespace

int select_device(MpiCommunicator& world, int local_rank, int local_size) {
  std::string why_none;
  const int count = cuda_device_count(&why_none);
  // Every rank must reach the gather below, or a rank that throws early would leave the
  // others waiting: a failure here is recorded and reported after the exchange.
  std::string local_error;
  int device = -1;
  GpuRecord mine{};
  try {
    COCONUT_CHECK(count > 0, "rank {}: no CUDA device ({})", world.rank(), why_none);
    device = choose_device(local_rank, local_size, count);
    CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    std::memcpy(mine.uuid, prop.uuid.bytes, sizeof(mine.uuid));
    mine.pci_domain = prop.pciDomainID;
    mine.pci_bus = prop.pciBusID;
    mine.pci_device = prop.pciDeviceID;
    mine.device = device;
  } catch (const Error& e) {
    local_error = e.what();
  }
  int length = 0;
  COCONUT_MPI_CHECK(MPI_Get_processor_name(mine.host, &length));
  int failed = local_error.empty() ? 0 : 1;
  COCONUT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_SUM, world.handle()));
  if (!local_error.empty()) throw Error(local_error);
  COCONUT_CHECK(failed == 0, "{} other rank(s) could not pick a GPU (see their messages)", failed);

  std::vector<GpuRecord> all(static_cast<size_t>(world.size()));
  COCONUT_MPI_CHECK(MPI_Allgather(&mine, sizeof(GpuRecord), MPI_BYTE, all.data(), sizeof(GpuRecord), MPI_BYTE,
                                  world.handle()));
  std::vector<RankGpu> gpus;
  for (int r = 0; r < world.size(); ++r) {
    const GpuRecord& g = all[static_cast<size_t>(r)];
    gpus.push_back({r, std::string(g.host), uuid_text(g.uuid),
                    fmt::format("{:04x}:{:02x}:{:02x}.0", g.pci_domain, g.pci_bus, g.pci_device), g.device});
  }
  check_distinct_gpus(gpus);  // the same verdict on every rank
  return device;
}

// ---- requests ----

struct NcclCommunicator::Batch {
  NcclCommunicator* owner = nullptr;  // valid until issued: the destructor issues everything
  cudaEvent_t done = nullptr;         // recorded on the stream after the group
  bool issued = false;

  ~Batch() {
    if (done) (void)cudaEventDestroy(done);  // nothing to do about a failure in a destructor
  }
  void wait() {
    if (!issued) owner->flush();
    COCONUT_CHECK(done != nullptr, "a NCCL request outlived its communicator, which was destroyed before issuing it");
    CUDA_CHECK(cudaEventSynchronize(done));
  }
};

namespace {

class NcclRequest : public Request::Impl {
 public:
  explicit NcclRequest(std::shared_ptr<NcclCommunicator::Batch> batch) : batch_(std::move(batch)) {}
  void wait() override { batch_->wait(); }

 private:
  std::shared_ptr<NcclCommunicator::Batch> batch_;
};

bool nccl_has_comm_split() {
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 18, 0)
  int version = 0;
  NCCL_CHECK(ncclGetVersion(&version));
  return version >= NCCL_VERSION(2, 18, 0);  // the library loaded may be older than the header
#else
  return false;
#endif
}

}  // namespace

// ---- NcclCommunicator ----

NcclCommunicator::NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi, NcclOptions options)
    : mpi_(std::move(mpi)), options_(options) {
  COCONUT_CHECK(mpi_ != nullptr, "NcclCommunicator needs an MPI communicator to bootstrap from");
  CUDA_CHECK(cudaGetDevice(&device_));
  ncclUniqueId id{};
  if (mpi_->rank() == 0) id = make_nccl_unique_id();
  mpi_->broadcast_bytes(&id, sizeof(id), 0);
  NCCL_CHECK(ncclCommInitRank(&comm_, mpi_->size(), id, mpi_->rank()));
  create_stream();
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi, ncclComm_t comm, int device,
                                   NcclOptions options)
    : mpi_(std::move(mpi)), comm_(comm), device_(device), options_(options) {
  create_stream();
}

void NcclCommunicator::create_stream() {
  try {
    int nccl_rank = -1, nccl_size = -1;
    NCCL_CHECK(ncclCommUserRank(comm_, &nccl_rank));
    NCCL_CHECK(ncclCommCount(comm_, &nccl_size));
    // MPI carries barrier/broadcast_bytes and NCCL the data: their numbering must match.
    COCONUT_CHECK(nccl_rank == mpi_->rank() && nccl_size == mpi_->size(),
                  "NCCL numbers this rank {} of {}, MPI {} of {}", nccl_rank, nccl_size, mpi_->rank(), mpi_->size());
    ScopedDevice on(device_);
    // Non-blocking: never implicitly ordered with the legacy default stream, so the
    // communication can overlap work on other streams.
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  } catch (...) {
    release();  // a constructor that throws gets no destructor call
    throw;
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (std::uncaught_exceptions() == 0) {
    try {
      flush();  // outstanding Requests must find their batch issued
      if (stream_) CUDA_CHECK(cudaStreamSynchronize(stream_));
    } catch (const std::exception& e) {
      abort_all(fmt::format("NcclCommunicator: pending operations failed at destruction: {}", e.what()));
    }
  }
  release();
}

void NcclCommunicator::release() noexcept {
  // While an exception unwinds, peers may be gone: abort rather than wait for them.
  if (comm_) (void)(std::uncaught_exceptions() > 0 ? ncclCommAbort(comm_) : ncclCommDestroy(comm_));
  if (stream_) (void)cudaStreamDestroy(stream_);
  comm_ = nullptr;
  stream_ = nullptr;
  // Requests still holding the open batch would wait on an event never recorded.
  if (open_batch_) {
    open_batch_->issued = true;
    open_batch_->owner = nullptr;
  }
}

bool NcclCommunicator::splits_with_comm_split() const { return options_.use_comm_split && nccl_has_comm_split(); }

void NcclCommunicator::check_device_buffer(const void* data, size_t count, const char* what) const {
  if (count == 0) return;
  COCONUT_CHECK(data != nullptr, "{}: null buffer for {} elements", what, count);
  cudaPointerAttributes attributes{};
  CUDA_CHECK(cudaPointerGetAttributes(&attributes, data));
  COCONUT_CHECK(attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged,
                "{}: the buffer is not device memory (NcclCommunicator needs cudaMalloc'd buffers; host buffers "
                "go through MpiCommunicator)",
                what);
}

void NcclCommunicator::barrier() {
  flush();
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  mpi_->barrier();
}

Request NcclCommunicator::queue(bool is_send, float* data, size_t count, int peer, int tag, const char* what) {
  COCONUT_CHECK(peer >= 0 && peer < size(), "{}: peer rank {} outside the communicator of {} ranks", what, peer,
                size());
  COCONUT_CHECK(tag >= 0, "{}: tag {} is negative", what, tag);
  check_device_buffer(data, count, what);
  if (!open_batch_) {
    open_batch_ = std::make_shared<Batch>();
    open_batch_->owner = this;
  }
  queued_.push_back({is_send, data, count, peer});
  return Request(std::make_unique<NcclRequest>(open_batch_));
}

Request NcclCommunicator::isend(const float* data, size_t count, int peer, int tag) {
  // NCCL takes a const send buffer; the queue stores one pointer type for both directions.
  return queue(true, const_cast<float*>(data), count, peer, tag, "isend");
}

Request NcclCommunicator::irecv(float* data, size_t count, int peer, int tag) {
  return queue(false, data, count, peer, tag, "irecv");
}

void NcclCommunicator::send(const float* data, size_t count, int peer, int tag) { isend(data, count, peer, tag).wait(); }

void NcclCommunicator::recv(float* data, size_t count, int peer, int tag) { irecv(data, count, peer, tag).wait(); }

void NcclCommunicator::flush() {
  if (queued_.empty()) return;
  ScopedDevice on(device_);
  std::shared_ptr<Batch> batch = std::move(open_batch_);
  std::vector<Queued> ops = std::move(queued_);
  queued_.clear();
  // A group lets the sends and receives of this batch progress together, including a
  // rank's send to itself with its matching receive.
  NCCL_CHECK(ncclGroupStart());
  for (const Queued& op : ops) {
    if (op.is_send)
      NCCL_CHECK(ncclSend(op.data, op.count, ncclFloat32, op.peer, comm_, stream_));
    else
      NCCL_CHECK(ncclRecv(op.data, op.count, ncclFloat32, op.peer, comm_, stream_));
  }
  NCCL_CHECK(ncclGroupEnd());
  CUDA_CHECK(cudaEventCreateWithFlags(&batch->done, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(batch->done, stream_));
  batch->issued = true;
  batch->owner = nullptr;
}

void NcclCommunicator::run_collective_sync() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void NcclCommunicator::all_reduce_sum(float* data, size_t count) {
  check_device_buffer(data, count, "all_reduce_sum");
  flush();
  NCCL_CHECK(ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, stream_));
  run_collective_sync();
}

void NcclCommunicator::all_reduce_sum(double* data, size_t count) {
  check_device_buffer(data, count, "all_reduce_sum");
  flush();
  NCCL_CHECK(ncclAllReduce(data, data, count, ncclFloat64, ncclSum, comm_, stream_));
  run_collective_sync();
}

void NcclCommunicator::all_reduce_sum(int64_t* data, size_t count) {
  check_device_buffer(data, count, "all_reduce_sum");
  flush();
  NCCL_CHECK(ncclAllReduce(data, data, count, ncclInt64, ncclSum, comm_, stream_));
  run_collective_sync();
}

void NcclCommunicator::reduce_scatter_sum(const float* send, float* recv, size_t block) {
  check_device_buffer(send, block * static_cast<size_t>(size()), "reduce_scatter_sum (send)");
  check_device_buffer(recv, block, "reduce_scatter_sum (recv)");
  flush();
  NCCL_CHECK(ncclReduceScatter(send, recv, block, ncclFloat32, ncclSum, comm_, stream_));
  run_collective_sync();
}

void NcclCommunicator::all_gather(const float* send, float* recv, size_t block) {
  // In place (send == recv + rank * block) is NCCL's own in-place form of all-gather.
  check_device_buffer(send, block, "all_gather (send)");
  check_device_buffer(recv, block * static_cast<size_t>(size()), "all_gather (recv)");
  flush();
  NCCL_CHECK(ncclAllGather(send, recv, block, ncclFloat32, comm_, stream_));
  run_collective_sync();
}

void NcclCommunicator::broadcast(float* data, size_t count, int root) {
  COCONUT_CHECK(root >= 0 && root < size(), "broadcast: root {} outside the communicator of {} ranks", root, size());
  check_device_buffer(data, count, "broadcast");
  flush();
  NCCL_CHECK(ncclBroadcast(data, data, count, ncclFloat32, root, comm_, stream_));
  run_collective_sync();
}

void NcclCommunicator::broadcast_bytes(void* data, size_t bytes, int root) {
  flush();
  mpi_->broadcast_bytes(data, bytes, root);
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  COCONUT_CHECK(color >= 0, "split: color must be >= 0 (got {})", color);
  flush();
  // The MPI side first: MPI_Comm_split and ncclCommSplit both order the new ranks by
  // key, then by rank in the parent, so the two numberings agree (create_stream checks).
  MPI_Comm part = MPI_COMM_NULL;
  COCONUT_MPI_CHECK(MPI_Comm_split(mpi_->handle(), color, key, &part));
  auto sub_mpi = std::make_unique<MpiCommunicator>(part);
  ScopedDevice on(device_);
  ncclComm_t sub = nullptr;
  if (splits_with_comm_split()) {
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 18, 0)
    NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, nullptr));
#endif
  } else {
    ncclUniqueId id{};
    if (sub_mpi->rank() == 0) id = make_nccl_unique_id();
    sub_mpi->broadcast_bytes(&id, sizeof(id), 0);
    NCCL_CHECK(ncclCommInitRank(&sub, sub_mpi->size(), id, sub_mpi->rank()));
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(sub_mpi), sub, device_, options_));
}

}  // namespace coconut::parallel
