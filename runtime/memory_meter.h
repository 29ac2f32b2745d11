// Counts the bytes of activation buffers in this process (one rank), so that "peak
// activation memory" is measured by the code that allocates the buffers rather than
// estimated from a formula. Every buffer that holds a batch's activations, their
// gradients or a workspace for them (model::Activations, the backward scratch, the
// runner's and the pipeline executor's per-micro-batch buffers) is a MeteredVector:
// a std::vector whose allocator reports each allocation and release here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace coconut {

// Process-wide counters (thread-safe). peak() is the largest current() since the last
// reset_peak(), which sets it to current().
class ActivationMeter {
 public:
  static void allocated(size_t bytes);
  static void released(size_t bytes);
  static int64_t current();
  static int64_t peak();
  static void reset_peak();
};

template <class T>
struct MeteredAllocator {
  using value_type = T;
  MeteredAllocator() = default;
  template <class U>
  MeteredAllocator(const MeteredAllocator<U>&) {}
  T* allocate(size_t n) {
    T* p = std::allocator<T>{}.allocate(n);
    ActivationMeter::allocated(n * sizeof(T));
    return p;
  }
  void deallocate(T* p, size_t n) {
    ActivationMeter::released(n * sizeof(T));
    std::allocator<T>{}.deallocate(p, n);
  }
  template <class U>
  bool operator==(const MeteredAllocator<U>&) const { return true; }
};

template <class T>
using MeteredVector = std::vector<T, MeteredAllocator<T>>;

}  // namespace coconut
