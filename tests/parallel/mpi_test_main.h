// The world communicator of an MPI GoogleTest binary (set by mpi_test_main.cpp's main
// for the life of the tests).
#pragma once

#include "parallel/comm.h"

namespace coconut::parallel {

Communicator& test_world();

}  // namespace coconut::parallel
