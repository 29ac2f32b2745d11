// CRC-32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78): the checksum of
// TFRecord framing (TensorBoard event files) and of checkpoint slices.
// Uses the SSE4.2 crc32 instruction when the build targets it, else a table.
#pragma once

#include <cstddef>
#include <cstdint>

namespace coconut {

// CRC-32C of data[0, n). Pass a previous result as `crc` to continue a checksum:
// crc32c(b, nb, crc32c(a, na)) == crc32c of a followed by b. crc32c("123456789") = 0xE3069283.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

// The same value computed with the portable table only (for tests of the fast path).
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc = 0);

// The CRC of A followed by B from crc(A), crc(B) and B's length (as zlib's crc32_combine).
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t bytes_b);

// TFRecord's masked CRC: rotate right by 15 bits and add a constant, so that a CRC
// stored inside checksummed data does not checksum to a fixed pattern.
inline uint32_t crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t crc32c_unmask(uint32_t masked) {
  const uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace coconut
