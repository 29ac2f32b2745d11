// FNV-1a 64: a small, stable, non-cryptographic hash for digests that are stored in
// files and compared across runs (checkpoint identities, data order). Not for security.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace coconut {

inline constexpr uint64_t kFnv1a64Basis = 0xcbf29ce484222325ull;

// Continues hash h over bytes [data, data + n).
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnv1a64Basis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;  // FNV-1a 64 prime
  }
  return h;
}
inline uint64_t fnv1a64(std::string_view s, uint64_t h = kFnv1a64Basis) { return fnv1a64(s.data(), s.size(), h); }

// 16 lower-case hex digits, the form digests are stored in.
inline std::string hex_digest(uint64_t h) { return fmt::format("{:016x}", h); }

}  // namespace coconut
