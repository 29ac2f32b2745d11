// Child processes: the running binary's own path, running a command with its output
// going to a log file (`coconut sweep`: one process or mpirun job per run; `coconut bench
// all`: the mpirun sub-benchmarks), and a child spoken to line by line (the PyTorch peer).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace coconut {

// This process's own binary (/proc/self/exe), so that a child runs the same coconut.
std::string self_binary();

// The command as one line a shell would accept (arguments quoted where needed), for logs.
std::string shell_line(const std::vector<std::string>& cmd);

// Starts cmd (argv[0] looked up in PATH) with stdout and stderr appended to log_path and
// stdin from /dev/null, waits for it; returns its exit code (128 + signal when a signal
// ended it). Throws coconut::Error when it cannot be started. forward_stop_signals: while
// it runs, the stop signals this process receives (runtime/stop_signals.h, installed by
// the caller) go to the child too, and one received before it started is sent to it.
int run_to_log(const std::vector<std::string>& cmd, const std::string& log_path, bool forward_stop_signals = false);

// A child that talks in lines over its stdin and stdout (stderr passes through): a
// peer that takes requests one at a time (the PyTorch peer of `coconut bench coconut`).
class LineChild {
 public:
  // Starts cmd (argv[0] looked up in PATH); throws coconut::Error when it cannot.
  explicit LineChild(const std::vector<std::string>& cmd);
  ~LineChild();  // closes its stdin and waits for it
  LineChild(const LineChild&) = delete;
  LineChild& operator=(const LineChild&) = delete;

  // Sends one line (a newline is added); false when the child has gone.
  bool send(const std::string& line);
  // The next line of its output without the newline; false at end of output.
  bool receive(std::string* line);
  // Closes its stdin, waits, and returns its exit code (128 + signal); once.
  int finish();

 private:
  int pid_ = -1, to_child_ = -1;
  FILE* from_child_ = nullptr;
  int exit_code_ = -1;
};

}  // namespace coconut
