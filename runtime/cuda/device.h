// CUDA devices and device memory: how many GPUs there are, what they are, which
// one is current, and DeviceBuffer, the owner of one cudaMalloc'd array.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "runtime/check.h"
#include "runtime/cuda/cuda_check.h"

namespace coconut {

// Number of CUDA devices this process can use. Returns 0, not an error, when
// there is no GPU or no (new enough) driver; *why_none then says which, so that
// a test can print why it skipped. Any other failure throws.
int cuda_device_count(std::string* why_none = nullptr);

// One line per device: index, name, SM count, memory, compute capability; plus
// the driver and runtime versions. Says why when there is none.
std::string describe_devices();

// Makes GPU local_rank % (visible GPUs) current and returns it: the ranks of a node
// spread over its GPUs and may share one (what host-memory messaging allows and NCCL
// does not: parallel/nccl_comm.h select_device). Throws when there is no GPU.
int select_shared_device(int local_rank);

// Makes `device` current for a scope and restores the previous one after,
// since cudaSetDevice is per thread state that callers do not expect to change.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device);
  ~ScopedDevice();
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

 private:
  int previous_ = 0;
};

// One CUDA stream, owned. Created blocking (the default flags), so work on it is
// ordered with the legacy default stream that cudaMemcpy and DeviceBuffer's copies
// use: a host copy after queued work sees its results without an explicit sync. A
// blocking stream can be captured into a CUDA graph as long as nothing touches the
// legacy stream while the capture runs.
class CudaStream {
 public:
  CudaStream();
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// `count` elements of T on the device that was current at construction.
// Move-only; frees in the destructor. Copies to and from host memory are
// synchronous (cudaMemcpy), which is what the tests and setup code want.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : count_(count) {
    if (count_ > 0) CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), count_ * sizeof(T)));
  }
  ~DeviceBuffer() { release(); }

  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

  // Copies host[0, count) into the first `count` elements.
  void copy_from_host(const T* host, size_t count) {
    COCONUT_CHECK(count <= count_, "DeviceBuffer::copy_from_host: {} elements into a buffer of {}",
                  count, count_);
    if (count > 0) CUDA_CHECK(cudaMemcpy(data_, host, count * sizeof(T), cudaMemcpyHostToDevice));
  }
  void copy_from_host(const std::vector<T>& host) { copy_from_host(host.data(), host.size()); }

  // Copies the first `count` elements into host[0, count).
  void copy_to_host(T* host, size_t count) const {
    COCONUT_CHECK(count <= count_, "DeviceBuffer::copy_to_host: {} elements from a buffer of {}",
                  count, count_);
    if (count > 0) CUDA_CHECK(cudaMemcpy(host, data_, count * sizeof(T), cudaMemcpyDeviceToHost));
  }
  std::vector<T> to_host() const {
    std::vector<T> host(count_);
    copy_to_host(host.data(), count_);
    return host;
  }

 private:
  void release() noexcept {
    // With unified addressing cudaFree needs no particular current device.
    // A failure here (e.g. the runtime already unloading at exit) cannot be
    // thrown from a destructor and leaves nothing to clean up, so it is dropped.
    if (data_) (void)cudaFree(data_);
    data_ = nullptr;
    count_ = 0;
  }

  T* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace coconut
