// safetensors reader (validating) and writer (atomic), see safetensors.h for the format.
#include "runtime/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "runtime/check.h"
#include "runtime/files.h"

// The data section is little-endian; we copy it straight into memory.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace coconut {

namespace {

// The reference implementation refuses headers above 100 MB; so do we, which also stops
// a corrupt length from making us allocate gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100u * 1000u * 1000u;

bool parse_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> table[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"I32", DType::I32}, {"I64", DType::I64}};
  for (const auto& [name, dtype] : table) {
    if (s == name) {
      *out = dtype;
      return true;
    }
  }
  return false;
}

// IEEE half -> float, exact for every half value (subnormals, infinities, NaN payloads).
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h >> 15) << 31;
  const uint32_t exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0) {
    // Zero or subnormal: value = mantissa * 2^-24, exactly representable as a float.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    bits = std::bit_cast<uint32_t>(magnitude) | sign;
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf or NaN
  } else {
    bits = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(bits);
}

// bfloat16 is the top half of a float32.
float bf16_to_float(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// A non-negative JSON integer, or an error naming the file, tensor and field.
uint64_t json_uint(const nlohmann::json& j, const std::string& path, const std::string& tensor, const char* field) {
  // nlohmann parses non-negative integers as "unsigned" and negative ones as "integer".
  COCONUT_CHECK(j.is_number_unsigned(),
                "{}: tensor '{}': every entry of '{}' must be a non-negative integer (got {})", path, tensor, field,
                j.dump());
  return j.get<uint64_t>();
}

TensorInfo parse_tensor_entry(const std::string& path, const std::string& name, const nlohmann::json& entry,
                              uint64_t data_bytes) {
  COCONUT_CHECK(entry.is_object(), "{}: header entry '{}' must be an object with dtype, shape and data_offsets",
                path, name);
  for (const char* key : {"dtype", "shape", "data_offsets"})
    COCONUT_CHECK(entry.contains(key), "{}: tensor '{}' has no '{}' in the header", path, name, key);

  TensorInfo info;
  info.name = name;
  const nlohmann::json& dtype = entry["dtype"];
  COCONUT_CHECK(dtype.is_string(), "{}: tensor '{}': 'dtype' must be a string (got {})", path, name, dtype.dump());
  COCONUT_CHECK(parse_dtype(dtype.get<std::string>(), &info.dtype),
                "{}: tensor '{}' has dtype {}, expected one of F32, F16, BF16, I32, I64", path, name,
                dtype.get<std::string>());

  const nlohmann::json& shape = entry["shape"];
  COCONUT_CHECK(shape.is_array(), "{}: tensor '{}': 'shape' must be an array (got {})", path, name, shape.dump());
  uint64_t numel = 1;
  for (const nlohmann::json& d : shape) {
    const uint64_t dim = json_uint(d, path, name, "shape");
    COCONUT_CHECK(dim <= static_cast<uint64_t>(INT64_MAX) && !__builtin_mul_overflow(numel, dim, &numel),
                  "{}: tensor '{}': shape {} is too large", path, name, shape.dump());
    info.shape.push_back(static_cast<int64_t>(dim));
  }

  const nlohmann::json& offsets = entry["data_offsets"];
  COCONUT_CHECK(offsets.is_array() && offsets.size() == 2,
                "{}: tensor '{}': 'data_offsets' must be [begin, end] (got {})", path, name, offsets.dump());
  const uint64_t begin = json_uint(offsets[0], path, name, "data_offsets");
  const uint64_t end = json_uint(offsets[1], path, name, "data_offsets");
  COCONUT_CHECK(begin <= end, "{}: tensor '{}': data_offsets [{}, {}] has begin > end", path, name, begin, end);
  COCONUT_CHECK(end <= data_bytes,
                "{}: tensor '{}': data_offsets [{}, {}] run past the end of the data section ({} bytes; file "
                "truncated?)",
                path, name, begin, end, data_bytes);
  uint64_t expected_bytes = 0;
  COCONUT_CHECK(!__builtin_mul_overflow(numel, dtype_size(info.dtype), &expected_bytes) &&
                    expected_bytes == end - begin,
                "{}: tensor '{}': shape {} of {} needs {} bytes but data_offsets [{}, {}] hold {}", path, name,
                shape_str(info.shape), dtype_name(info.dtype), numel * dtype_size(info.dtype), begin, end,
                end - begin);
  info.begin = static_cast<size_t>(begin);
  info.end = static_cast<size_t>(end);
  return info;
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}

std::string shape_str(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

size_t TensorInfo::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;

  std::error_code ec;
  const uint64_t file_bytes = std::filesystem::file_size(path, ec);
  COCONUT_CHECK(!ec, "cannot open safetensors file {}: {}", path, ec.message());
  COCONUT_CHECK(file_bytes >= 8, "{}: file is {} bytes, too short for the 8-byte header length of a safetensors file",
                path, file_bytes);

  std::ifstream in(path, std::ios::binary);
  COCONUT_CHECK(in.good(), "cannot open safetensors file {}: {}", path, std::strerror(errno));
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  COCONUT_CHECK(in.gcount() == 8, "{}: cannot read the header length", path);
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | len_bytes[i];
  COCONUT_CHECK(header_bytes <= kMaxHeaderBytes && header_bytes <= file_bytes - 8,
                "{}: header length {} does not fit in the file ({} bytes; not a safetensors file, or truncated)", path,
                header_bytes, file_bytes);

  std::string header(header_bytes, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_bytes));
  COCONUT_CHECK(static_cast<uint64_t>(in.gcount()) == header_bytes, "{}: cannot read the {}-byte header", path,
                header_bytes);
  nlohmann::json j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  COCONUT_CHECK(!j.is_discarded(), "{}: the header is not valid JSON", path);
  COCONUT_CHECK(j.is_object(), "{}: the header must be a JSON object mapping tensor names to entries", path);

  file.data_start_ = static_cast<size_t>(8 + header_bytes);
  const uint64_t data_bytes = file_bytes - 8 - header_bytes;
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      COCONUT_CHECK(value.is_object(), "{}: '__metadata__' must be an object of strings", path);
      for (const auto& [mk, mv] : value.items()) {
        COCONUT_CHECK(mv.is_string(), "{}: '__metadata__' entry '{}' must be a string (got {})", path, mk, mv.dump());
        file.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    file.tensors_[key] = parse_tensor_entry(path, key, value, data_bytes);
  }

  // Two tensors must never share bytes (empty tensors hold none and are skipped).
  std::vector<const TensorInfo*> by_offset;
  for (const auto& [name, info] : file.tensors_)
    if (info.end > info.begin) by_offset.push_back(&info);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    const TensorInfo& cur = *by_offset[i];
    COCONUT_CHECK(cur.begin >= prev.end, "{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap in the data section",
                  path, prev.name, prev.begin, prev.end, cur.name, cur.begin, cur.end);
  }
  return file;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<const TensorInfo*> infos;
  for (const auto& [name, info] : tensors_) infos.push_back(&info);
  std::stable_sort(infos.begin(), infos.end(),
                   [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  std::vector<std::string> out;
  for (const TensorInfo* info : infos) out.push_back(info->name);
  return out;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  COCONUT_CHECK(it != tensors_.end(), "{}: no tensor named '{}'", path_, name);
  return it->second;
}

std::vector<unsigned char> SafetensorsFile::read_raw(const TensorInfo& info) const {
  std::vector<unsigned char> raw(info.end - info.begin);
  if (raw.empty()) return raw;
  std::ifstream in(path_, std::ios::binary);
  COCONUT_CHECK(in.good(), "cannot open safetensors file {}: {}", path_, std::strerror(errno));
  in.seekg(static_cast<std::streamoff>(data_start_ + info.begin));
  in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
  COCONUT_CHECK(static_cast<size_t>(in.gcount()) == raw.size(), "{}: short read of tensor '{}' ({} of {} bytes)",
                path_, info.name, in.gcount(), raw.size());
  return raw;
}

void SafetensorsFile::read_f32_into(const std::string& name, float* dst, size_t numel) const {
  const TensorInfo& ti = info(name);
  COCONUT_CHECK(ti.numel() == numel, "{}: tensor '{}' has {} elements (shape {}), the caller expected {}", path_, name,
                ti.numel(), shape_str(ti.shape), numel);
  COCONUT_CHECK(ti.dtype == DType::F32 || ti.dtype == DType::F16 || ti.dtype == DType::BF16,
                "{}: tensor '{}' is {}, expected a float tensor (F32, F16 or BF16)", path_, name,
                dtype_name(ti.dtype));
  const std::vector<unsigned char> raw = read_raw(ti);
  if (ti.dtype == DType::F32) {
    if (numel) std::memcpy(dst, raw.data(), numel * sizeof(float));
    return;
  }
  for (size_t i = 0; i < numel; ++i) {
    uint16_t h;
    std::memcpy(&h, raw.data() + 2 * i, 2);
    dst[i] = ti.dtype == DType::F16 ? half_to_float(h) : bf16_to_float(h);
  }
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
  std::vector<float> out(info(name).numel());
  read_f32_into(name, out.data(), out.size());
  return out;
}

std::vector<int64_t> SafetensorsFile::read_i64(const std::string& name) const {
  const TensorInfo& ti = info(name);
  COCONUT_CHECK(ti.dtype == DType::I64 || ti.dtype == DType::I32,
                "{}: tensor '{}' is {}, expected an integer tensor (I32 or I64)", path_, name, dtype_name(ti.dtype));
  const std::vector<unsigned char> raw = read_raw(ti);
  std::vector<int64_t> out(ti.numel());
  for (size_t i = 0; i < out.size(); ++i) {
    if (ti.dtype == DType::I64) {
      std::memcpy(&out[i], raw.data() + 8 * i, 8);
    } else {
      int32_t v;
      std::memcpy(&v, raw.data() + 4 * i, 4);
      out[i] = v;
    }
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the tensors in the caller's order, which is also the data order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::vector<size_t> sizes;
  size_t offset = 0;
  for (const NamedTensor& t : tensors) {
    COCONUT_CHECK(t.name != "__metadata__" && !t.name.empty(), "{}: invalid tensor name '{}'", path, t.name);
    COCONUT_CHECK(!header.contains(t.name), "{}: tensor '{}' given twice", path, t.name);
    COCONUT_CHECK(t.dtype == DType::F32 || t.dtype == DType::I64, "{}: tensor '{}': cannot write dtype {} (F32 or I64)",
                  path, t.name, dtype_name(t.dtype));
    size_t numel = 1;
    for (int64_t d : t.shape) {
      COCONUT_CHECK(d >= 0, "{}: tensor '{}' has a negative dimension in shape {}", path, t.name, shape_str(t.shape));
      numel *= static_cast<size_t>(d);
    }
    const size_t bytes = numel * dtype_size(t.dtype);
    COCONUT_CHECK(bytes == 0 || t.data != nullptr || t.fetch, "{}: tensor '{}' has no data", path, t.name);
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  std::string header_text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, as the Python writer does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  COCONUT_CHECK(f != nullptr, "cannot create {}: {}", tmp, std::strerror(errno));
  auto discard = [&] {  // nothing of a failed write is left
    std::fclose(f);
    std::remove(tmp.c_str());
  };
  auto fail = [&](const std::string& what) {
    const std::string reason = std::strerror(errno);
    discard();
    COCONUT_FAIL("writing {} failed ({}): {}", tmp, what, reason);
  };
  unsigned char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(header_text.size() >> (8 * i));
  if (std::fwrite(len_bytes, 1, 8, f) != 8) fail("header length");
  if (std::fwrite(header_text.data(), 1, header_text.size(), f) != header_text.size()) fail("header");
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!sizes[i]) continue;
    const void* data = tensors[i].data;
    if (!data) {
      try {
        data = tensors[i].fetch();
      } catch (...) {
        discard();
        throw;
      }
      COCONUT_CHECK(data != nullptr, "{}: tensor '{}': its fetch gave no data", path, tensors[i].name);
    }
    if (std::fwrite(data, 1, sizes[i], f) != sizes[i]) fail("tensor " + tensors[i].name);
  }
  if (std::fflush(f) != 0) fail("flush");
  if (::fsync(fileno(f)) != 0) fail("fsync");
  COCONUT_CHECK(std::fclose(f) == 0, "closing {} failed: {}", tmp, std::strerror(errno));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(tmp.c_str());
    COCONUT_FAIL("cannot rename {} to {}: {}", tmp, path, reason);
  }
  // Make the rename itself durable.
  const std::string dir = std::filesystem::path(path).parent_path().string();
  sync_dir(dir.empty() ? "." : dir);
}

}  // namespace coconut
