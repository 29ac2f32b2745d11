// ZeroPageFloats and resident_bytes (zero_pages.h) over mmap and mincore.
#include "runtime/zero_pages.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "runtime/check.h"

namespace coconut {

ZeroPageFloats::ZeroPageFloats(size_t count) : size_(count) {
  if (count == 0) return;
  void* p = mmap(nullptr, count * sizeof(float), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  COCONUT_CHECK(p != MAP_FAILED, "cannot map {} floats ({:.1f} MiB) of zero pages: {}", count,
                count * sizeof(float) / 1048576.0, std::strerror(errno));
  data_ = static_cast<float*>(p);
}

ZeroPageFloats::~ZeroPageFloats() {
  if (data_) munmap(data_, size_ * sizeof(float));
}

ZeroPageFloats::ZeroPageFloats(ZeroPageFloats&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

ZeroPageFloats& ZeroPageFloats::operator=(ZeroPageFloats&& other) noexcept {
  if (this != &other) {
    if (data_) munmap(data_, size_ * sizeof(float));
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

size_t resident_bytes(const void* p, size_t bytes) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) / page * page;
  if (end <= begin) return 0;
  std::vector<unsigned char> in_core((end - begin) / page);
  COCONUT_CHECK(mincore(reinterpret_cast<void*>(begin), end - begin, in_core.data()) == 0,
                "mincore over {} bytes: {}", end - begin, std::strerror(errno));
  size_t resident = 0;
  for (unsigned char c : in_core) resident += (c & 1) ? page : 0;
  return resident;
}

}  // namespace coconut
