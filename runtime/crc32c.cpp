// CRC-32C: the hardware instruction (SSE4.2, three interleaved streams) when compiled
// for it, else a byte-at-a-time table over the reflected polynomial 0x82F63B78.
#include "runtime/crc32c.h"

#include <array>
#include <cstring>

#if defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

namespace coconut {

namespace {

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kTable = make_table();

// On the un-inverted register value (the public functions invert at both ends).
uint32_t update_table(uint32_t c, const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) c = kTable[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
  return c;
}

}  // namespace

uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc) {
  return ~update_table(~crc, static_cast<const unsigned char*>(data), n);
}

namespace {

// a(x) * b(x) mod P(x) in the reflected bit order (bit 31 is x^0).
uint32_t multiply_mod_p(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if (a & m) product ^= b;
    b = (b & 1) ? (b >> 1) ^ 0x82F63B78u : b >> 1;  // b *= x
  }
  return product;
}

// x^(8 * bytes) mod P: what appending `bytes` zero bytes multiplies a CRC register by.
uint32_t shift_operator(uint64_t bytes) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t square = 1u << 23;  // x^8: one byte
  for (; bytes != 0; bytes >>= 1) {
    if (bytes & 1) result = multiply_mod_p(square, result);
    square = multiply_mod_p(square, square);
  }
  return result;
}

}  // namespace

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t bytes_b) {
  return multiply_mod_p(shift_operator(bytes_b), crc_a) ^ crc_b;
}

uint32_t crc32c(const void* data, size_t bytes, uint32_t crc) {
#if defined(__SSE4_2__) && defined(__x86_64__)
  // The crc32 instruction computes exactly this CRC (same polynomial, reflected), 8 bytes
  // per instruction, but each depends on the previous one's result (3 cycles). Three
  // independent streams over three thirds of the buffer keep the unit busy; their CRCs
  // are then joined with crc32c_combine. memcpy keeps unaligned loads well defined.
  const auto* p = static_cast<const unsigned char*>(data);
  auto word = [](const unsigned char* q) {
    uint64_t w;
    std::memcpy(&w, q, 8);
    return w;
  };
  constexpr size_t kMinSplit = 3 * 1024;
  if (bytes >= kMinSplit) {
    const size_t third = bytes / 3 / 8 * 8;
    const unsigned char *p0 = p, *p1 = p + third, *p2 = p + 2 * third;
    uint64_t c0 = ~crc, c1 = ~0u, c2 = ~0u;
    for (size_t i = 0; i < third; i += 8) {
      c0 = _mm_crc32_u64(c0, word(p0 + i));
      c1 = _mm_crc32_u64(c1, word(p1 + i));
      c2 = _mm_crc32_u64(c2, word(p2 + i));
    }
    crc = crc32c_combine(~static_cast<uint32_t>(c0), ~static_cast<uint32_t>(c1), third);
    crc = crc32c_combine(crc, ~static_cast<uint32_t>(c2), third);
    p += 3 * third;
    bytes -= 3 * third;
  }
  uint64_t c = ~crc;
  for (; bytes >= 8; bytes -= 8, p += 8) c = _mm_crc32_u64(c, word(p));
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; bytes > 0; --bytes, ++p) c32 = _mm_crc32_u8(c32, *p);
  return ~c32;
#else
  return crc32c_portable(data, bytes, crc);
#endif
}

}  // namespace coconut
