// Stopping cleanly on SIGTERM or SIGUSR1: what a Slurm time limit or preemption
// (`#SBATCH --signal=USR1@120`, `scancel --signal=USR1`), mpirun (which forwards SIGUSR1
// to its ranks) or a plain `kill` sends before the job is killed for good. The handler
// only records the signal (and, for `coconut sweep`, passes it on to the running child);
// the trainer looks at it between optimizer steps and before each evaluation batch,
// saves a checkpoint and exits with kExitStoppedBySignal, so that a rerun with `--resume auto` continues where it stopped.
// SIGINT (Ctrl-C) keeps its default: it stops at once.
#pragma once

#include <sys/types.h>

namespace coconut {

// EX_TEMPFAIL of sysexits.h: "try again later". `coconut train` and `coconut sweep`
// exit with it after a stop signal, when everything needed to continue has been saved.
inline constexpr int kExitStoppedBySignal = 75;

// Installs the handlers of SIGTERM and SIGUSR1 for its lifetime; the previous handlers
// come back when it is destroyed, or never (Restore::never: `coconut train`, which a
// signal must not kill with the default action while it saves, finalizes MPI and exits).
// One StopSignals at a time (checked).
class StopSignals {
 public:
  enum class Restore { at_destruction, never };
  explicit StopSignals(Restore restore = Restore::at_destruction);
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first stop signal received since installation (SIGTERM or SIGUSR1), or 0.
  static int received();
  // Also send each stop signal to this process (a child that runs a step of the work,
  // e.g. the training run of `coconut sweep`); 0: to nobody.
  static void forward_to(pid_t pid);

 private:
  Restore restore_;
};

// "SIGTERM", "SIGUSR1", or "a signal".
const char* stop_signal_name(int signal);

}  // namespace coconut
