// Checked POSIX file I/O (see files.h).
#include "runtime/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "runtime/check.h"

namespace coconut {

OutFile::OutFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  COCONUT_CHECK(fd_ >= 0, "cannot create {}: {}", path_, std::strerror(errno));
}

OutFile::~OutFile() {
  if (fd_ >= 0) ::close(fd_);
}

void OutFile::write(const void* data, size_t bytes) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    // Linux writes at most ~2 GiB per call; a short write is retried for the rest.
    const ssize_t n = ::write(fd_, p, bytes < (size_t(1) << 30) ? bytes : (size_t(1) << 30));
    if (n < 0 && errno == EINTR) continue;
    COCONUT_CHECK(n > 0, "writing {} failed after {} bytes: {}", path_, written_,
                  n < 0 ? std::strerror(errno) : "no progress (disk full?)");
    p += n;
    bytes -= static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
  }
}

void OutFile::sync() {
  COCONUT_CHECK(::fsync(fd_) == 0, "fsync of {} failed: {}", path_, std::strerror(errno));
}

void OutFile::close() {
  const int fd = fd_;
  fd_ = -1;
  COCONUT_CHECK(::close(fd) == 0, "closing {} failed: {}", path_, std::strerror(errno));
}

void read_exact(int fd, const std::string& path, uint64_t offset, void* out, size_t bytes) {
  auto* p = static_cast<char*>(out);
  uint64_t done = 0;
  while (done < bytes) {
    const size_t want = bytes - done < (size_t(1) << 30) ? bytes - done : (size_t(1) << 30);
    const ssize_t n = ::pread(fd, p + done, want, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    COCONUT_CHECK(n >= 0, "reading {} at byte {} failed: {}", path, offset + done, std::strerror(errno));
    COCONUT_CHECK(n > 0, "{} is truncated: wanted bytes [{}, {}), the file ends at {}", path, offset,
                  offset + bytes, offset + done);
    done += static_cast<uint64_t>(n);
  }
}

std::string read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  COCONUT_CHECK(fd >= 0, "cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    COCONUT_FAIL("cannot stat {}: {}", path, std::strerror(err));
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  try {
    read_exact(fd, path, 0, text.data(), text.size());
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return text;
}

void sync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  COCONUT_CHECK(fd >= 0, "cannot open directory {} to sync it: {}", dir, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  COCONUT_CHECK(rc == 0, "cannot sync directory {}: {}", dir, std::strerror(err));
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  try {
    OutFile out(tmp);
    out.write(bytes.data(), bytes.size());
    out.sync();
    out.close();
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    COCONUT_FAIL("cannot rename {} to {}: {}", tmp, path, std::strerror(err));
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  sync_dir(dir.empty() ? "." : dir);
}

bool FileLock::try_lock(const std::string& path, std::string* holder) {
  COCONUT_CHECK(fd_ < 0, "FileLock: {} is already locked by this object", path);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  COCONUT_CHECK(fd >= 0, "cannot open the lock file {}: {}", path, std::strerror(errno));
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;  // the whole file (l_start = l_len = 0)
  if (::fcntl(fd, F_SETLK, &lock) != 0) {
    const int err = errno;
    if (err != EACCES && err != EAGAIN) {
      ::close(fd);
      COCONUT_FAIL("cannot lock {}: {}", path, std::strerror(err));
    }
    std::string text(256, '\0');
    const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
    ::close(fd);
    text.resize(n > 0 ? size_t(n) : 0);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
    if (holder) *holder = text.empty() ? "another process" : text;
    return false;
  }
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char when[32] = {};
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  const std::string me = "pid " + std::to_string(::getpid()) + " on host " + host + " since " + when + "\n";
  // Who holds it, for the next one to try; a failure here only loses that message.
  if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, me.data(), me.size(), 0);
  fd_ = fd;
  return true;
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

}  // namespace coconut
