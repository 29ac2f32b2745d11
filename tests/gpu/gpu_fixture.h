// The GoogleTest fixture of tests that need a GPU: skips when there is none (CTest
// shows the test as skipped), except under COCONUT_REQUIRE_GPU=1 (tests/gpu/run.sh on
// GPU machines), where a missing GPU is a failure rather than a silent skip.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "runtime/cuda/device.h"

namespace coconut::testing_gpu {

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (cuda_device_count(&why) > 0) return;
    const char* require = std::getenv("COCONUT_REQUIRE_GPU");
    if (require && std::string(require) == "1") FAIL() << "COCONUT_REQUIRE_GPU=1 but no CUDA device: " << why;
    GTEST_SKIP() << "no CUDA device (" << why << ")";
  }
};

}  // namespace coconut::testing_gpu
