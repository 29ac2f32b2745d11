// Error checking for every fallible call: each macro names the file and line.
// COCONUT_CHECK(cond, fmt, ...) throws coconut::Error with a formatted message;
// callers at the top (the `coconut` command, MPI jobs) turn it into one clear
// message and a non-zero exit (and MPI_Abort for multi-rank jobs).
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace coconut {

// Any error the user can cause (bad config, bad data, bad checkpoint) or a
// violated internal invariant. what() already includes file:line.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

}  // namespace coconut

#define COCONUT_CHECK(cond, ...)                                                     \
  do {                                                                               \
    if (!(cond)) [[unlikely]] {                                                      \
      ::coconut::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__));        \
    }                                                                                \
  } while (0)

#define COCONUT_FAIL(...) ::coconut::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
