// CRC-32C against published check values (the CRC catalogue's "123456789" and the
// iSCSI vectors of RFC 3720 B.4), continuation, the hardware path against the table,
// combining two checksums (the checkpoint's three-stream path) and TFRecord's mask.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/crc32c.h"

namespace coconut {
namespace {

TEST(Crc32c, CheckValues) {
  const std::string s = "123456789";
  EXPECT_EQ(crc32c(s.data(), s.size()), 0xE3069283u);
  EXPECT_EQ(crc32c_portable(s.data(), s.size()), 0xE3069283u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);

  std::vector<unsigned char> zeros(32, 0x00), ones(32, 0xFF), up(32), down(32);
  for (int i = 0; i < 32; ++i) up[i] = static_cast<unsigned char>(i), down[i] = static_cast<unsigned char>(31 - i);
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c(up.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(crc32c(down.data(), 32), 0x113FDB5Cu);
}

TEST(Crc32c, HardwareEqualsTableAtEveryLengthAndAlignment) {
  std::mt19937 gen(7);
  std::vector<unsigned char> data(100000 + 16);
  for (auto& b : data) b = static_cast<unsigned char>(gen());
  // Lengths on both sides of the three-stream threshold (3 KiB) and of its 8-byte rounding.
  for (size_t offset = 0; offset < 9; ++offset)
    for (size_t len : {0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 1000, 3071, 3072, 3073, 3095, 4096, 65537, 100000})
      ASSERT_EQ(crc32c(data.data() + offset, len), crc32c_portable(data.data() + offset, len))
          << "offset " << offset << " length " << len;
}

TEST(Crc32c, RunningChecksumEqualsOneShot) {
  std::string text = "The quick brown fox jumps over the lazy dog, twice over the lazy dog.";
  const uint32_t whole = crc32c(text.data(), text.size());
  for (size_t cut = 0; cut <= text.size(); ++cut)
    EXPECT_EQ(crc32c(text.data() + cut, text.size() - cut, crc32c(text.data(), cut)), whole) << cut;
  // And one changed bit changes it.
  text[10] ^= 1;
  EXPECT_NE(crc32c(text.data(), text.size()), whole);
}

TEST(Crc32c, CombineJoinsTwoChecksums) {
  std::mt19937 gen(3);
  std::vector<unsigned char> data(5000);
  for (auto& b : data) b = static_cast<unsigned char>(gen());
  for (size_t cut : {0, 1, 8, 1234, 4999, 5000})
    EXPECT_EQ(crc32c_combine(crc32c_portable(data.data(), cut), crc32c_portable(data.data() + cut, 5000 - cut),
                             5000 - cut),
              crc32c_portable(data.data(), 5000)) << cut;
}

TEST(Crc32c, TfRecordMask) {
  // The mask of TensorFlow's record format: rotate right by 15, add 0xa282ead8.
  EXPECT_EQ(crc32c_mask(0u), 0xa282ead8u);
  EXPECT_EQ(crc32c_mask(0x00008000u), 0xa282ead9u);          // bit 15 rotates to bit 0
  EXPECT_EQ(crc32c_mask(0x00000001u), 0xa282ead8u + 0x20000u);  // bit 0 rotates to bit 17
  for (uint32_t v : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu, 0x80000000u}) EXPECT_EQ(crc32c_unmask(crc32c_mask(v)), v);
}

}  // namespace
}  // namespace coconut
