// Multi-rank tests of the MPI communicator, the PP x DP process grid and ZeRO-1 AdamW.
// Run under mpirun with 2, 3 and 4 ranks (tests/parallel/CMakeLists.txt); each test
// adapts to the world size or skips. The binary has its own main: every rank runs
// GoogleTest, rank 0 prints the usual report, the other ranks print only their
// failures, and the exit code is non-zero when any rank failed.
//
// Expected values are computed by hand (collectives) or by a single-process
// model::AdamW over the summed gradients (ZeRO), never by the code under test.
// Collectives are never placed behind an assertion that could return early on one
// rank only, so that a failing check does not turn into a hang.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "model/adamw.h"
#include "model/gpt2.h"
#include "parallel/comm.h"
#include "tests/parallel/mpi_test_main.h"
#include "parallel/grid.h"
#include "parallel/zero_adamw.h"
#include "runtime/rng.h"

namespace coconut::parallel {
namespace {

Communicator& world() { return test_world(); }

// ---------------------------------------------------------------- collectives

TEST(MpiComm, RankAndSizeMatchMpi) {
  int rank = -1, size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(world().rank(), rank);
  EXPECT_EQ(world().size(), size);
  EXPECT_GE(world().size(), 2) << "run this binary under mpirun with at least 2 ranks";
  world().barrier();
}

TEST(MpiComm, BlockingSendRecvBetweenFirstAndLast) {
  const int last = world().size() - 1;
  std::vector<float> data(5);
  if (world().rank() == 0) {
    for (int i = 0; i < 5; ++i) data[i] = 1.5f * i;
    world().send(data.data(), 5, last, 3);
    world().recv(data.data(), 5, last, 4);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(data[i], 1.5f * i + 100.f);
  } else if (world().rank() == last) {
    world().recv(data.data(), 5, 0, 3);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(data[i], 1.5f * i);
    for (float& x : data) x += 100.f;
    world().send(data.data(), 5, 0, 4);
  }
}

TEST(MpiComm, NonBlockingRing) {
  const int r = world().rank(), n = world().size();
  std::vector<float> out(4), in(4, -1.f), in2(4, -1.f);
  for (int i = 0; i < 4; ++i) out[i] = 10.f * r + i;
  // Two messages to the same neighbour, told apart by their tags; received in the
  // opposite order of sending.
  Request s1 = world().isend(out.data(), 4, (r + 1) % n, 11);
  Request s2 = world().isend(out.data(), 2, (r + 1) % n, 12);
  Request r2 = world().irecv(in2.data(), 2, (r + n - 1) % n, 12);
  Request r1 = world().irecv(in.data(), 4, (r + n - 1) % n, 11);
  EXPECT_TRUE(r1.pending());
  r1.wait();
  r2.wait();
  r2.wait();  // a second wait is a no-op
  EXPECT_FALSE(r2.pending());
  s1.wait();
  // s2 is completed by its destructor.
  const int from = (r + n - 1) % n;
  for (int i = 0; i < 4; ++i) EXPECT_EQ(in[i], 10.f * from + i);
  EXPECT_EQ(in2[0], 10.f * from);
  EXPECT_EQ(in2[1], 10.f * from + 1);
  EXPECT_EQ(in2[2], -1.f);
}

TEST(MpiComm, ReceiveOfWrongLengthIsAnError) {
  const int last = world().size() - 1;
  std::vector<float> data(4, 1.f);
  if (world().rank() == 0) {
    world().send(data.data(), 3, last, 5);  // fewer than expected
    world().send(data.data(), 4, last, 6);  // more than the receive buffer
  } else if (world().rank() == last) {
    try {
      world().recv(data.data(), 4, 0, 5);
      ADD_FAILURE() << "a short message was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("expected 4 floats, got 3"), std::string::npos) << e.what();
    }
    // MPI_ERR_TRUNCATE must come back as an Error (MPI_ERRORS_RETURN), not kill the job.
    try {
      world().recv(data.data(), 2, 0, 6);
      ADD_FAILURE() << "a truncated message was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("MPI_Recv"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("comm.cpp"), std::string::npos) << e.what();
    }
  }
  world().barrier();
}

TEST(MpiComm, BadArgumentsFailLocally) {
  float x = 0;
  EXPECT_THROW(world().send(&x, 1, world().size(), 0), Error);
  EXPECT_THROW(world().send(&x, 1, 0, -1), Error);
  EXPECT_THROW(world().broadcast(&x, 1, -1), Error);
  EXPECT_THROW(world().split(-1, 0), Error);
}

TEST(MpiComm, AllReduceSum) {
  const int r = world().size() > 0 ? world().rank() : 0, n = world().size();
  std::vector<float> f(6);
  for (int i = 0; i < 6; ++i) f[i] = r + 0.5f * i;
  world().all_reduce_sum(f.data(), f.size());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f[i], n * (n - 1) / 2 + 0.5f * n * i) << i;

  std::vector<double> d = {1e10 + 0.25 * r, -3.0 * r};
  world().all_reduce_sum(d.data(), d.size());
  EXPECT_EQ(d[0], 1e10 * n + 0.25 * n * (n - 1) / 2);
  EXPECT_EQ(d[1], -3.0 * n * (n - 1) / 2);

  int64_t big = (int64_t{1} << 40) * (r + 1);
  world().all_reduce_sum(&big, 1);
  EXPECT_EQ(big, (int64_t{1} << 40) * n * (n + 1) / 2);
}

TEST(MpiComm, ReduceScatterSum) {
  const int r = world().rank(), n = world().size();
  const int block = 3;
  std::vector<float> send(static_cast<size_t>(n) * block), recv(block, -1.f);
  for (int b = 0; b < n; ++b)
    for (int i = 0; i < block; ++i) send[b * block + i] = 100.f * (r + 1) + 10.f * b + i;
  world().reduce_scatter_sum(send.data(), recv.data(), block);
  // sum over ranks s of 100 (s + 1) + 10 r + i
  for (int i = 0; i < block; ++i) EXPECT_EQ(recv[i], 100.f * n * (n + 1) / 2 + n * (10.f * r + i)) << i;
}

TEST(MpiComm, AllGatherOutOfPlaceAndInPlace) {
  const int r = world().rank(), n = world().size();
  const float mine[2] = {10.f * r, 10.f * r + 1};
  std::vector<float> all(static_cast<size_t>(n) * 2, -1.f);
  world().all_gather(mine, all.data(), 2);
  for (int s = 0; s < n; ++s) {
    EXPECT_EQ(all[2 * s], 10.f * s);
    EXPECT_EQ(all[2 * s + 1], 10.f * s + 1);
  }
  std::vector<float> in_place(static_cast<size_t>(n) * 2, -1.f);
  in_place[2 * r] = 7.f * r;
  in_place[2 * r + 1] = 7.f * r + 0.5f;
  world().all_gather(in_place.data() + 2 * r, in_place.data(), 2);
  for (int s = 0; s < n; ++s) {
    EXPECT_EQ(in_place[2 * s], 7.f * s);
    EXPECT_EQ(in_place[2 * s + 1], 7.f * s + 0.5f);
  }
}

TEST(MpiComm, Broadcast) {
  const int root = world().size() - 1;
  std::vector<float> data(4, 0.f);
  if (world().rank() == root) data = {1.f, -2.f, 3.5f, 4.f};
  world().broadcast(data.data(), data.size(), root);
  EXPECT_EQ(data, (std::vector<float>{1.f, -2.f, 3.5f, 4.f}));

  char text[16] = {};
  if (world().rank() == 0) std::strcpy(text, "coconut");
  world().broadcast_bytes(text, sizeof text, 0);
  EXPECT_STREQ(text, "coconut");
}

TEST(MpiComm, SplitByParityInReverseOrder) {
  const int r = world().size() > 0 ? world().rank() : 0, n = world().size();
  std::unique_ptr<Communicator> part = world().split(r % 2, -r);  // higher world rank first
  int members = 0, before = 0;  // same-parity ranks, and those with a higher world rank
  for (int s = r % 2; s < n; s += 2) {
    ++members;
    if (s > r) ++before;
  }
  EXPECT_EQ(part->size(), members);
  EXPECT_EQ(part->rank(), before);
  int64_t sum = r;
  part->all_reduce_sum(&sum, 1);
  int64_t expected = 0;
  for (int s = r % 2; s < n; s += 2) expected += s;
  EXPECT_EQ(sum, expected);
}

// ---------------------------------------------------------------- process grid

TEST(Grid, TwoStagesTimesTwoReplicas) {
  if (world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  ProcessGrid grid(world(), 2, 2);
  const int r = world().rank();
  // Documented layout: rank = dp_index * pp + stage.
  const int stage[4] = {0, 1, 0, 1}, dp_index[4] = {0, 0, 1, 1};
  EXPECT_EQ(grid.stage(), stage[r]);
  EXPECT_EQ(grid.dp_index(), dp_index[r]);
  EXPECT_EQ(grid.world_rank(), r);
  EXPECT_EQ(grid.first_stage(), stage[r] == 0);
  EXPECT_EQ(grid.last_stage(), stage[r] == 1);
  EXPECT_EQ(grid.rank_of(1, 0), 1);
  EXPECT_EQ(grid.rank_of(0, 1), 2);
  EXPECT_THROW(grid.rank_of(2, 0), Error);
  EXPECT_EQ(grid.pipeline().size(), 2);
  EXPECT_EQ(grid.pipeline().rank(), stage[r]);
  EXPECT_EQ(grid.data_parallel().size(), 2);
  EXPECT_EQ(grid.data_parallel().rank(), dp_index[r]);

  // Pipelines are {0, 1} and {2, 3}; DP groups are {0, 2} and {1, 3}: gather the world
  // ranks of each group's members in group order.
  float me = static_cast<float>(r), pipe[2], group[2];
  grid.pipeline().all_gather(&me, pipe, 1);
  grid.data_parallel().all_gather(&me, group, 1);
  EXPECT_EQ(pipe[0], 2.f * dp_index[r]);
  EXPECT_EQ(pipe[1], 2.f * dp_index[r] + 1);
  EXPECT_EQ(group[0], static_cast<float>(stage[r]));
  EXPECT_EQ(group[1], static_cast<float>(stage[r] + 2));
  // Point to point inside the pipeline: stage 0 sends to stage 1 of its own replica.
  float x = 100.f + r;
  if (grid.first_stage())
    grid.pipeline().send(&x, 1, 1, 0);
  else
    grid.pipeline().recv(&x, 1, 0, 0);
  EXPECT_EQ(x, 100.f + grid.rank_of(0, grid.dp_index()));
}

TEST(Grid, WrongWorldSizeIsAClearError) {
  const int n = world().size();
  if (n % 2 == 1) {
    // e.g. np=3 with two pipeline stages
    try {
      ProcessGrid grid(world(), 2, n / 2);
      ADD_FAILURE() << "a grid of 2 x " << n / 2 << " accepted " << n << " ranks";
    } catch (const Error& e) {
      const std::string expected = fmt::format("needs {} ranks, but the job has {}", 2 * (n / 2), n);
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
    try {
      data_parallel_size(n, 2);
      ADD_FAILURE() << "2 stages accepted for " << n << " ranks";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("must be a multiple of the pipeline stages"), std::string::npos)
          << e.what();
    }
  } else {
    EXPECT_EQ(data_parallel_size(n, 2), n / 2);
  }
  EXPECT_THROW(ProcessGrid(world(), n, 2), Error);
  EXPECT_THROW(ProcessGrid(world(), 0, n), Error);
}

// ---------------------------------------------------------------- ZeRO-1

// 475 parameters: odd and not a multiple of 3, so dp = 2, 3 and 4 all need padding.
model::GPT2Config tiny_config() {
  model::GPT2Config c;
  c.vocab_size = 13;
  c.max_positions = 7;
  c.n_layer = 1;
  c.n_head = 1;
  c.d_model = 5;
  return c;
}

std::vector<float> random_values(size_t n, uint64_t a, uint64_t b, uint64_t c, float scale) {
  CounterRng rng(1234, {a, b, c});
  std::vector<float> x(n);
  for (float& v : x) v = scale * rng.normal();
  return x;
}

// The local gradient of DP replica d at step t: differs per replica and step, and
// replicas get different magnitudes so that the sum is not symmetric.
std::vector<float> local_grad(size_t n, int d, int t) { return random_values(n, 1, t, d, 0.1f * (d + 1)); }

constexpr float kLr = 1e-2f;

model::AdamWConfig adam_config(bool matrices_only) {
  model::AdamWConfig c;
  c.weight_decay = 0.1f;
  c.decay_matrices_only = matrices_only;
  return c;
}

// A single process with the whole model: AdamW over [0, total) on the sum over
// replicas (in replica order) of the local gradients, clipped by its global norm.
std::vector<float> reference_run(const model::ParamLayout& layout, const model::AdamWConfig& config, int dp,
                                 int steps, double clip) {
  const size_t n = layout.total();
  std::vector<float> params = random_values(n, 0, 0, 0, 0.05f);
  model::AdamW adam(config, layout, 0, n);
  for (int t = 0; t < steps; ++t) {
    std::vector<float> sum(n, 0.f);
    for (int d = 0; d < dp; ++d) {
      const std::vector<float> g = local_grad(n, d, t);
      for (size_t i = 0; i < n; ++i) sum[i] += g[i];
    }
    if (clip > 0)
      model::clip_grads(sum.data(), n, std::sqrt(model::sum_of_squares(sum.data(), n)), static_cast<float>(clip));
    adam.step(params.data(), sum.data(), kLr);
  }
  return params;
}

// The same run with ZeRO-1 over [begin, end) on this rank's DP group.
std::vector<float> zero_run(const model::ParamLayout& layout, const model::AdamWConfig& config, size_t begin,
                            size_t end, Communicator& dp_group, Communicator* norm_group, int steps, double clip,
                            std::vector<double>* norms = nullptr) {
  const size_t n = layout.total();
  std::vector<float> params = random_values(n, 0, 0, 0, 0.05f);
  ShardedAdamW zero(config, layout, begin, end, dp_group);
  for (int t = 0; t < steps; ++t) {
    std::vector<float> grads = local_grad(n, dp_group.rank(), t);
    const double norm = zero.step(params.data(), grads.data(), kLr, clip, norm_group);
    if (norms) norms->push_back(norm);
  }
  return params;
}

// |a - b| <= 1e-6 relative, against the typical weight scale for weights near zero.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, size_t begin, size_t end) {
  int bad = 0;
  for (size_t i = begin; i < end && bad < 5; ++i) {
    const double tol = 1e-6 * std::max(std::fabs(static_cast<double>(want[i])), 1e-2);
    if (std::fabs(static_cast<double>(got[i]) - want[i]) > tol) {
      ADD_FAILURE() << "param " << i << ": ZeRO " << got[i] << " vs single process " << want[i];
      ++bad;
    }
  }
}

// Collective over group: every rank's vector must equal the group root's bit for bit.
void expect_identical_across(Communicator& group, const std::vector<float>& x) {
  std::vector<float> root = x;
  group.broadcast(root.data(), root.size(), 0);
  EXPECT_EQ(std::memcmp(root.data(), x.data(), x.size() * sizeof(float)), 0)
      << "rank " << group.rank() << " holds other weights than rank 0 of its group";
}

void check_zero_against_reference(double clip, bool matrices_only, size_t begin_cut, size_t end_cut) {
  const model::ParamLayout layout(tiny_config());
  const model::AdamWConfig config = adam_config(matrices_only);
  const size_t n = layout.total(), begin = begin_cut, end = n - end_cut;
  const int dp = world().size(), steps = 3;
  std::vector<float> got = zero_run(layout, config, begin, end, world(), nullptr, steps, clip);
  expect_identical_across(world(), got);

  const std::vector<float> initial = random_values(n, 0, 0, 0, 0.05f);
  const std::vector<float> want = reference_run(layout, config, dp, steps, clip);
  expect_close(got, want, begin, end);
  // Outside the slice nothing moves; inside, the weights really changed.
  for (size_t i = 0; i < begin; ++i) ASSERT_EQ(got[i], initial[i]) << i;
  for (size_t i = end; i < n; ++i) ASSERT_EQ(got[i], initial[i]) << i;
  double moved = 0;
  for (size_t i = begin; i < end; ++i) moved = std::max(moved, std::fabs(static_cast<double>(got[i]) - initial[i]));
  EXPECT_GT(moved, 1e-3);
}

TEST(Zero, MatchesSingleProcessAdamW) {
  ASSERT_EQ(model::ParamLayout(tiny_config()).total(), 475u);
  check_zero_against_reference(/*clip=*/0, /*matrices_only=*/false, 0, 0);
}

TEST(Zero, MatchesSingleProcessAdamWWithClipping) {
  // The summed gradient has norm ~ 0.1 * sqrt(475 * (1 + 4 + ...)): clip at 1 bites.
  check_zero_against_reference(/*clip=*/1.0, /*matrices_only=*/false, 0, 0);
}

TEST(Zero, SliceInsideTheBufferWithMatrixOnlyDecay) {
  // A slice that starts and ends inside tensors (a pipeline stage need not align).
  check_zero_against_reference(/*clip=*/0, /*matrices_only=*/true, 67, 9);
}

TEST(Zero, GlobalNormIsReturnedAndMatches) {
  const model::ParamLayout layout(tiny_config());
  const size_t n = layout.total();
  std::vector<double> norms;
  zero_run(layout, adam_config(false), 0, n, world(), nullptr, 1, 0.5, &norms);
  std::vector<float> sum(n, 0.f);
  for (int d = 0; d < world().size(); ++d) {
    const std::vector<float> g = local_grad(n, d, 0);
    for (size_t i = 0; i < n; ++i) sum[i] += g[i];
  }
  const double want = std::sqrt(model::sum_of_squares(sum.data(), n));
  ASSERT_EQ(norms.size(), 1u);
  EXPECT_NEAR(norms[0], want, 1e-6 * want);
}

// A gradient with a NaN on one rank only: every rank sees a NaN norm and skips the
// update, so weights, moments and the step count stay as they were everywhere.
TEST(Zero, NonFiniteGradientIsNotApplied) {
  const model::ParamLayout layout(tiny_config());
  const size_t n = layout.total();
  std::vector<float> params = random_values(n, 0, 0, 0, 0.05f);
  ShardedAdamW zero(adam_config(false), layout, 0, n, world());
  std::vector<float> grads = local_grad(n, world().rank(), 0);
  zero.step(params.data(), grads.data(), kLr, 1.0, nullptr);
  const std::vector<float> params_before = params, m_before = zero.m(), v_before = zero.v();
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    grads = local_grad(n, world().rank(), 1);
    if (world().rank() == world().size() - 1) grads[n / 2] = bad;
    const double norm = zero.step(params.data(), grads.data(), kLr, 1.0, nullptr);
    EXPECT_FALSE(std::isfinite(norm)) << bad;
    EXPECT_EQ(params, params_before) << bad;
    EXPECT_EQ(zero.m(), m_before) << bad;
    EXPECT_EQ(zero.v(), v_before) << bad;
    EXPECT_EQ(zero.step_count(), 1) << bad;
  }
}

TEST(Zero, ShardsCoverTheSliceWithPadding) {
  const model::ParamLayout layout(tiny_config());
  const size_t n = layout.total();
  const size_t dp = static_cast<size_t>(world().size());
  ShardedAdamW zero(adam_config(false), layout, 0, n, world());
  const size_t block = (n + dp - 1) / dp;
  EXPECT_EQ(zero.block(), block);
  const ShardRange mine = shard_range(0, n, world().size(), world().rank());
  EXPECT_EQ(zero.shard_begin(), mine.begin);
  EXPECT_EQ(zero.shard_end(), mine.end);
  EXPECT_EQ(zero.shard_begin(), std::min(n, world().rank() * block));
  EXPECT_EQ(zero.m().size(), zero.shard_end() - zero.shard_begin());
  int64_t covered = static_cast<int64_t>(zero.shard_end() - zero.shard_begin());
  world().all_reduce_sum(&covered, 1);
  EXPECT_EQ(covered, static_cast<int64_t>(n));
  // More ranks than elements: the last shards are empty and the step still works.
  if (dp >= 3) {
    EXPECT_EQ(shard_range(10, 12, 3, 2).begin, shard_range(10, 12, 3, 2).end);
  }
  std::vector<float> params = random_values(n, 0, 0, 0, 0.05f), before = params;
  std::vector<float> grads = local_grad(n, world().rank(), 0);
  ShardedAdamW tiny(adam_config(false), layout, 10, 10 + dp - 1, world());
  tiny.step(params.data(), grads.data(), kLr, 0, nullptr);
  expect_identical_across(world(), params);
  for (size_t i = 0; i < n; ++i) {
    if (i >= 10 && i < 10 + dp - 1)
      EXPECT_NE(params[i], before[i]) << i;
    else
      EXPECT_EQ(params[i], before[i]) << i;
  }
}

TEST(Zero, DisagreeingSlicesFailOnEveryRank) {
  const model::ParamLayout layout(tiny_config());
  const size_t end = world().rank() == world().size() - 1 ? 300 : 301;
  try {
    ShardedAdamW zero(adam_config(false), layout, 0, end, world());
    ADD_FAILURE() << "mismatched slices accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("must shard the same slice"), std::string::npos) << e.what();
  }
}

TEST(Zero, ResetZeroesEveryShardAndKeepsWeights) {
  const model::ParamLayout layout(tiny_config());
  const size_t n = layout.total();
  const model::AdamWConfig config = adam_config(false);
  std::vector<float> params = random_values(n, 0, 0, 0, 0.05f);
  ShardedAdamW zero(config, layout, 0, n, world());
  for (int t = 0; t < 2; ++t) {
    std::vector<float> grads = local_grad(n, world().rank(), t);
    zero.step(params.data(), grads.data(), kLr, 0, nullptr);
  }
  EXPECT_EQ(zero.step_count(), 2);
  const std::vector<float> kept = params;
  zero.reset();
  EXPECT_EQ(zero.step_count(), 0);
  for (float x : zero.m()) ASSERT_EQ(x, 0.f);
  for (float x : zero.v()) ASSERT_EQ(x, 0.f);
  EXPECT_EQ(params, kept);

  // After a reset the optimizer behaves as a fresh one from the same weights.
  ShardedAdamW fresh(config, layout, 0, n, world());
  std::vector<float> a = params, b = params;
  std::vector<float> ga = local_grad(n, world().rank(), 7), gb = ga;
  zero.step(a.data(), ga.data(), kLr, 0, nullptr);
  fresh.step(b.data(), gb.data(), kLr, 0, nullptr);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), n * sizeof(float)), 0);
  EXPECT_EQ(zero.step_count(), 1);
}

TEST(Zero, SameRunTwiceGivesIdenticalBits) {
  const model::ParamLayout layout(tiny_config());
  const size_t n = layout.total();
  const std::vector<float> a = zero_run(layout, adam_config(false), 0, n, world(), nullptr, 3, 1.0);
  const std::vector<float> b = zero_run(layout, adam_config(false), 0, n, world(), nullptr, 3, 1.0);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), n * sizeof(float)), 0);
}

TEST(Zero, TwoStagesTimesTwoReplicasWithGlobalClipping) {
  if (world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  ProcessGrid grid(world(), 2, 2);
  const model::ParamLayout layout(tiny_config());
  const size_t n = layout.total();
  // Stage 0 owns the embeddings (100 parameters: no padding over 2 replicas), stage 1
  // the rest (375: padded).
  const size_t split = layout.find("h.0.ln_1.weight").offset;
  ASSERT_EQ(split, 100u);
  const size_t begin = grid.stage() == 0 ? 0 : split, end = grid.stage() == 0 ? split : n;
  const double clip = 1.0;
  std::vector<double> norms;
  const std::vector<float> got =
      zero_run(layout, adam_config(false), begin, end, grid.data_parallel(), &grid.pipeline(), 3, clip, &norms);
  expect_identical_across(grid.data_parallel(), got);
  // The clipping norm covers both stages: every rank of the world saw the same norms.
  std::vector<float> norm0 = {static_cast<float>(norms[0])};
  expect_identical_across(world(), norm0);
  const std::vector<float> want = reference_run(layout, adam_config(false), 2, 3, clip);
  expect_close(got, want, begin, end);
}

}  // namespace
}  // namespace coconut::parallel
