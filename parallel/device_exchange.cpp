// DeviceExchange (device_exchange.h): NCCL on a stream of its own, ordered with the
// compute stream by events; or host copies and MPI.
#include "parallel/device_exchange.h"

#include <nccl.h>

#include <vector>

#include "parallel/nccl_comm.h"
#include "runtime/cuda/device.h"

namespace coconut::parallel {
namespace {

// One CUDA event, owned; no timing (cheaper, and what cross-stream ordering needs).
class Event {
 public:
  Event() { CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~Event() {
    if (event_) (void)cudaEventDestroy(event_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// `waiter` runs what is queued on it after this call only once what is queued on
// `first` so far is done.
void order_after(cudaStream_t waiter, cudaStream_t first, const Event& event) {
  CUDA_CHECK(cudaEventRecord(event.get(), first));
  CUDA_CHECK(cudaStreamWaitEvent(waiter, event.get(), 0));
}

class NcclExchange final : public DeviceExchange {
 public:
  explicit NcclExchange(std::unique_ptr<NcclCommunicator> comm) : comm_(std::move(comm)) {}

  int rank() const override { return comm_->rank(); }
  int size() const override { return comm_->size(); }
  bool overlaps_backward() const override { return true; }

  void sum_gradients(float* grads, ParamSlice range, cudaStream_t compute) override {
    if (range.size() == 0) return;
    order_after(comm_->stream(), compute, ready_);
    NCCL_CHECK(ncclAllReduce(grads + range.begin, grads + range.begin, range.size(), ncclFloat32, ncclSum,
                             comm_->handle(), comm_->stream()));
  }

  void wait_for_sums(cudaStream_t compute) override { order_after(compute, comm_->stream(), done_); }

  void share_shards(float* params, size_t n, cudaStream_t compute) override {
    order_after(comm_->stream(), compute, ready_);
    // One broadcast per shard, from its owner, in place: no padded buffer, and the
    // shards may differ in length.
    NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < size(); ++r) {
      const ShardRange s = shard_range(0, n, size(), r);
      if (s.end > s.begin)
        NCCL_CHECK(ncclBroadcast(params + s.begin, params + s.begin, s.end - s.begin, ncclFloat32, r, comm_->handle(),
                                 comm_->stream()));
    }
    NCCL_CHECK(ncclGroupEnd());
    order_after(compute, comm_->stream(), done_);
  }

  double sum(double x) override {
    comm_->mpi().all_reduce_sum(&x, 1);
    return x;
  }

 private:
  std::unique_ptr<NcclCommunicator> comm_;
  Event ready_, done_;  // compute -> communication, communication -> compute
};

class HostExchange final : public DeviceExchange {
 public:
  explicit HostExchange(Communicator& world) : world_(world) {}

  int rank() const override { return world_.rank(); }
  int size() const override { return world_.size(); }
  bool overlaps_backward() const override { return false; }

  void sum_gradients(float* grads, ParamSlice range, cudaStream_t compute) override {
    if (range.size() == 0) return;
    CUDA_CHECK(cudaStreamSynchronize(compute));
    host_.resize(range.size());
    CUDA_CHECK(cudaMemcpy(host_.data(), grads + range.begin, range.size() * sizeof(float), cudaMemcpyDeviceToHost));
    world_.all_reduce_sum(host_.data(), host_.size());
    CUDA_CHECK(cudaMemcpy(grads + range.begin, host_.data(), range.size() * sizeof(float), cudaMemcpyHostToDevice));
  }

  void wait_for_sums(cudaStream_t) override {}  // sum_gradients returned with the sums in place

  void share_shards(float* params, size_t n, cudaStream_t compute) override {
    CUDA_CHECK(cudaStreamSynchronize(compute));
    // all_gather takes equal blocks: rank r's shard sits at r * block of a padded copy.
    const size_t block = shard_range(0, n, size(), 0).end;
    const ShardRange mine = shard_range(0, n, size(), rank());
    host_.assign(block * static_cast<size_t>(size()), 0.f);
    float* own = host_.data() + static_cast<size_t>(rank()) * block;
    if (mine.end > mine.begin)
      CUDA_CHECK(cudaMemcpy(own, params + mine.begin, (mine.end - mine.begin) * sizeof(float), cudaMemcpyDeviceToHost));
    world_.all_gather(own, host_.data(), block);
    CUDA_CHECK(cudaMemcpy(params, host_.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  }

  double sum(double x) override {
    world_.all_reduce_sum(&x, 1);
    return x;
  }

 private:
  Communicator& world_;
  std::vector<float> host_;  // the staging copy
};

}  // namespace

std::unique_ptr<DeviceExchange> make_nccl_exchange(MpiCommunicator& world, int local_rank, int local_size) {
  select_device(world, local_rank, local_size);
  std::unique_ptr<Communicator> dup = world.split(0, world.rank());  // NCCL's bootstrap gets an MPI comm of its own
  auto* mpi = dynamic_cast<MpiCommunicator*>(dup.get());
  COCONUT_CHECK(mpi != nullptr, "make_nccl_exchange: MpiCommunicator::split returned another kind of communicator");
  dup.release();
  return std::make_unique<NcclExchange>(std::make_unique<NcclCommunicator>(std::unique_ptr<MpiCommunicator>(mpi)));
}

std::unique_ptr<DeviceExchange> make_host_exchange(Communicator& world, int local_rank) {
  select_shared_device(local_rank);
  return std::make_unique<HostExchange>(world);
}

}  // namespace coconut::parallel
