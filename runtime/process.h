// Child processes: the running binary's own path, and running a command with its output
// going to a log file. Used by `coconut sweep` (one process or mpirun job per run) and
// `coconut bench all` (the mpirun sub-benchmarks).
#pragma once

#include <string>
#include <vector>

namespace coconut {

// This process's own binary (/proc/self/exe), so that a child runs the same coconut.
std::string self_binary();

// The command as one line a shell would accept (arguments quoted where needed), for logs.
std::string shell_line(const std::vector<std::string>& cmd);

// Starts cmd (argv[0] looked up in PATH) with stdout and stderr appended to log_path and
// stdin from /dev/null, waits for it; returns its exit code (128 + signal when a signal
// ended it). Throws coconut::Error when it cannot be started.
int run_to_log(const std::vector<std::string>& cmd, const std::string& log_path);

}  // namespace coconut
