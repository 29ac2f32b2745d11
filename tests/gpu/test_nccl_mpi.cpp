// Tests of the NCCL communicator (parallel/nccl_comm.h) on device buffers, run under
// mpirun with one rank per GPU (main: tests/parallel/mpi_test_main.cpp). Expected
// values are small integers, exact in floating point, computed here by formula.
//   -np 1: every collective, self send/receive, split, on one GPU.
//   -np 2 on >= 2 GPUs: the same between ranks.
//   -np 2 on 1 GPU: select_device must stop both ranks with the "share one GPU" message.
// Without a GPU every test skips with "no CUDA device, skipping" (CTest: skipped),
// unless COCONUT_REQUIRE_GPU=1 (tests/gpu/run.sh), which turns that into a failure.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "parallel/grid.h"
#include "parallel/nccl_comm.h"
#include "runtime/cuda/device.h"
#include "tests/parallel/mpi_test_main.h"

namespace coconut::parallel {
namespace {


bool gpu_required() {
  const char* require = std::getenv("COCONUT_REQUIRE_GPU");
  return require && std::string(require) == "1";
}

// The world NcclCommunicator, made once for all tests (NCCL setup takes a while), or
// the reason there is none.
struct Shared {
  int device_count = 0;
  std::string no_gpu;        // "" when there is a GPU
  std::string select_error;  // select_device's error ("" when every rank has its own GPU)
  std::unique_ptr<NcclCommunicator> world;
};

Shared* g_shared = nullptr;

Shared& shared() {
  if (!g_shared) {
    auto* s = g_shared = new Shared;
    s->device_count = cuda_device_count(&s->no_gpu);
    if (s->device_count == 0) return *s;
    auto [local_rank, local_size] = test_local_rank_and_size();
    auto mpi = MpiCommunicator::world();
    try {
      select_device(*mpi, local_rank, local_size);
    } catch (const Error& e) {
      s->select_error = e.what();
      return *s;
    }
    s->world = std::make_unique<NcclCommunicator>(std::move(mpi));
  }
  return *g_shared;
}

// Destroys the NCCL communicator after the last test, while MPI still runs.
class SharedTeardown : public ::testing::Environment {
 public:
  void TearDown() override {
    delete g_shared;
    g_shared = nullptr;
  }
};
[[maybe_unused]] const auto* const g_teardown = ::testing::AddGlobalTestEnvironment(new SharedTeardown);

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    Shared& s = shared();
    if (s.device_count == 0) {
      if (gpu_required()) FAIL() << "COCONUT_REQUIRE_GPU=1 but no CUDA device: " << s.no_gpu;
      GTEST_SKIP() << "no CUDA device, skipping (" << s.no_gpu << ")";
    }
    if (!s.select_error.empty()) GTEST_SKIP() << "ranks share a GPU (NcclSelect checks the message)";
  }
  NcclCommunicator& world() { return *shared().world; }
  int rank() { return world().rank(); }
  int size() { return world().size(); }
};

template <typename T>
DeviceBuffer<T> on_device(const std::vector<T>& host) {
  DeviceBuffer<T> buffer(host.size());
  buffer.copy_from_host(host);
  return buffer;
}

// ---- device selection ----

TEST(NcclSelect, RanksSharingOneGpuStopWithAClearMessage) {
  Shared& s = shared();
  if (s.device_count == 0) {
    if (gpu_required()) FAIL() << "COCONUT_REQUIRE_GPU=1 but no CUDA device: " << s.no_gpu;
    GTEST_SKIP() << "no CUDA device, skipping (" << s.no_gpu << ")";
  }
  const int local_size = test_local_rank_and_size().second;
  if (local_size <= s.device_count) {
    EXPECT_EQ(s.select_error, "") << "every rank of this node has its own GPU, yet select_device failed";
    ASSERT_NE(s.world, nullptr);
    int device = -1;
    CUDA_CHECK(cudaGetDevice(&device));
    EXPECT_EQ(device, test_local_rank_and_size().first);
    return;
  }
  // More ranks than GPUs on this node: with one GPU both ranks take device 0 and the
  // UUID check must name the pair; with several, the rank beyond them is refused.
  if (s.device_count == 1)
    EXPECT_NE(s.select_error.find("would share one GPU on host"), std::string::npos) << s.select_error;
  else
    EXPECT_NE(s.select_error, "");
  EXPECT_EQ(s.world, nullptr);
}

// ---- collectives ----

TEST_F(Nccl, AllReduceSumsFloatDoubleAndInt64) {
  const size_t count = 4099;  // ragged on purpose
  const int n = size(), r = rank();
  std::vector<float> f(count);
  std::vector<double> d(count);
  std::vector<int64_t> i64(count);
  for (size_t i = 0; i < count; ++i) {
    f[i] = float((r + 1) * (i % 7 + 1));
    d[i] = 0.5 * (r + 1) * double(i % 11);
    i64[i] = (int64_t(1) << 40) + r * int64_t(i);  // beyond float and int32 precision
  }
  auto df = on_device(f);
  auto dd = on_device(d);
  auto di = on_device(i64);
  world().all_reduce_sum(df.data(), count);
  world().all_reduce_sum(dd.data(), count);
  world().all_reduce_sum(di.data(), count);
  const std::vector<float> gf = df.to_host();
  const std::vector<double> gd = dd.to_host();
  const std::vector<int64_t> gi = di.to_host();
  const int ranks_sum = n * (n + 1) / 2;              // sum of (r + 1)
  const int64_t index_weight = int64_t(n) * (n - 1) / 2;  // sum of r
  for (size_t i = 0; i < count; ++i) {
    ASSERT_EQ(gf[i], float(ranks_sum * (i % 7 + 1))) << "float element " << i;
    ASSERT_EQ(gd[i], 0.5 * ranks_sum * double(i % 11)) << "double element " << i;
    ASSERT_EQ(gi[i], n * (int64_t(1) << 40) + index_weight * int64_t(i)) << "int64 element " << i;
  }
}

TEST_F(Nccl, ReduceScatterGivesEachRankTheSumOfItsBlock) {
  const size_t block = 1001;
  const int n = size(), r = rank();
  std::vector<float> send(block * n);
  for (int b = 0; b < n; ++b)
    for (size_t i = 0; i < block; ++i) send[b * block + i] = float(r * 1000 + b * 10 + int(i % 5));
  auto dsend = on_device(send);
  DeviceBuffer<float> drecv(block);
  world().reduce_scatter_sum(dsend.data(), drecv.data(), block);
  const std::vector<float> got = drecv.to_host();
  for (size_t i = 0; i < block; ++i) {
    // sum over ranks q of (q * 1000 + r * 10 + i % 5)
    const float expected = float(1000 * n * (n - 1) / 2 + n * (r * 10 + int(i % 5)));
    ASSERT_EQ(got[i], expected) << "element " << i;
  }
}

TEST_F(Nccl, AllGatherOutOfPlaceAndInPlace) {
  const size_t block = 777;
  const int n = size(), r = rank();
  std::vector<float> mine(block);
  for (size_t i = 0; i < block; ++i) mine[i] = float(r * 100000 + int(i));
  auto dmine = on_device(mine);
  DeviceBuffer<float> out(block * n);
  world().all_gather(dmine.data(), out.data(), block);
  std::vector<float> got = out.to_host();
  for (int q = 0; q < n; ++q)
    for (size_t i = 0; i < block; ++i) ASSERT_EQ(got[q * block + i], float(q * 100000 + int(i))) << q << " " << i;

  // In place: each rank's block already sits at its offset of the result buffer.
  std::vector<float> whole(block * n, -1.0f);
  std::copy(mine.begin(), mine.end(), whole.begin() + r * block);
  auto dwhole = on_device(whole);
  world().all_gather(dwhole.data() + r * block, dwhole.data(), block);
  got = dwhole.to_host();
  for (int q = 0; q < n; ++q)
    for (size_t i = 0; i < block; ++i) ASSERT_EQ(got[q * block + i], float(q * 100000 + int(i))) << q << " " << i;
}

TEST_F(Nccl, BroadcastFromTheLastRank) {
  const size_t count = 513;
  const int root = size() - 1;
  std::vector<float> data(count, -7.0f);
  if (rank() == root)
    for (size_t i = 0; i < count; ++i) data[i] = float(3 * i + 1);
  auto d = on_device(data);
  world().broadcast(d.data(), count, root);
  const std::vector<float> got = d.to_host();
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(got[i], float(3 * i + 1)) << "element " << i;

  // broadcast_bytes is host memory over MPI.
  int value = rank() == root ? 1234 : 0;
  world().broadcast_bytes(&value, sizeof(value), root);
  EXPECT_EQ(value, 1234);
  world().barrier();
}

// ---- point to point ----

// Around the ring: send to the next rank, receive from the previous one (with one rank,
// a send to itself). Two messages on the same link arrive in the order posted.
TEST_F(Nccl, RingExchangeAndMessageOrder) {
  const size_t count = 2049;
  const int n = size(), r = rank();
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  std::vector<float> a(count), b(count);
  for (size_t i = 0; i < count; ++i) {
    a[i] = float(r * 10000 + int(i));
    b[i] = float(-(r * 10000 + int(i)));
  }
  auto da = on_device(a);
  auto db = on_device(b);
  DeviceBuffer<float> first(count), second(count);
  {
    Request s1 = world().isend(da.data(), count, next, 1);
    Request s2 = world().isend(db.data(), count, next, 2);
    Request r1 = world().irecv(first.data(), count, prev, 1);
    Request r2 = world().irecv(second.data(), count, prev, 2);
    r2.wait();  // waiting on any one issues the whole batch
    r1.wait();
    s1.wait();
    s2.wait();
    EXPECT_FALSE(r1.pending());
  }
  const std::vector<float> got1 = first.to_host(), got2 = second.to_host();
  for (size_t i = 0; i < count; ++i) {
    ASSERT_EQ(got1[i], float(prev * 10000 + int(i))) << "first message, element " << i;
    ASSERT_EQ(got2[i], float(-(prev * 10000 + int(i)))) << "second message, element " << i;
  }
}

// Blocking send/recv between two ranks, the order the pipeline uses: 0 sends, 1 receives,
// then back.
TEST_F(Nccl, BlockingSendReceiveBetweenRanks) {
  if (size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const size_t count = 300;
  std::vector<float> x(count);
  for (size_t i = 0; i < count; ++i) x[i] = float(i * 2 + rank());
  auto dx = on_device(x);
  DeviceBuffer<float> y(count);
  if (rank() == 0) {
    world().send(dx.data(), count, 1, 0);
    world().recv(y.data(), count, 1, 0);
  } else if (rank() == 1) {
    world().recv(y.data(), count, 0, 0);
    world().send(dx.data(), count, 0, 0);
  }
  if (rank() < 2) {
    const int other = 1 - rank();
    const std::vector<float> got = y.to_host();
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(got[i], float(i * 2 + other)) << "element " << i;
  }
  world().barrier();
}

// ---- errors ----

TEST_F(Nccl, HostBuffersAndBadPeersAreClearErrors) {
  std::vector<float> host(16, 1.0f);
  try {
    world().all_reduce_sum(host.data(), host.size());
    FAIL() << "a host buffer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not device memory"), std::string::npos) << e.what();
  }
  DeviceBuffer<float> d(4);
  EXPECT_THROW(world().isend(d.data(), 4, size(), 0), Error);
  EXPECT_THROW(world().irecv(d.data(), 4, -1, 0), Error);
  EXPECT_THROW(world().broadcast(d.data(), 4, size()), Error);
}

// ---- sub-communicators ----

// Checks that a sub-communicator's numbering is MPI's: sub rank i holds parent rank
// members[i] (an all-gather of parent ranks lists them in sub-rank order).
void check_members(Communicator& sub, const std::vector<int>& members, int parent_rank) {
  ASSERT_EQ(sub.size(), int(members.size()));
  ASSERT_EQ(members[sub.rank()], parent_rank);
  DeviceBuffer<float> mine(1), all(members.size());
  mine.copy_from_host(std::vector<float>{float(parent_rank)});
  sub.all_gather(mine.data(), all.data(), 1);
  const std::vector<float> got = all.to_host();
  for (size_t i = 0; i < members.size(); ++i) EXPECT_EQ(got[i], float(members[i])) << "sub rank " << i;
  sub.barrier();
}

// Two splits with a key that reverses the order: everyone in one group, then groups by
// parity.
void check_split(NcclCommunicator& parent) {
  const int n = parent.size(), r = parent.rank();
  std::vector<int> reversed;
  for (int q = n - 1; q >= 0; --q) reversed.push_back(q);
  std::unique_ptr<Communicator> all = parent.split(0, n - r);
  check_members(*all, reversed, r);

  const int color = r % 2;
  std::unique_ptr<Communicator> part = parent.split(color, n - r);
  std::vector<int> members;
  for (int q : reversed)
    if (q % 2 == color) members.push_back(q);
  check_members(*part, members, r);
}

TEST_F(Nccl, SplitWithCommSplitMatchesMpiNumbering) {
  if (!world().splits_with_comm_split()) GTEST_SKIP() << "this NCCL has no ncclCommSplit";
  check_split(world());
}

TEST_F(Nccl, SplitByNewUniqueIdMatchesMpiNumbering) {
  NcclOptions options;
  options.use_comm_split = false;
  NcclCommunicator parent(MpiCommunicator::world(), options);
  EXPECT_FALSE(parent.splits_with_comm_split());
  check_split(parent);
}

// The PP x DP grid built on NCCL: with 2 ranks, pp=2 (a pipeline link) and dp=2 (a
// gradient all-reduce).
TEST_F(Nccl, ProcessGridOnNccl) {
  if (size() != 2) GTEST_SKIP() << "needs 2 ranks";
  {
    ProcessGrid grid(world(), 2, 1);
    DeviceBuffer<float> x(8);
    if (grid.first_stage()) {
      x.copy_from_host(std::vector<float>(8, 5.0f));
      grid.pipeline().send(x.data(), 8, 1, 0);
    } else {
      grid.pipeline().recv(x.data(), 8, 0, 0);
      EXPECT_EQ(x.to_host(), std::vector<float>(8, 5.0f));
    }
  }
  {
    ProcessGrid grid(world(), 1, 2);
    auto g = on_device(std::vector<float>(8, float(grid.dp_index() + 1)));
    grid.data_parallel().all_reduce_sum(g.data(), 8);
    EXPECT_EQ(g.to_host(), std::vector<float>(8, 3.0f));
  }
}

}  // namespace
}  // namespace coconut::parallel
