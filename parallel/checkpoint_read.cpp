// The reading side of checkpoints (parallel/checkpoint.h): finding the newest committed
// checkpoint, reading and validating its manifest, reading any range of a tensor from
// whichever shard files hold it (resharding), and verifying every slice's checksum.
// Nothing here writes; a reader trusts only committed directories (those that hold a
// manifest.pb, which is written before the directory is renamed into place).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include "checkpoint.pb.h"
#include "parallel/checkpoint.h"
#include "parallel/checkpoint_io.h"
#include "runtime/check.h"
#include "runtime/crc32c.h"
#include "runtime/files.h"

namespace coconut::parallel {

namespace fs = std::filesystem;
using namespace ckpt_io;

namespace {

// Open shard files of one read, closed together; each opened once however many slices
// it holds.
class ShardFiles {
 public:
  explicit ShardFiles(std::string dir) : dir_(std::move(dir)) {}
  ~ShardFiles() {
    for (auto& [name, fd] : fds_) ::close(fd);
  }
  ShardFiles(const ShardFiles&) = delete;
  ShardFiles& operator=(const ShardFiles&) = delete;

  int open(const std::string& name) {
    auto it = fds_.find(name);
    if (it != fds_.end()) return it->second;
    const std::string path = this->path(name);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    COCONUT_CHECK(fd >= 0, "cannot open shard file {}: {}", path, std::strerror(errno));
    fds_[name] = fd;
    return fd;
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
  std::map<std::string, int> fds_;
};

// Reads one slice in chunks, checking its CRC, and copies its elements
// [copy_begin, copy_begin + copy_count) (slice-relative) to out (out == nullptr: only
// check).
void read_slice_checked(ShardFiles& files, const std::string& tensor, const SliceInfo& s, uint64_t copy_begin,
                        uint64_t copy_count, float* out) {
  const int fd = files.open(s.file);
  const std::string path = files.path(s.file);
  constexpr uint64_t kChunk = uint64_t(4) << 20;  // elements: 16 MiB per read
  const bool whole = out != nullptr && copy_begin == 0 && copy_count == s.count;
  std::vector<float> buffer(whole ? 0 : std::min<uint64_t>(kChunk, s.count));
  uint32_t crc = 0;
  for (uint64_t e0 = 0; e0 < s.count; e0 += kChunk) {
    const uint64_t n = std::min<uint64_t>(kChunk, s.count - e0);
    // A slice that lies wholly inside the requested range is read straight into out.
    float* dst = whole ? out + e0 : buffer.data();
    read_exact(fd, path, s.file_offset + e0 * sizeof(float), dst, n * sizeof(float));
    crc = crc32c(dst, n * sizeof(float), crc);
    if (!whole && out != nullptr) {
      const uint64_t lo = std::max(e0, copy_begin), hi = std::min(e0 + n, copy_begin + copy_count);
      if (lo < hi) std::memcpy(out + (lo - copy_begin), dst + (lo - e0), (hi - lo) * sizeof(float));
    }
  }
  COCONUT_CHECK(crc == s.checksum,
                "{}: checksum mismatch in tensor '{}' elements [{}, {}) at byte {} (manifest 0x{:08x}, file "
                "0x{:08x}): the shard file is damaged",
                path, tensor, s.begin, s.begin + s.count, s.file_offset, s.checksum, crc);
}

// Checks the shard header of dir/name: magic, version and the writer's rank.
void check_shard_header(const std::string& path, int rank) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  COCONUT_CHECK(fd >= 0, "{}: shard file missing or unreadable: {}", path, std::strerror(errno));
  unsigned char header[16];
  try {
    read_exact(fd, path, 0, header, sizeof header);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  uint32_t version = 0, writer = 0;
  std::memcpy(&version, header + 8, 4);
  std::memcpy(&writer, header + 12, 4);
  COCONUT_CHECK(std::memcmp(header, kShardMagic, sizeof kShardMagic) == 0, "{}: not a coconut shard file (bad magic)",
                path);
  COCONUT_CHECK(version == kFormatVersion, "{}: shard format version {}, this build reads version {}", path, version,
                kFormatVersion);
  COCONUT_CHECK(static_cast<int>(writer) == rank, "{}: written by rank {}, the manifest expects rank {}", path,
                writer, rank);
}

}  // namespace

const TensorInfo& Manifest::tensor(const std::string& name) const {
  for (const TensorInfo& t : tensors)
    if (t.name == name) return t;
  std::string have;
  for (const TensorInfo& t : tensors) have += fmt::format("{}{}", have.empty() ? "" : ", ", t.name);
  COCONUT_FAIL("checkpoint has no tensor '{}' (it has: {})", name, have);
}

bool Manifest::has_tensor(const std::string& name) const {
  for (const TensorInfo& t : tensors)
    if (t.name == name) return true;
  return false;
}

std::string find_latest_checkpoint(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return "";
  auto committed = [&](const std::string& name) {
    std::error_code missing;  // a missing manifest is an answer (not committed), not an error
    return committed_step(name) >= 0 && fs::is_regular_file(root + "/" + name + "/manifest.pb", missing);
  };
  // `latest` names the directory; trust it only if that directory is committed.
  const std::string pointer = root + "/latest";
  if (fs::is_regular_file(pointer, ec)) {
    std::string name = read_file(pointer);
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    if (committed(name)) return root + "/" + name;
  }
  int64_t best = -1;
  std::string best_name;
  ec.clear();
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    const int64_t step = committed_step(name);
    if (step > best && committed(name)) best = step, best_name = name;
  }
  COCONUT_CHECK(!ec, "cannot list checkpoint directory {}: {}", root, ec.message());
  return best < 0 ? "" : root + "/" + best_name;
}

std::string committed_checkpoint(const std::string& path, const std::string& what) {
  std::error_code ec;
  COCONUT_CHECK(fs::is_directory(path, ec), "{}: '{}' is not a directory (a checkpoint directory or a checkpoint root "
                "was expected)", what, path);
  fs::path p = fs::path(path).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // "dir/" names dir
  const bool temporary = p.filename().string().find(".tmp-") != std::string::npos ||
                         p.parent_path().filename().string().find(".tmp-") != std::string::npos;
  COCONUT_CHECK(!temporary, "{}: '{}' is an uncommitted (temporary) checkpoint directory", what, path);
  if (fs::is_regular_file(fs::path(path) / "manifest.pb", ec)) return path;
  const std::string latest = find_latest_checkpoint(path);
  COCONUT_CHECK(!latest.empty(), "{}: '{}' is neither a committed checkpoint (no manifest.pb) nor a checkpoint root "
                "holding one", what, path);
  return latest;
}

Manifest read_manifest(const std::string& dir) {
  const std::string path = dir + "/manifest.pb";
  std::error_code ec;
  COCONUT_CHECK(fs::is_regular_file(path, ec), "{}: no manifest: {} is not a committed checkpoint", path, dir);
  const std::string bytes = read_file(path);
  ckpt::ManifestFile envelope;
  COCONUT_CHECK(envelope.ParseFromString(bytes), "{}: not a checkpoint manifest (Protobuf parse failed)", path);
  COCONUT_CHECK(envelope.magic() == kManifestMagic, "{}: not a checkpoint manifest (bad magic 0x{:08x})", path,
                envelope.magic());
  COCONUT_CHECK(envelope.format_version() == kFormatVersion, "{}: format version {}, this build reads version {}",
                path, envelope.format_version(), kFormatVersion);
  const uint32_t crc = crc32c(envelope.manifest().data(), envelope.manifest().size());
  COCONUT_CHECK(crc == envelope.manifest_crc32c(), "{}: checksum mismatch (stored 0x{:08x}, computed 0x{:08x}): the "
                "manifest is damaged", path, envelope.manifest_crc32c(), crc);
  ckpt::Manifest pm;
  COCONUT_CHECK(pm.ParseFromString(envelope.manifest()), "{}: the manifest does not parse", path);

  Manifest m;
  m.format_version = pm.format_version();
  m.meta.step = pm.step();
  m.meta.epoch = pm.epoch();
  m.meta.stage = pm.stage();
  m.meta.batch_in_epoch = pm.batch_in_epoch();
  m.meta.config_digest = pm.config_digest();
  m.meta.model_digest = pm.model_digest();
  m.meta.pp = pm.topology().pp();
  m.meta.dp = pm.topology().dp();
  m.meta.trainer_state = pm.trainer_state();
  m.meta.milestone = pm.milestone();
  m.world_size = pm.topology().world_size();
  COCONUT_CHECK(m.world_size > 0 && pm.files_size() == m.world_size,
                "{}: {} shard files listed for a world of {} ranks", path, pm.files_size(), m.world_size);
  std::map<std::string, uint64_t> file_bytes;
  for (int r = 0; r < pm.files_size(); ++r) {
    const ckpt::ShardFile& f = pm.files(r);
    m.files.push_back(f.name());
    m.file_bytes.push_back(f.bytes());
    file_bytes[f.name()] = f.bytes();
    // Every shard must be there with exactly the size it had when it was committed.
    const std::string shard = dir + "/" + f.name();
    struct stat st {};
    COCONUT_CHECK(::stat(shard.c_str(), &st) == 0, "{}: shard file missing ({}; listed in {})", shard,
                  std::strerror(errno), path);
    COCONUT_CHECK(static_cast<uint64_t>(st.st_size) == f.bytes(),
                  "{}: shard file is {} bytes, the manifest records {} (truncated or damaged)", shard, st.st_size,
                  f.bytes());
    check_shard_header(shard, r);
  }
  for (const ckpt::Tensor& pt : pm.tensors()) {
    TensorInfo t;
    t.name = pt.name();
    t.global_size = pt.global_size();
    uint64_t next = 0;
    for (const ckpt::Slice& ps : pt.slices()) {
      SliceInfo s{ps.file(), ps.begin(), ps.count(), ps.file_offset(), ps.crc32c()};
      auto f = file_bytes.find(s.file);
      COCONUT_CHECK(f != file_bytes.end(), "{}: tensor '{}' names unknown shard file '{}'", path, t.name, s.file);
      COCONUT_CHECK(s.begin == next && s.count > 0 && s.file_offset >= kShardHeaderBytes &&
                        s.file_offset + s.count * sizeof(float) <= f->second,
                    "{}: tensor '{}': bad slice [{}, +{}) at byte {} of {} (expected to start at element {})", path,
                    t.name, s.begin, s.count, s.file_offset, s.file, next);
      next = s.begin + s.count;
      t.slices.push_back(std::move(s));
    }
    COCONUT_CHECK(next == t.global_size, "{}: tensor '{}' slices cover {} of {} elements", path, t.name, next,
                  t.global_size);
    m.tensors.push_back(std::move(t));
  }
  return m;
}

void check_model_digest(const std::string& dir, const Manifest& manifest, const std::string& expected_model_digest) {
  COCONUT_CHECK(manifest.meta.model_digest == expected_model_digest,
                "{}/manifest.pb: checkpoint of another model configuration (model digest '{}', this run's is "
                "'{}'): model shape or tokenizer differ",
                dir, manifest.meta.model_digest, expected_model_digest);
}

void read_tensor_range(const std::string& dir, const Manifest& manifest, const std::string& tensor, uint64_t begin,
                       uint64_t count, float* out) {
  const TensorInfo& t = manifest.tensor(tensor);
  COCONUT_CHECK(begin <= t.global_size && count <= t.global_size - begin,
                "{}: range [{}, {}) of tensor '{}' is outside its {} elements", dir, begin, begin + count, tensor,
                t.global_size);
  if (count == 0) return;
  const uint64_t end = begin + count;
  // The first slice that ends after `begin` (slices are sorted and contiguous).
  auto it = std::upper_bound(t.slices.begin(), t.slices.end(), begin,
                             [](uint64_t b, const SliceInfo& s) { return b < s.begin + s.count; });
  ShardFiles files(dir);
  for (; it != t.slices.end() && it->begin < end; ++it) {
    const uint64_t lo = std::max(begin, it->begin), hi = std::min(end, it->begin + it->count);
    read_slice_checked(files, tensor, *it, lo - it->begin, hi - lo, out + (lo - begin));
  }
}

std::vector<std::string> verify_checkpoint(const std::string& dir, const Manifest& manifest) {
  std::vector<std::string> problems;
  ShardFiles files(dir);
  for (const TensorInfo& t : manifest.tensors) {
    for (const SliceInfo& s : t.slices) {
      // Only the checksum matters here: nothing is copied out.
      try {
        read_slice_checked(files, t.name, s, 0, 0, nullptr);
      } catch (const std::exception& e) {
        problems.push_back(e.what());
      }
    }
  }
  return problems;
}

}  // namespace coconut::parallel
