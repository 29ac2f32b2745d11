// Tests of the CUDA backend skeleton (runtime/cuda/): error macros, device
// query, a kernel launch, cuBLAS sgemm against the CPU sgemm, NCCL all-reduce.
// Tests that need a GPU skip when there is none (CTest shows them as skipped),
// except under COCONUT_REQUIRE_GPU=1 (set by tests/gpu/run.sh on GPU machines),
// where a missing GPU is a failure rather than a silent skip.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "runtime/blas.h"
#include "runtime/check.h"
#include "runtime/cuda/cublas_gemm.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/nccl_comm.h"

namespace coconut {
namespace {

// ---- error macros: need no GPU, only the libraries' error tables ----

template <typename Fn>
std::string error_message(Fn fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CudaCheck, MacrosThrowNamingCodeCallAndLine) {
  const std::string cuda = error_message([] { CUDA_CHECK(cudaErrorInvalidValue); });
  EXPECT_NE(cuda.find("cudaErrorInvalidValue"), std::string::npos) << cuda;
  EXPECT_NE(cuda.find("test_cuda.cpp:"), std::string::npos) << cuda;

  const std::string cublas = error_message([] { CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE); });
  EXPECT_NE(cublas.find("CUBLAS_STATUS_INVALID_VALUE"), std::string::npos) << cublas;
  EXPECT_NE(cublas.find("test_cuda.cpp:"), std::string::npos) << cublas;

  const std::string nccl = error_message([] { NCCL_CHECK(ncclInvalidArgument); });
  EXPECT_NE(nccl.find("NCCL error 4"), std::string::npos) << nccl;
  EXPECT_NE(nccl.find("ncclInvalidArgument"), std::string::npos) << nccl;  // the call as written

  EXPECT_NO_THROW(CUDA_CHECK(cudaSuccess));
  EXPECT_NO_THROW(CUBLAS_CHECK(CUBLAS_STATUS_SUCCESS));
  EXPECT_NO_THROW(NCCL_CHECK(ncclSuccess));
}

TEST(CudaDevice, CountNeverThrowsAndExplainsZero) {
  std::string why;
  int count = -1;
  ASSERT_NO_THROW(count = cuda_device_count(&why));
  EXPECT_GE(count, 0);
  if (count == 0) {
    EXPECT_FALSE(why.empty());
    EXPECT_NE(describe_devices().find("no CUDA device"), std::string::npos);
  }
}

// ---- tests that need a GPU ----

class Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (cuda_device_count(&why) > 0) return;
    const char* require = std::getenv("COCONUT_REQUIRE_GPU");
    if (require && std::string(require) == "1") FAIL() << "COCONUT_REQUIRE_GPU=1 but no CUDA device: " << why;
    GTEST_SKIP() << "no CUDA device (" << why << ")";
  }
};

TEST_F(Gpu, DescribeListsEveryDevice) {
  const int count = cuda_device_count();
  const std::string text = describe_devices();
  std::printf("%s", text.c_str());
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, d));
    EXPECT_NE(text.find(prop.name), std::string::npos) << text;
    EXPECT_GT(prop.multiProcessorCount, 0);
    EXPECT_GT(prop.totalGlobalMem, 0u);
  }
  EXPECT_NE(text.find("compute capability"), std::string::npos) << text;
}

// A launch fails with "no kernel image" when the fatbinary has neither machine
// code nor PTX for this GPU, so this also checks CMAKE_CUDA_ARCHITECTURES.
TEST_F(Gpu, FillKernelRunsAndBufferRoundTrips) {
  const size_t count = (1u << 20) + 7;  // more than one grid's worth, and ragged
  DeviceBuffer<float> buffer(count);
  fill_f32(buffer.data(), count, 3.5f);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> host = buffer.to_host();
  ASSERT_EQ(host.size(), count);
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(host[i], 3.5f) << "element " << i;

  std::vector<float> values = {1.0f, -2.0f, 3.25f};
  buffer.copy_from_host(values);
  std::vector<float> back(3);
  buffer.copy_to_host(back.data(), 3);
  EXPECT_EQ(back, values);
  EXPECT_THROW(buffer.copy_to_host(back.data(), count + 1), Error);
}

struct GemmCase {
  int m, n, k;
  bool trans_a, trans_b;
  int pad;  // extra row stride, to check that lda/ldb/ldc are honoured
};

// Row-major with op(): A is m x k (stored k x m if trans_a), B is k x n (n x k).
TEST_F(Gpu, CublasSgemmMatchesCpuSgemm) {
  const std::vector<GemmCase> cases = {
      {37, 53, 29, false, false, 0}, {64, 17, 101, true, false, 3}, {5, 128, 64, false, true, 1},
      {33, 1, 257, true, true, 0},   {1, 70, 3, false, false, 5},  {96, 80, 48, true, true, 2},
  };
  const float alpha = 0.75f, beta = -0.5f;
  std::mt19937 rng(20241206);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  auto random_vector = [&](size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = uniform(rng);
    return v;
  };

  CublasContext cublas;
  for (const GemmCase& t : cases) {
    SCOPED_TRACE(testing::Message() << "m=" << t.m << " n=" << t.n << " k=" << t.k
                                    << " trans_a=" << t.trans_a << " trans_b=" << t.trans_b);
    const int a_rows = t.trans_a ? t.k : t.m, a_cols = t.trans_a ? t.m : t.k;
    const int b_rows = t.trans_b ? t.n : t.k, b_cols = t.trans_b ? t.k : t.n;
    const int lda = a_cols + t.pad, ldb = b_cols + t.pad, ldc = t.n + t.pad;
    const std::vector<float> a = random_vector(size_t(a_rows) * lda);
    const std::vector<float> b = random_vector(size_t(b_rows) * ldb);
    const std::vector<float> c0 = random_vector(size_t(t.m) * ldc);

    std::vector<float> expected = c0;
    sgemm(t.trans_a, t.trans_b, t.m, t.n, t.k, alpha, a.data(), lda, b.data(), ldb, beta,
          expected.data(), ldc);

    DeviceBuffer<float> da(a.size()), db(b.size()), dc(c0.size());
    da.copy_from_host(a);
    db.copy_from_host(b);
    dc.copy_from_host(c0);
    cublas.sgemm(t.trans_a, t.trans_b, t.m, t.n, t.k, alpha, da.data(), lda, db.data(), ldb, beta,
                 dc.data(), ldc);
    const std::vector<float> got = dc.to_host();  // cudaMemcpy waits for the product

    // Tolerance: both sides are fp32 dot products of length k in different
    // orders. Each has rounding error at most about (k + 2) * u * S, with
    // u = FLT_EPSILON / 2 and S = |alpha| sum_p |a_ip b_pj| + |beta c_ij|, so
    // their difference is within (k + 2) * FLT_EPSILON * S. A wrong transpose or
    // stride gives errors of the order of S itself.
    for (int i = 0; i < t.m; ++i) {
      for (int j = 0; j < t.n; ++j) {
        double s = std::abs(double(beta) * c0[size_t(i) * ldc + j]);
        for (int p = 0; p < t.k; ++p) {
          const float aip = t.trans_a ? a[size_t(p) * lda + i] : a[size_t(i) * lda + p];
          const float bpj = t.trans_b ? b[size_t(j) * ldb + p] : b[size_t(p) * ldb + j];
          s += std::abs(double(alpha) * aip * bpj);
        }
        const double tolerance = (t.k + 2) * double(FLT_EPSILON) * s;
        ASSERT_NEAR(got[size_t(i) * ldc + j], expected[size_t(i) * ldc + j], tolerance)
            << "at C[" << i << ", " << j << "]";
      }
      // The padding between rows of C must be left alone.
      for (int j = t.n; j < ldc; ++j) ASSERT_EQ(got[size_t(i) * ldc + j], c0[size_t(i) * ldc + j]);
    }
  }

  // Bad strides are our error, named, before cuBLAS sees them.
  DeviceBuffer<float> x(16);
  EXPECT_THROW(cublas.sgemm(false, false, 4, 4, 4, 1.0f, x.data(), 3, x.data(), 4, 0.0f, x.data(), 4),
               Error);
}

// Every device contributes (d + 1) * w_i; after the sum each holds
// (1 + 2 + ... + n) * w_i, exact in fp32 for these small integers.
TEST_F(Gpu, NcclAllReduceSumsOverLocalGpus) {
  const int devices = cuda_device_count();
  const size_t count = 4099;
  NcclLocalGroup group(devices);
  ASSERT_EQ(group.size(), devices);

  std::vector<DeviceBuffer<float>> buffers;
  std::vector<float*> pointers;
  for (int d = 0; d < devices; ++d) {
    ScopedDevice on(d);
    std::vector<float> host(count);
    for (size_t i = 0; i < count; ++i) host[i] = float((d + 1) * (i % 7 + 1));
    buffers.emplace_back(count);
    buffers.back().copy_from_host(host);
    pointers.push_back(buffers.back().data());
  }
  group.all_reduce_sum(pointers, count);

  const float device_sum = float(devices * (devices + 1) / 2);
  for (int d = 0; d < devices; ++d) {
    ScopedDevice on(d);
    const std::vector<float> host = buffers[d].to_host();
    for (size_t i = 0; i < count; ++i) {
      ASSERT_EQ(host[i], device_sum * float(i % 7 + 1)) << "device " << d << " element " << i;
    }
  }
  EXPECT_THROW(group.all_reduce_sum({}, count), Error);
}

}  // namespace
}  // namespace coconut
