// Tests of the safetensors reader and writer: round trip, the conversions of a file
// written by the Python safetensors package (tests/fixtures/gpt2_tiny/dtypes.safetensors,
// values from torch), and one test per kind of malformed file.
#include "runtime/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "runtime/check.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using coconut::DType;
using coconut::NamedTensor;
using coconut::SafetensorsFile;

using coconut::test::expect_error;

namespace {

const std::string kDtypesFixture = std::string(COCONUT_SOURCE_DIR) + "/tests/fixtures/gpt2_tiny/dtypes.safetensors";

class SafetensorsTest : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return scratch_.path(name); }

  // A file with the given header text and data bytes; header_len overrides the length prefix.
  std::string write_raw(const std::string& header, size_t data_bytes, int64_t header_len = -1) {
    const std::string p = path("raw.safetensors");
    std::ofstream out(p, std::ios::binary);
    const uint64_t n = header_len < 0 ? header.size() : static_cast<uint64_t>(header_len);
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
    out << header << std::string(data_bytes, '\x01');
    return p;
  }

  coconut::test::ScratchDir scratch_{"coconut_safetensors"};
};

TEST_F(SafetensorsTest, RoundTripKeepsBitsShapesOrderAndMetadata) {
  std::vector<float> a(6);
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::ldexp(1.0f + i, -3 * static_cast<int>(i));
  a[5] = -std::numeric_limits<float>::infinity();
  std::vector<int64_t> ids = {0, -100, INT64_MAX, INT64_MIN, 42};
  const float scalar = 3.5f;
  const std::string p = path("rt.safetensors");
  coconut::write_safetensors(p,
                             {NamedTensor::f32("zeta", {2, 3}, a.data()), NamedTensor::i64("ids", {5}, ids.data()),
                              NamedTensor::f32("scalar", {}, &scalar), NamedTensor::f32("empty", {0, 4}, nullptr)},
                             {{"k", "v"}, {"format", "pt"}});
  EXPECT_FALSE(fs::exists(p + ".tmp"));

  // The data section starts 8-byte aligned.
  std::ifstream in(p, std::ios::binary);
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);

  const SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"zeta", "ids", "scalar", "empty"}));
  EXPECT_EQ(f.info("zeta").dtype, DType::F32);
  EXPECT_EQ(f.info("zeta").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.info("ids").dtype, DType::I64);
  EXPECT_TRUE(f.info("scalar").shape.empty());
  EXPECT_EQ(f.info("empty").numel(), 0u);
  const std::vector<float> a2 = f.read_f32("zeta");
  ASSERT_EQ(a2.size(), a.size());
  EXPECT_EQ(std::memcmp(a2.data(), a.data(), a.size() * sizeof(float)), 0);
  EXPECT_EQ(f.read_i64("ids"), ids);
  EXPECT_EQ(f.read_f32("scalar"), std::vector<float>{3.5f});
  EXPECT_TRUE(f.read_f32("empty").empty());
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"k", "v"}, {"format", "pt"}}));

  // Overwriting replaces the file atomically.
  coconut::write_safetensors(p, {NamedTensor::f32("only", {1}, &scalar)});
  EXPECT_EQ(SafetensorsFile::open(p).names(), std::vector<std::string>{"only"});
  EXPECT_TRUE(SafetensorsFile::open(p).metadata().empty());
}

TEST_F(SafetensorsTest, ReadsHalfAndBfloatAsTorchConvertsThem) {
  const SafetensorsFile f = SafetensorsFile::open(kDtypesFixture);
  EXPECT_EQ(f.info("f16").dtype, DType::F16);
  EXPECT_EQ(f.info("bf16").dtype, DType::BF16);
  for (const char* base : {"f16", "bf16"}) {
    const std::vector<float> got = f.read_f32(base);
    const std::vector<float> want = f.read_f32(std::string(base) + "_as_f32");
    ASSERT_EQ(got.size(), want.size()) << base;
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::isnan(want[i])) {
        EXPECT_TRUE(std::isnan(got[i])) << base << "[" << i << "]";
      } else {  // bitwise, so -0 and subnormals count
        EXPECT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
            << base << "[" << i << "]: " << got[i] << " vs torch " << want[i];
      }
    }
  }
  EXPECT_EQ(f.read_i64("i32"), (std::vector<int64_t>{0, -1, 2147483647, -2147483648LL, 42, 7}));
  EXPECT_EQ(f.read_i64("i64"), (std::vector<int64_t>{0, -1, INT64_MAX, INT64_MIN, int64_t{1} << 40}));
  EXPECT_EQ(f.read_f32("scalar_f32"), std::vector<float>{2.75f});
  EXPECT_EQ(f.info("empty_f32").shape, (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(f.read_f32("empty_f32").empty());
  EXPECT_EQ(f.metadata().at("made_by"), "tools/make_gpt2_fixture.py");
}

TEST_F(SafetensorsTest, WrongKindOfReadAndMissingTensorAreErrors) {
  const SafetensorsFile f = SafetensorsFile::open(kDtypesFixture);
  expect_error([&] { f.read_f32("i64"); }, {kDtypesFixture, "'i64'", "I64", "expected a float"});
  expect_error([&] { f.read_i64("f16"); }, {kDtypesFixture, "'f16'", "F16", "expected an integer"});
  expect_error([&] { f.info("nope"); }, {kDtypesFixture, "'nope'"});
  std::vector<float> buf(3);
  expect_error([&] { f.read_f32_into("f16", buf.data(), buf.size()); }, {"'f16'", "16 elements", "expected 3"});
}

TEST_F(SafetensorsTest, MissingOrTinyFile) {
  expect_error([&] { SafetensorsFile::open(path("absent.safetensors")); }, {"absent.safetensors"});
  const std::string p = path("tiny");
  std::ofstream(p) << "abc";
  expect_error([&] { SafetensorsFile::open(p); }, {p, "too short"});
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFile) {
  const std::string p = write_raw("{}", 0, 1000);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "header length 1000"});
}

TEST_F(SafetensorsTest, HeaderNotJsonOrNotObject) {
  std::string p = write_raw("{\"a\": ", 0);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "not valid JSON"});
  p = write_raw("[1, 2]", 0);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "JSON object"});
}

TEST_F(SafetensorsTest, UnknownDtype) {
  const std::string p = write_raw(R"({"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", 8);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "'w'", "F64", "expected one of"});
}

TEST_F(SafetensorsTest, MissingField) {
  const std::string p = write_raw(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 4);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "'w'", "'shape'"});
}

TEST_F(SafetensorsTest, NegativeOrFractionalDimension) {
  std::string p = write_raw(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "'w'", "non-negative integer", "-1"});
  p = write_raw(R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", 4);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "'w'", "non-negative integer"});
}

TEST_F(SafetensorsTest, OffsetsPastEndOfData) {
  // A truncated file: the header promises 16 bytes, 12 are there.
  const std::string p = write_raw(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 12);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "'w'", "past the end", "12 bytes"});
}

TEST_F(SafetensorsTest, ShapeDoesNotMatchByteCount) {
  const std::string p = write_raw(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", 20);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "'w'", "[2, 3]", "24 bytes", "hold 20"});
}

TEST_F(SafetensorsTest, BeginAfterEnd) {
  const std::string p = write_raw(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", 8);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "'w'", "begin > end"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  const std::string p = write_raw(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                      "b": {"dtype": "I32", "shape": [2], "data_offsets": [4, 12]}})",
                                  12);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "'a'", "'b'", "overlap"});
}

TEST_F(SafetensorsTest, MetadataMustBeStrings) {
  const std::string p = write_raw(R"({"__metadata__": {"step": 3}})", 0);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "'step'", "string"});
}

TEST_F(SafetensorsTest, WriterRejectsBadInput) {
  const float x = 1.0f;
  const std::string p = path("bad.safetensors");
  expect_error([&] { coconut::write_safetensors(p, {NamedTensor::f32("a", {1}, &x), NamedTensor::f32("a", {1}, &x)}); },
               {"'a'", "twice"});
  expect_error([&] { coconut::write_safetensors(p, {NamedTensor::f32("__metadata__", {1}, &x)}); }, {"__metadata__"});
  expect_error([&] { coconut::write_safetensors(p, {NamedTensor{"h", {1}, DType::F16, &x, {}}}); }, {"'h'", "F16"});
  expect_error([&] { coconut::write_safetensors(path("no/such/dir/x.safetensors"), {}); }, {"no/such/dir"});
  EXPECT_FALSE(fs::exists(p));
  EXPECT_FALSE(fs::exists(p + ".tmp"));
}

TEST_F(SafetensorsTest, FetchedTensorsAreAskedForInOrderAndWriteTheSameFile) {
  // Tensors given by fetch (a pipeline's stages sending theirs one at a time) write the
  // same bytes as tensors given by pointer; each fetch is called once, in file order,
  // and may reuse the buffer of the previous one.
  const std::vector<float> a = {1.5f, -2.f, 3.25f}, b = {7.f, 8.f};
  const std::string direct = path("direct.safetensors"), fetched = path("fetched.safetensors");
  coconut::write_safetensors(direct, {NamedTensor::f32("a", {3}, a.data()), NamedTensor::f32("b", {1, 2}, b.data())},
                             {{"format", "pt"}});
  std::vector<std::string> calls;
  std::vector<float> buffer;
  auto from = [&](const char* name, const std::vector<float>& src) {
    NamedTensor t = NamedTensor::f32(name, src.size() == 3 ? std::vector<int64_t>{3} : std::vector<int64_t>{1, 2},
                                     nullptr);
    t.fetch = [&calls, &buffer, &src, name]() -> const void* {
      calls.push_back(name);
      buffer = src;
      return buffer.data();
    };
    return t;
  };
  coconut::write_safetensors(fetched, {from("a", a), from("b", b)}, {{"format", "pt"}});
  EXPECT_EQ(calls, (std::vector<std::string>{"a", "b"}));
  auto bytes = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(fetched), bytes(direct));
  EXPECT_FALSE(bytes(direct).empty());
}

TEST_F(SafetensorsTest, AFailingFetchLeavesNoFile) {
  const float x = 1.f;
  const std::string p = path("failing.safetensors");
  NamedTensor broken = NamedTensor::f32("b", {1}, nullptr);
  broken.fetch = []() -> const void* { COCONUT_FAIL("stage 1 is gone"); };
  expect_error([&] { coconut::write_safetensors(p, {NamedTensor::f32("a", {1}, &x), broken}); }, {"stage 1 is gone"});
  EXPECT_FALSE(fs::exists(p));
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  NamedTensor empty = NamedTensor::f32("e", {1}, nullptr);  // neither data nor fetch
  expect_error([&] { coconut::write_safetensors(p, {empty}); }, {"'e'", "no data"});
}

}  // namespace
