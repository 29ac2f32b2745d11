// Pipeline stages on the GPU (parallel/cuda_stage_compute.h) under mpirun against the
// same PipelineExecutor on the CPU model: the tiny GPT-2 with continuous thoughts
// (tiny_model.h), 4 micro-batches per step split over the replicas, 3 steps with
// clipping, each schedule. -np 2: 2 stages; -np 4: 2 stages x 2 replicas. The ranks
// share the node's GPUs (messages go through host memory over MPI).
//   fp32 (with and without dropout, whose masks the GPU draws as the CPU does): the 3
//   steps' losses within 1e-5 relative (steps 2 and 3 run on the weights the host
//   optimizer updated and the stages uploaded), the first step's gradients per tensor
//   within 1e-4 of the tensor's largest element (test_cuda_gpt2.cpp's step tolerance),
//   the weights after 3 steps within 1e-2: AdamW divides by each element's own gradient
//   scale, so an element whose gradient is near rounding level moves by O(lr) on a
//   difference in the last bits (tests/parallel/test_pipeline_mpi.cpp adam_tolerance);
//   a weight update lost or doubled moves a tensor by a good part of lr (1e-2) against
//   its scale of about 0.05;
//   bf16: losses within 2e-2 relative, gradients within 0.1 (test_cuda_gpt2.cpp's bf16
//   step); the weights are not compared (bf16 against the fp32 CPU: sign flips of
//   near-zero gradients move them by lr).
// Without a GPU every case skips with "no CUDA device, skipping" (CTest: skipped),
// unless COCONUT_REQUIRE_GPU=1.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "model/gpt2.h"
#include "parallel/cuda_stage_compute.h"
#include "parallel/executor.h"
#include "parallel/grid.h"
#include "runtime/cuda/device.h"
#include "tests/gpu/tiny_model.h"
#include "tests/parallel/mpi_test_main.h"

namespace coconut::parallel {
namespace {

constexpr int kSteps = 3, kMicros = 4;

struct Case {
  std::string schedule, precision;
  float dropout;
};

struct Trained {
  std::vector<double> losses;
  std::vector<float> first_grads, params;  // the whole buffers (the stage's ranges meaningful)
  std::string compute;
};

Trained train(const Case& k, bool on_gpu) {
  Communicator& world = test_world();
  ProcessGrid grid(world, 2, world.size() / 2);
  model::GPT2Config config = testing_gpu::tiny_config();
  config.dropout = k.dropout;
  model::GPT2 gpt(config);
  gpt.init_weights(11);
  ExecutorConfig ec;
  ec.schedule = parse_schedule_kind(k.schedule);
  ec.adam.lr = 1e-2f;
  ec.clip_norm = 0.5;
  const std::vector<StageLayers> partition = {{0, 1}, {1, 2}};
  std::unique_ptr<StageCompute> compute;
  if (on_gpu)
    compute = make_cuda_stage_compute(gpt, {partition[grid.stage()], grid.first_stage(), grid.last_stage()},
                                      k.precision == "bf16",
                                      k.precision == "bf16" ? model::CudaAttention::kBf16Batched
                                                            : model::CudaAttention::kFp32,
                                      test_local_rank_and_size().first);
  PipelineExecutor exe(gpt, grid, partition, ec, std::move(compute));
  Trained t;
  t.compute = exe.compute().name();
  const int per = kMicros / grid.dp();
  for (int s = 0; s < kSteps; ++s) {
    std::vector<model::SequenceBatch> mine;
    std::vector<std::vector<int64_t>> ids;
    int targets = 0;
    for (int m = 0; m < kMicros; ++m) {
      const model::SequenceBatch b = testing_gpu::latent_batch(m + s);
      targets += b.num_targets();
      if (m / per != grid.dp_index()) continue;
      mine.push_back(b);
      ids.push_back({3 * m, 3 * m + 1, 3 * m + 2});
    }
    exe.set_dropout(5, uint64_t(s), ids);
    t.losses.push_back(exe.forward_backward(mine, 1.f / float(targets)));
    if (s == 0) {
      t.first_grads.assign(gpt.grads(), gpt.grads() + gpt.num_params());
      grid.data_parallel().all_reduce_sum(t.first_grads.data(), t.first_grads.size());
    }
    exe.optimizer_step(ec.adam.lr);
  }
  t.params.assign(gpt.params(), gpt.params() + gpt.num_params());
  return t;
}

class PipelineOnGpu : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    std::string why;
    if (cuda_device_count(&why) == 0) {
      const char* require = std::getenv("COCONUT_REQUIRE_GPU");
      if (require && std::string(require) == "1") FAIL() << "COCONUT_REQUIRE_GPU=1 but no CUDA device: " << why;
      GTEST_SKIP() << "no CUDA device, skipping (" << why << ")";
    }
    ASSERT_EQ(test_world().size() % 2, 0) << "run with an even number of ranks (2 stages x replicas)";
  }
};

TEST_P(PipelineOnGpu, EqualsTheCpuPipeline) {
  const Case& k = GetParam();
  const Trained want = train(k, /*on_gpu=*/false);
  const Trained got = train(k, /*on_gpu=*/true);
  EXPECT_EQ(want.compute, "cpu");
  EXPECT_EQ(got.compute, k.precision == "bf16" ? "cuda bf16" : "cuda fp32");
  const bool bf16 = k.precision == "bf16";
  const model::ParamLayout layout(testing_gpu::tiny_config());
  ASSERT_EQ(got.losses.size(), want.losses.size());
  for (size_t s = 0; s < want.losses.size(); ++s)
    EXPECT_NEAR(got.losses[s], want.losses[s], (bf16 ? 2e-2 : 1e-5) * std::abs(want.losses[s])) << "step " << s;
  // Every rank compares its own stage's ranges (the rest is zero in both).
  testing_gpu::expect_tensors_close(layout, got.first_grads, want.first_grads, "first step's gradients",
                                    bf16 ? 0.1 : 1e-4);
  if (!bf16) testing_gpu::expect_tensors_close(layout, got.params, want.params, "weights after 3 steps", 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Schedules, PipelineOnGpu,
                         ::testing::Values(Case{"gpipe", "fp32", 0.f}, Case{"1f1b", "fp32", 0.f},
                                           Case{"ring", "fp32", 0.f}, Case{"ring", "fp32", 0.1f},
                                           Case{"ring", "bf16", 0.f}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.schedule + "_" + info.param.precision +
                                  (info.param.dropout > 0 ? "_dropout" : "");
                         });

}  // namespace
}  // namespace coconut::parallel
