// Reader and writer of the safetensors format (the file format of Hugging Face weights):
//
//   [8 bytes: header length N, little-endian u64][N bytes: JSON header][raw tensor data]
//
// The JSON header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets in bytes from the start of the data section) and may hold a "__metadata__"
// object of string -> string. The reader validates the whole header when the file is
// opened, so a later read can only fail on I/O; the writer goes through a temporary file
// and an atomic rename so a crash never leaves a half-written file under the final name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace coconut {

// The dtypes we read. Floats are returned as float, integers as int64.
enum class DType { F32, F16, BF16, I32, I64 };

const char* dtype_name(DType dtype);  // "F32", "F16", ... as spelled in the header
size_t dtype_size(DType dtype);       // bytes per element

// Shape as text for error messages, e.g. "[64, 192]".
std::string shape_str(const std::vector<int64_t>& shape);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // empty for a scalar
  size_t begin = 0;            // byte offsets into the data section
  size_t end = 0;
  size_t numel() const;
};

class SafetensorsFile {
 public:
  // Reads and validates the header; throws coconut::Error naming the file (and the tensor)
  // on any inconsistency. The tensor data is read lazily by read_*.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // in file order (by data offset)
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Float tensors (F32, F16, BF16), converted to float.
  std::vector<float> read_f32(const std::string& name) const;
  // Same, into a caller buffer of exactly numel floats (no extra copy for large weights).
  void read_f32_into(const std::string& name, float* dst, size_t numel) const;
  // Integer tensors (I32, I64), widened to int64.
  std::vector<int64_t> read_i64(const std::string& name) const;

 private:
  std::vector<unsigned char> read_raw(const TensorInfo& info) const;

  std::string path_;
  size_t data_start_ = 0;  // file offset of the data section: 8 + header length
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write; the data is borrowed (numel elements of dtype, which must be F32
// or I64) and must stay alive during write_safetensors. Without data, fetch is called
// once, when the tensor's turn to be written comes (tensors in order), and returns its
// data, valid until the next fetch: a file can be written from parts that arrive one
// tensor at a time (a pipeline's stages).
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
  const void* data = nullptr;
  std::function<const void*()> fetch;

  static NamedTensor f32(std::string name, std::vector<int64_t> shape, const float* data) {
    return {std::move(name), std::move(shape), DType::F32, data, {}};
  }
  static NamedTensor i64(std::string name, std::vector<int64_t> shape, const int64_t* data) {
    return {std::move(name), std::move(shape), DType::I64, data, {}};
  }
};

// Writes the tensors in the given order to path + ".tmp", fsyncs it, then renames it to
// path. Names must be unique and not "__metadata__".
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace coconut
