// Child processes (see process.h).
#include "runtime/process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/check.h"
#include "runtime/stop_signals.h"

extern char** environ;

namespace coconut {

std::string self_binary() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  COCONUT_CHECK(!ec, "cannot find the coconut binary (/proc/self/exe): {}", ec.message());
  return exe.string();
}

std::string shell_line(const std::vector<std::string>& cmd) {
  std::string line;
  for (const std::string& a : cmd) {
    const bool plain = a.find_first_of(" \t'\"\\$*?;&|<>()") == std::string::npos && !a.empty();
    line += (line.empty() ? "" : " ") + (plain ? a : "'" + a + "'");
  }
  return line;
}

namespace {

// posix_spawnp of cmd (argv[0] looked up in PATH) with these file actions, which it
// destroys; returns 0 or the error number.
int spawn(const std::vector<std::string>& cmd, posix_spawn_file_actions_t* actions, pid_t* pid) {
  std::vector<char*> argv;
  for (const std::string& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const int err = posix_spawnp(pid, argv[0], actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(actions);
  return err;
}

// Waits for the child; its exit code, or 128 + the signal that ended it.
int wait_exit_code(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) COCONUT_CHECK(errno == EINTR, "waitpid failed: {}", std::strerror(errno));
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
}

}  // namespace

int run_to_log(const std::vector<std::string>& cmd, const std::string& log_path, bool forward_stop_signals) {
  COCONUT_CHECK(!cmd.empty(), "run_to_log: empty command");
  posix_spawn_file_actions_t actions;
  COCONUT_CHECK(posix_spawn_file_actions_init(&actions) == 0, "posix_spawn_file_actions_init failed");
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  pid_t pid = 0;
  const int err = spawn(cmd, &actions, &pid);
  COCONUT_CHECK(err == 0, "cannot start '{}': {}", cmd[0], std::strerror(err));
  if (!forward_stop_signals) return wait_exit_code(pid);
  StopSignals::forward_to(pid);
  if (const int early = StopSignals::received(); early != 0) ::kill(pid, early);  // came before forward_to
  const int code = wait_exit_code(pid);
  StopSignals::forward_to(0);
  return code;
}

LineChild::LineChild(const std::vector<std::string>& cmd) {
  COCONUT_CHECK(!cmd.empty(), "LineChild: empty command");
  // Its stdin is a socket rather than a pipe: send(MSG_NOSIGNAL) to a child that has
  // gone fails with EPIPE instead of raising SIGPIPE in this process.
  int in[2], out[2];
  COCONUT_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) == 0 && ::pipe2(out, O_CLOEXEC) == 0,
                "cannot create the child's stdin and stdout: {}", std::strerror(errno));
  posix_spawn_file_actions_t actions;
  COCONUT_CHECK(posix_spawn_file_actions_init(&actions) == 0, "posix_spawn_file_actions_init failed");
  posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);   // dup2 clears O_CLOEXEC
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  pid_t pid = 0;
  const int err = spawn(cmd, &actions, &pid);
  ::close(in[0]);
  ::close(out[1]);
  if (err != 0) {
    ::close(in[1]);
    ::close(out[0]);
    COCONUT_FAIL("cannot start '{}': {}", cmd[0], std::strerror(err));
  }
  pid_ = pid;
  to_child_ = in[1];
  from_child_ = ::fdopen(out[0], "r");
  COCONUT_CHECK(from_child_ != nullptr, "fdopen failed: {}", std::strerror(errno));
}

LineChild::~LineChild() {
  try {
    finish();
  } catch (...) {  // a destructor does not throw; finish() already reaped what it could
  }
}

bool LineChild::send(const std::string& line) {
  if (to_child_ < 0) return false;
  const std::string text = line + "\n";
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::send(to_child_, text.data() + done, text.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;  // EPIPE: the child has gone
    done += static_cast<size_t>(n);
  }
  return true;
}

bool LineChild::receive(std::string* line) {
  line->clear();
  if (!from_child_) return false;
  int c;
  while ((c = std::fgetc(from_child_)) != EOF && c != '\n') line->push_back(static_cast<char>(c));
  return c != EOF || !line->empty();
}

int LineChild::finish() {
  if (pid_ < 0) return exit_code_;
  if (to_child_ >= 0) ::close(to_child_), to_child_ = -1;
  if (from_child_) std::fclose(from_child_), from_child_ = nullptr;
  exit_code_ = wait_exit_code(pid_);
  pid_ = -1;
  return exit_code_;
}

}  // namespace coconut
