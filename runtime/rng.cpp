// Philox4x32-10 and the CounterRng stream built on it (see rng.h).
#include "runtime/rng.h"

#include <cmath>

#include "runtime/check.h"

namespace coconut {

namespace {

// Constants of Philox4x32 from the SC'11 paper: round multipliers and Weyl key bumps.
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kBump0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kBump1 = 0xBB67AE85u;  // sqrt(3) - 1

// Key used for hashing stream ids: the seed xor a constant, so that a hash evaluation
// never equals a draw evaluation under the same key.
constexpr uint32_t kHashKeyXor0 = 0x5851F42Du;
constexpr uint32_t kHashKeyXor1 = 0x4C957F2Du;

uint32_t lo32(uint64_t x) { return static_cast<uint32_t>(x); }
uint32_t hi32(uint64_t x) { return static_cast<uint32_t>(x >> 32); }
uint64_t join64(uint32_t lo, uint32_t hi) { return (static_cast<uint64_t>(hi) << 32) | lo; }

}  // namespace

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k[0] += kBump0;
      k[1] += kBump1;
    }
    uint64_t p0 = static_cast<uint64_t>(kMul0) * c[0];
    uint64_t p1 = static_cast<uint64_t>(kMul1) * c[2];
    c = {hi32(p1) ^ c[1] ^ k[0], lo32(p1), hi32(p0) ^ c[3] ^ k[1], lo32(p0)};
  }
  return c;
}

CounterRng::CounterRng(uint64_t seed, std::initializer_list<uint64_t> stream)
    : key_{lo32(seed), hi32(seed)} {
  // Chain the ids through Philox: h <- Philox((id, h), hash key). Order and count matter:
  // {1, 2}, {2, 1}, {1} and {1, 0} are all different streams.
  std::array<uint32_t, 2> hash_key = {key_[0] ^ kHashKeyXor0, key_[1] ^ kHashKeyXor1};
  uint64_t h = stream.size();
  for (uint64_t id : stream) {
    std::array<uint32_t, 4> out = philox4x32_10({lo32(id), hi32(id), lo32(h), hi32(h)}, hash_key);
    h = join64(out[0], out[1]);
  }
  stream_hash_ = h;
}

std::array<uint32_t, 4> CounterRng::block(uint64_t block_index) const {
  return philox4x32_10({lo32(block_index), hi32(block_index), lo32(stream_hash_), hi32(stream_hash_)},
                       key_);
}

uint32_t CounterRng::next_u32() {
  uint64_t b = position_ / 4;
  if (b != cached_block_) {
    cache_ = block(b);
    cached_block_ = b;
  }
  return cache_[position_++ % 4];
}

uint64_t CounterRng::next_u64() {
  uint32_t lo = next_u32();
  return join64(lo, next_u32());
}

float CounterRng::uniform() { return static_cast<float>(next_u32() >> 8) * 0x1.0p-24f; }

float CounterRng::normal() {
  // u1 in (0, 1] keeps log finite; |z| <= sqrt(-2 ln 2^-24) ~ 5.77.
  float u1 = static_cast<float>((next_u32() >> 8) + 1) * 0x1.0p-24f;
  float u2 = static_cast<float>(next_u32() >> 8) * 0x1.0p-24f;
  constexpr float kTwoPi = 6.28318530717958647692f;
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(kTwoPi * u2);
}

uint64_t CounterRng::below(uint64_t n) {
  COCONUT_CHECK(n >= 1, "CounterRng::below: range must be at least 1, got {}", n);
  // Multiply a uniform 64-bit x by n: the high word is uniform in [0, n) once the
  // low words below 2^64 mod n (the incomplete last lap) are rejected.
  uint64_t x = next_u64();
  unsigned __int128 m = static_cast<unsigned __int128>(x) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    uint64_t threshold = (0 - n) % n;  // 2^64 mod n
    while (low < threshold) {
      x = next_u64();
      m = static_cast<unsigned __int128>(x) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

}  // namespace coconut
