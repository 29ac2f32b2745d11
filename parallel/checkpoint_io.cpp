// Checkpoint directory names and fault injection (see checkpoint_io.h).
#include "parallel/checkpoint_io.h"

#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runtime/check.h"

namespace coconut::parallel::ckpt_io {

std::string step_dir_name(int64_t step) { return fmt::format("step-{:08d}", step); }

int64_t committed_step(const std::string& name) {
  if (name.size() <= 5 || name.compare(0, 5, "step-") != 0 || name.size() > 5 + 18) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

bool fault_requested(const char* point, int rank) {
  const char* spec = std::getenv("COCONUT_CKPT_FAULT");
  if (spec == nullptr || *spec == '\0') return false;
  const std::string s = spec;
  const size_t at = s.find('@');
  if (s.substr(0, at) != point) return false;
  if (at == std::string::npos) return true;
  return s.substr(at + 1) == std::to_string(rank);
}

void maybe_fault(const char* point, int rank) {
  if (!fault_requested(point, rank)) return;
  std::fprintf(stderr, "coconut: COCONUT_CKPT_FAULT: killing rank %d at %s\n", rank, point);
  std::fflush(stderr);
  std::raise(SIGKILL);
}

}  // namespace coconut::parallel::ckpt_io
