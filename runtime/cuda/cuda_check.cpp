// Formats the failures caught by CUDA_CHECK / CUBLAS_CHECK / NCCL_CHECK (cuda_check.h)
// and throws them through coconut::throw_error, so they read like every other error.
#include "runtime/cuda/cuda_check.h"

#include "runtime/check.h"

namespace coconut {

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  // Clear the error so that a caller who catches and carries on is not tripped
  // by it again at the next unrelated call (sticky errors stay regardless).
  (void)cudaGetLastError();
  throw_error(file, line,
              fmt::format("CUDA error {} ({}): {} in {}", cudaGetErrorName(status),
                          static_cast<int>(status), cudaGetErrorString(status), call));
}

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  throw_error(file, line,
              fmt::format("cuBLAS error {} ({}): {} in {}", cublasGetStatusName(status),
                          static_cast<int>(status), cublasGetStatusString(status), call));
}

void throw_nccl_error(ncclResult_t status, const char* call, const char* file, int line) {
  // ncclGetLastError carries NCCL's own detail (which peer, which transport), when it has one.
  const char* detail = ncclGetLastError(nullptr);
  throw_error(file, line,
              fmt::format("NCCL error {}: {}{}{} in {}", static_cast<int>(status),
                          ncclGetErrorString(status), detail && *detail ? ": " : "",
                          detail ? detail : "", call));
}

}  // namespace coconut
