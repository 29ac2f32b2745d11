// Stop signals: the handler records the signal and passes it on; see stop_signals.h.
#include "runtime/stop_signals.h"

#include <signal.h>

#include <csignal>

#include "runtime/check.h"

namespace coconut {

namespace {

// What a signal handler may touch: lock-free atomics of the signal's own process.
volatile std::sig_atomic_t g_received = 0;
volatile std::sig_atomic_t g_forward_pid = 0;
bool g_installed = false;
struct sigaction g_previous_term, g_previous_usr1;

extern "C" void on_stop_signal(int signal) {
  if (g_received == 0) g_received = signal;
  const pid_t child = g_forward_pid;
  if (child > 0) ::kill(child, signal);  // async-signal-safe
}

}  // namespace

StopSignals::StopSignals(Restore restore) : restore_(restore) {
  COCONUT_CHECK(!g_installed, "StopSignals: already installed");
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // interrupted system calls (MPI's, file writes) carry on
  g_received = 0;
  g_forward_pid = 0;
  COCONUT_CHECK(::sigaction(SIGTERM, &action, &g_previous_term) == 0 &&
                    ::sigaction(SIGUSR1, &action, &g_previous_usr1) == 0,
                "StopSignals: sigaction failed");
  g_installed = true;
}

StopSignals::~StopSignals() {
  if (restore_ == Restore::never) return;
  ::sigaction(SIGTERM, &g_previous_term, nullptr);
  ::sigaction(SIGUSR1, &g_previous_usr1, nullptr);
  g_forward_pid = 0;
  g_installed = false;
}

int StopSignals::received() { return g_received; }

void StopSignals::forward_to(pid_t pid) { g_forward_pid = pid; }

const char* stop_signal_name(int signal) {
  switch (signal) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    default: return "a signal";
  }
}

}  // namespace coconut
