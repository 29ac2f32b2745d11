// Checked POSIX file I/O: every call is checked and a failure throws coconut::Error
// naming the path and the system's reason (ENOSPC, EFBIG, EIO, ...); durable, atomic
// replacement of a file. Used by checkpoints, weight files and run outputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace coconut {

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

// Writes bytes to path through path.tmp-<pid>: write, fsync, rename, fsync of the
// directory. A failure removes the temporary file and leaves path as it was.
void write_file_atomic(const std::string& path, std::string_view bytes);

// An exclusive lock on a file (fcntl F_SETLK, which also works on NFS), held until the
// object goes away or the process ends, however it ends: a crashed holder leaves no
// stale lock. The holder writes who it is into the file ("pid P on host H since T"),
// which the next one to try reads for its message.
class FileLock {
 public:
  // Takes the lock on path (created if absent). When another process holds it, returns
  // false and sets *holder to what that process wrote; a system error throws.
  bool try_lock(const std::string& path, std::string* holder);
  FileLock() = default;
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace coconut
