// Device discovery and the current-device guard (device.h).
#include "runtime/cuda/device.h"

#include <fmt/format.h>

namespace coconut {

int cuda_device_count(std::string* why_none) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  // No GPU, or a driver missing or older than this runtime: a normal state on
  // build machines, reported as zero devices. Anything else is a real fault.
  if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver) {
    (void)cudaGetLastError();
    if (why_none) *why_none = fmt::format("{}: {}", cudaGetErrorName(status), cudaGetErrorString(status));
    return 0;
  }
  CUDA_CHECK(status);
  if (count == 0 && why_none) *why_none = "the CUDA driver reports 0 devices";
  return count;
}

std::string describe_devices() {
  std::string why_none;
  const int count = cuda_device_count(&why_none);
  if (count == 0) return fmt::format("no CUDA device ({})\n", why_none);

  int driver = 0, runtime = 0;
  CUDA_CHECK(cudaDriverGetVersion(&driver));
  CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  // Versions are encoded as 1000 * major + 10 * minor.
  std::string out = fmt::format("CUDA driver {}.{}, runtime {}.{}, {} device(s)\n", driver / 1000,
                                driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10, count);
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, d));
    out += fmt::format("  [{}] {}: {} SMs, {:.1f} GiB, compute capability {}.{}\n", d, prop.name,
                       prop.multiProcessorCount,
                       static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0),
                       prop.major, prop.minor);
  }
  return out;
}

CudaStream::CudaStream() { CUDA_CHECK(cudaStreamCreate(&stream_)); }

CudaStream::~CudaStream() {
  // A destructor must not throw; a failing destroy leaves nothing to retry.
  if (stream_) (void)cudaStreamDestroy(stream_);
}

int select_shared_device(int local_rank) {
  std::string why;
  const int count = cuda_device_count(&why);
  COCONUT_CHECK(count > 0, "local rank {}: no CUDA device ({})", local_rank, why);
  const int device = local_rank % count;
  CUDA_CHECK(cudaSetDevice(device));
  return device;
}

ScopedDevice::ScopedDevice(int device) {
  CUDA_CHECK(cudaGetDevice(&previous_));
  CUDA_CHECK(cudaSetDevice(device));
}

ScopedDevice::~ScopedDevice() {
  // Best effort: a destructor must not throw, and the previous device was valid.
  (void)cudaSetDevice(previous_);
}

}  // namespace coconut
