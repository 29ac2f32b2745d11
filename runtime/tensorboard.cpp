// TensorBoard event file writer: Event protobufs (runtime/tensorboard_event.proto) in
// TFRecord framing with masked CRC-32C checksums.
#include "runtime/tensorboard.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "runtime/check.h"
#include "runtime/crc32c.h"
#include "tensorboard_event.pb.h"

namespace coconut {

namespace fs = std::filesystem;

namespace {

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

void put_le64(unsigned char* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(v >> (8 * i));
}

void put_le32(unsigned char* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<unsigned char>(v >> (8 * i));
}

}  // namespace

double TensorBoardWriter::now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  COCONUT_CHECK(!ec, "cannot create the TensorBoard directory '{}': {}", dir, ec.message());
  const double t = now();
  const std::string base =
      (fs::path(dir) / fmt::format("events.out.tfevents.{}.{}", static_cast<int64_t>(t), host_name())).string();
  // Two writers started in the same second on one host (a quick restart) must not
  // overwrite each other's file: TensorBoard reads every file whose name has "tfevents".
  path_ = base;
  for (int n = 1; fs::exists(path_); ++n) path_ = fmt::format("{}.{}", base, n);
  file_ = std::fopen(path_.c_str(), "wb");
  COCONUT_CHECK(file_ != nullptr, "cannot create the TensorBoard event file '{}': {}", path_, std::strerror(errno));

  tensorboard::Event event;
  event.set_wall_time(t);
  event.set_file_version("brain.Event:2");
  write_record(event.SerializeAsString());
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (!file_) return;
  if (std::fclose(file_) != 0) spdlog::warn("closing the TensorBoard event file '{}' failed: {}", path_, std::strerror(errno));
}

void TensorBoardWriter::scalar(const std::string& tag, int64_t step, double value, double wall_time) {
  tensorboard::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  tensorboard::SummaryValue* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  write_record(event.SerializeAsString());
}

void TensorBoardWriter::flush() {
  COCONUT_CHECK(std::fflush(file_) == 0, "cannot write the TensorBoard event file '{}': {}", path_, std::strerror(errno));
}

void TensorBoardWriter::write_record(const std::string& data) {
  unsigned char header[12], footer[4];
  put_le64(header, data.size());
  put_le32(header + 8, crc32c_mask(crc32c(header, 8)));
  put_le32(footer, crc32c_mask(crc32c(data.data(), data.size())));
  const bool ok = std::fwrite(header, 1, sizeof(header), file_) == sizeof(header) &&
                  std::fwrite(data.data(), 1, data.size(), file_) == data.size() &&
                  std::fwrite(footer, 1, sizeof(footer), file_) == sizeof(footer);
  COCONUT_CHECK(ok, "cannot write the TensorBoard event file '{}': {}", path_, std::strerror(errno));
}

}  // namespace coconut
