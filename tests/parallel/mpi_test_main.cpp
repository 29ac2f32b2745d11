// main() of the GoogleTest binaries that run under mpirun: MPI_Init, the tests on every
// rank (ranks other than 0 print only their failures, prefixed by their rank), and an
// exit code that fails when any rank failed. An exception escaping the tests aborts
// every rank instead of leaving the others waiting in a collective.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <memory>

#include "tests/parallel/mpi_test_main.h"

namespace coconut::parallel {
namespace {

MpiCommunicator* g_world = nullptr;
std::pair<int, int> g_local{0, 1};

class FailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (result.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, result.file_name() ? result.file_name() : "?",
                   result.line_number(), result.summary());
  }
  void OnTestEnd(const testing::TestInfo& info) override {
    if (info.result()->Failed())
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
  }

 private:
  int rank_;
};

}  // namespace

Communicator& test_world() { return *g_world; }
std::pair<int, int> test_local_rank_and_size() { return g_local; }

}  // namespace coconut::parallel

int main(int argc, char** argv) {
  using namespace coconut::parallel;
  MpiRuntime mpi(&argc, &argv);
  testing::InitGoogleTest(&argc, argv);
  const int rank = mpi.world_rank();
  g_local = {mpi.local_rank(), mpi.local_size()};
  if (rank != 0) {
    testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  int failed = 0;
  try {
    std::unique_ptr<MpiCommunicator> world = MpiCommunicator::world();
    g_world = world.get();
    failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
    g_world = nullptr;
  } catch (const std::exception& e) {
    abort_all(e.what());
  }
  int ranks_failed = 0;
  MPI_Allreduce(&failed, &ranks_failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) std::printf("%s: %d of %d ranks reported failures\n", argv[0], ranks_failed, mpi.world_size());
  return ranks_failed == 0 ? 0 : 1;
}
