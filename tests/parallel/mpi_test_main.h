// The world communicator of an MPI GoogleTest binary (set by mpi_test_main.cpp's main
// for the life of the tests).
#pragma once

#include <utility>

#include "parallel/comm.h"

namespace coconut::parallel {

Communicator& test_world();
// This rank's place on its node, as MpiRuntime found it (the launcher's variables first):
// {local rank, ranks on this node}.
std::pair<int, int> test_local_rank_and_size();

}  // namespace coconut::parallel
