// Float buffers made of fresh zero pages (an anonymous private mapping): the kernel backs
// a page with memory only when it is first written. The model's flat parameter and
// gradient buffers are such buffers, so that a pipeline rank, which touches only its
// stage's slice of them (parallel/partition.h), holds only that slice in memory while
// every rank keeps the same offsets. resident_bytes() says what a range really holds.
#pragma once

#include <cstddef>

namespace coconut {

class ZeroPageFloats {
 public:
  ZeroPageFloats() = default;
  explicit ZeroPageFloats(size_t count);  // count zeros; throws naming the size when mmap fails
  ~ZeroPageFloats();
  ZeroPageFloats(ZeroPageFloats&& other) noexcept;
  ZeroPageFloats& operator=(ZeroPageFloats&& other) noexcept;
  ZeroPageFloats(const ZeroPageFloats&) = delete;
  ZeroPageFloats& operator=(const ZeroPageFloats&) = delete;

  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  float* data_ = nullptr;
  size_t size_ = 0;
};

// Bytes of memory backing the whole pages that lie inside [p, p + bytes) (mincore; a
// page at either end that the range covers only in part is not counted). A page of a
// ZeroPageFloats that was never touched is not resident.
size_t resident_bytes(const void* p, size_t bytes);

}  // namespace coconut
