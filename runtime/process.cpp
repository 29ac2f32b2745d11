// Child processes (see process.h).
#include "runtime/process.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/check.h"

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

int run_to_log(const std::vector<std::string>& cmd, const std::string& log_path) {
  COCONUT_CHECK(!cmd.empty(), "run_to_log: empty command");
  posix_spawn_file_actions_t actions;
  COCONUT_CHECK(posix_spawn_file_actions_init(&actions) == 0, "posix_spawn_file_actions_init failed");
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<char*> argv;
  for (const std::string& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int err = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  COCONUT_CHECK(err == 0, "cannot start '{}': {}", cmd[0], std::strerror(err));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) COCONUT_CHECK(errno == EINTR, "waitpid failed: {}", std::strerror(errno));
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
}

}  // namespace coconut
