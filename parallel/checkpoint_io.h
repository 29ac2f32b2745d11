// Low-level pieces of the checkpoint format (parallel/checkpoint.h): POSIX file
// writes and reads that check every call and name the file, durable renames, and the
// fault-injection points that the crash tests use. Kept apart from checkpoint.cpp so that
// each can be read on its own; nothing here knows about ranks or manifests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace coconut::parallel::ckpt_io {

// The on-disk format. A shard file starts with a 64-byte header: the 8 magic bytes
// "COCOSHD\0", the format version (u32 little-endian), the writer's rank (u32), then
// zeros; its slices follow back to back as float32, at the offsets the manifest gives.
// manifest.pb is a ManifestFile (checkpoint.proto) with kManifestMagic.
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr char kShardMagic[8] = {'C', 'O', 'C', 'O', 'S', 'H', 'D', '\0'};
inline constexpr size_t kShardHeaderBytes = 64;
inline constexpr uint32_t kManifestMagic = 0x4B43434D;

// "step-00000120" for step 120; the name of a committed checkpoint directory.
std::string step_dir_name(int64_t step);
// The step of a committed directory's name ("step-" and digits only), -1 for any other
// name (a temporary "step-00000120.tmp-...", `latest`, foreign files).
int64_t committed_step(const std::string& name);

// A file opened for writing with open(2); every call checks and throws coconut::Error
// naming the path and the system's reason (ENOSPC, EFBIG, EIO, ...). The destructor
// closes without syncing (an error path); call close() to finish properly.
class OutFile {
 public:
  explicit OutFile(std::string path);  // creates or truncates
  ~OutFile();
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;

  void write(const void* data, size_t bytes);  // loops over short writes
  void sync();                                 // fsync
  void close();                                // close, checking its result
  uint64_t bytes_written() const { return written_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t written_ = 0;
};

// Reads exactly `bytes` at `offset` of an open descriptor into out; throws naming path
// when the file is shorter or the read fails.
void read_exact(int fd, const std::string& path, uint64_t offset, void* out, size_t bytes);

// The whole file as bytes; throws naming the path.
std::string read_file(const std::string& path);

// fsync of a directory, so that entries created or renamed in it are durable.
void sync_dir(const std::string& dir);

// Writes text to dir/name through dir/name.tmp-<pid>: write, fsync, rename, fsync dir.
void write_file_atomic(const std::string& dir, const std::string& name, const std::string& text);

// Fault injection for the crash tests, off unless COCONUT_CKPT_FAULT is set:
//   COCONUT_CKPT_FAULT=<point>        every rank that reaches the point
//   COCONUT_CKPT_FAULT=<point>@<rank> only that rank
// Points: mid_shard_write (after half of the shard's bytes, any rank),
// before_manifest_rename and before_latest_update (rank 0, which commits). At the point
// the process raises SIGKILL on itself, as `kill -9` would.
bool fault_requested(const char* point, int rank);
void maybe_fault(const char* point, int rank);  // raise(SIGKILL) when requested

}  // namespace coconut::parallel::ckpt_io
