// The process-wide activation-memory counters of memory_meter.h.
#include "runtime/memory_meter.h"

#include <atomic>

namespace coconut {

namespace {
std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};
}  // namespace

void ActivationMeter::allocated(size_t bytes) {
  const int64_t now = g_current.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes);
  int64_t seen = g_peak.load();
  while (now > seen && !g_peak.compare_exchange_weak(seen, now)) {
  }
}

void ActivationMeter::released(size_t bytes) { g_current.fetch_sub(static_cast<int64_t>(bytes)); }

int64_t ActivationMeter::current() { return g_current.load(); }

int64_t ActivationMeter::peak() { return g_peak.load(); }

void ActivationMeter::reset_peak() { g_peak.store(g_current.load()); }

}  // namespace coconut
