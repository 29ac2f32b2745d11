// The one-process pieces of the checkpoint format: the names of committed directories
// (the slices' CRC-32C is runtime/crc32c.h, tested in tests/runtime/test_crc32c.cpp).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "parallel/checkpoint_io.h"

namespace coconut::parallel::ckpt_io {
namespace {

TEST(CheckpointNames, CommittedStepParsesOnlyCommittedNames) {
  EXPECT_EQ(step_dir_name(120), "step-00000120");
  EXPECT_EQ(committed_step("step-00000120"), 120);
  EXPECT_EQ(committed_step(step_dir_name(123456789012)), 123456789012);
  EXPECT_EQ(committed_step("step-00000120.tmp-0123abcd"), -1);
  EXPECT_EQ(committed_step("step-"), -1);
  EXPECT_EQ(committed_step("step-12a"), -1);
  EXPECT_EQ(committed_step("latest"), -1);
}

}  // namespace
}  // namespace coconut::parallel::ckpt_io
